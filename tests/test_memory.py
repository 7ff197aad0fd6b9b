"""In-process transport behaviour beyond the conformance suite: the wire, threads, limits."""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
from typing import Any

import pytest
import trio

import tether
from tether import contexts
from tether.runtime import PROTOCOL_VERSION, open_rpc_connection, serve_rpc_session
from tether.testing import ConformanceInterface, Probe
from tether.testing._rpc_suite import ConformanceImpl
from tether.transports import memory


def conformance_manager(probe: Probe | None = None) -> tether.RpcManager:
    manager = tether.RpcManager()
    manager.register_impl(ConformanceInterface, ConformanceImpl(probe or Probe(), manager, None))
    return manager


async def raw_session(nursery: trio.Nursery) -> tether.runtime.MessageStream:
    """Serve the conformance backend on a stream pair; return the client end."""
    client, server = memory.stream_pair()
    nursery.start_soon(serve_rpc_session, conformance_manager(), server)
    return client


async def send_json(stream: tether.runtime.MessageStream, obj: object) -> None:
    await stream.send_message(json.dumps(obj).encode())


async def receive_json(stream: tether.runtime.MessageStream) -> dict[str, object]:
    reply = json.loads(await stream.receive_message())
    assert isinstance(reply, dict)
    return reply


HELLO = {"t": "hello", "protocol": PROTOCOL_VERSION, "session_id": "s-1", "channels": {}}


async def test_handshake_describes_the_served_interfaces() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            stream = await raw_session(nursery)
            await send_json(stream, HELLO)
            welcome = await receive_json(stream)
            await stream.aclose()
    assert welcome["t"] == "welcome"
    assert welcome["protocol"] == PROTOCOL_VERSION
    assert welcome["session_id"] == "s-1"
    interfaces = welcome["interfaces"]
    assert isinstance(interfaces, dict)
    assert interfaces["tether.Conformance"]["version"] == "1.2.3"
    assert "add" in interfaces["tether.Conformance"]["operations"]


async def test_wrong_protocol_version_is_refused_with_a_reason() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            stream = await raw_session(nursery)
            await send_json(stream, {**HELLO, "protocol": PROTOCOL_VERSION + 1})
            reply = await receive_json(stream)
            with pytest.raises(tether.ConnectionClosed):
                await stream.receive_message()
    assert reply["t"] == "error"
    error = reply["error"]
    assert isinstance(error, dict)
    assert error["code"] == "incompatible-version"
    assert str(PROTOCOL_VERSION + 1) in str(error["message"])


async def test_a_call_before_hello_is_refused() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            stream = await raw_session(nursery)
            await send_json(stream, {"t": "call", "id": 1})
            reply = await receive_json(stream)
            with pytest.raises(tether.ConnectionClosed):
                await stream.receive_message()
    assert reply["t"] == "error"
    assert reply["error"]["code"] == "bad-request"  # type: ignore[index]


@pytest.mark.parametrize(
    ("message", "reply_id"),
    [
        (b"not json", None),
        (b"[1, 2]", None),
        (b'{"t": "bogus"}', None),
        (b'{"t": "call", "id": 7, "iface": 3}', 7),
        (b'{"t": "call", "id": 8, "iface": "x", "ver": "1.0.0", "op": "y", "args": {}}', 8),
        (b'{"t": "result", "id": 9, "value": 1}', None),
    ],
)
async def test_malformed_messages_get_an_error_and_the_session_survives(
    message: bytes, reply_id: int | None
) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            stream = await raw_session(nursery)
            await send_json(stream, HELLO)
            await receive_json(stream)
            await stream.send_message(message)
            reply = await receive_json(stream)
            call = {
                "t": "call",
                "id": 100,
                "iface": "tether.Conformance",
                "ver": "1.2.3",
                "op": "add",
                "args": [1, 2],
                "ctx": {},
            }
            await send_json(stream, call)
            answer = await receive_json(stream)
            await stream.aclose()
    assert reply["t"] == "error"
    assert reply["id"] == reply_id
    assert reply["error"]["code"] == "bad-request"  # type: ignore[index]
    assert answer == {"t": "result", "id": 100, "value": 3}


async def test_cancel_for_an_unknown_id_is_ignored() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            stream = await raw_session(nursery)
            await send_json(stream, HELLO)
            await receive_json(stream)
            await send_json(stream, {"t": "cancel", "id": 12345})
            await send_json(
                stream,
                {
                    "t": "call",
                    "id": 1,
                    "iface": "tether.Conformance",
                    "ver": "1.2.3",
                    "op": "add",
                    "args": [2, 3],
                    "ctx": {},
                },
            )
            answer = await receive_json(stream)
            await stream.aclose()
    assert answer == {"t": "result", "id": 1, "value": 5}


async def test_too_many_calls_in_flight_is_unavailable_429() -> None:
    probe = Probe()
    with trio.fail_after(5):
        async with memory.connect(
            conformance_manager(probe),
            interfaces=[ConformanceInterface],
            max_in_flight=2,
            retry=None,  # the 429 itself, not its retries
        ) as backend:
            client = backend.get_client(ConformanceInterface)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.wait_until_cancelled, "a")
                nursery.start_soon(client.wait_until_cancelled, "b")
                await probe.wait("started:a")
                await probe.wait("started:b")
                with pytest.raises(tether.Unavailable) as caught:
                    await client.add(1, 1)
                nursery.cancel_scope.cancel()
            assert await client.add(1, 1) == 2
    assert caught.value.status == 429
    assert caught.value.retry_after == 1


async def test_impl_context_changes_do_not_leak_into_the_next_call() -> None:
    """Each call runs in a task of its own: a contextvar set by one impl is gone in the next."""
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="clean")
    seen: list[str] = []

    class Leaky(tether.RpcInterface):
        interface_name = "test.Leaky"
        interface_version = "1.0.0"

        async def touch(self) -> str: ...

    class LeakyImpl(Leaky):
        async def touch(self) -> str:
            seen.append(marker.get())
            marker.set("dirty")
            return contexts.current().activity_id  # type: ignore[union-attr]

    manager = tether.RpcManager()
    manager.register_impl(Leaky, LeakyImpl)
    with trio.fail_after(5):
        async with memory.connect(manager, interfaces=[Leaky]) as backend:
            client = backend.get_client(Leaky)
            with contexts.activity() as first:
                assert await client.touch() == first.activity_id
            with contexts.activity() as second:
                assert await client.touch() == second.activity_id
            # The caller's own context is its own.
            assert contexts.current() is None
    assert seen == ["clean", "clean"]


async def test_thread_mode_runs_a_blocking_backend_without_stalling_the_frontend() -> None:
    """The impl blocks its thread until the frontend's loop acts: only a separate loop allows it."""
    release = threading.Event()

    class Blocking(tether.RpcInterface):
        interface_name = "test.Blocking"
        interface_version = "1.0.0"

        async def block(self) -> str: ...

    class BlockingImpl(Blocking):
        async def block(self) -> str:
            # A CPU-bound or blocking impl: it holds its loop until released.
            if not release.wait(timeout=5):
                return "never released"
            return threading.current_thread().name

    manager = tether.RpcManager()
    manager.register_impl(Blocking, BlockingImpl)
    result: list[str] = []
    with trio.fail_after(10):
        async with memory.connect(manager, interfaces=[Blocking], thread=True) as backend:
            client = backend.get_client(Blocking)

            async def call() -> None:
                result.append(await client.block())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                # This loop still runs while the backend's thread is blocked.
                await trio.testing.wait_all_tasks_blocked()
                release.set()
    assert result == ["tether-backend"]


async def test_a_connection_used_from_another_trio_run_fails_clearly() -> None:
    errors: list[BaseException] = []
    with trio.fail_after(5):
        async with memory.connect(
            conformance_manager(), interfaces=[ConformanceInterface]
        ) as backend:
            client = backend.get_client(ConformanceInterface)

            def other_thread() -> None:
                try:
                    trio.run(client.add, 1, 2)
                except RuntimeError as exc:
                    errors.append(exc)

            await trio.to_thread.run_sync(other_thread)
            assert await client.add(1, 2) == 3
    assert len(errors) == 1
    assert "another Trio run" in str(errors[0])


@pytest.mark.parametrize("thread", [False, True])
async def test_backend_closing_fails_pending_calls_and_later_ones(thread: bool) -> None:
    """When the stream breaks under a waiting call, it fails with ConnectionClosed, never hangs."""
    probe = Probe()
    manager = conformance_manager(probe)
    outcome: list[BaseException] = []
    with trio.fail_after(5):
        async with memory.connect(
            manager, interfaces=[ConformanceInterface], thread=thread
        ) as backend:
            client = backend.get_client(ConformanceInterface)

            async def call() -> None:
                try:
                    await client.wait_until_cancelled("x")
                except tether.ConnectionClosed as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await probe.wait("started:x")
                await backend.aclose()  # type: ignore[attr-defined]
            with pytest.raises(tether.ConnectionClosed):
                await client.add(1, 2)
    assert len(outcome) == 1
    await probe.wait("finally:x")


async def test_stream_pair_refuses_oversized_messages_and_stays_usable() -> None:
    a, b = memory.stream_pair(max_message_size=10)
    with pytest.raises(tether.PayloadTooLarge):
        await a.send_message(b"x" * 11)
    await a.send_message(b"y" * 10)
    assert await b.receive_message() == b"y" * 10
    await a.aclose()
    with pytest.raises(tether.ConnectionClosed):
        await b.receive_message()
    with pytest.raises(tether.ConnectionClosed):
        await b.send_message(b"z")


def call_message(call_id: int, op: str, args: list[object], **extra: object) -> dict[str, object]:
    return {
        "t": "call",
        "id": call_id,
        "iface": "tether.Conformance",
        "ver": "1.2.3",
        "op": op,
        "args": args,
        "ctx": {},
        **extra,
    }


async def test_a_late_cancel_does_not_reach_the_workers_next_call() -> None:
    """Workers reuse their cancel scope: a cancel for a finished call must be a no-op.

    Workers take turns, so the long call below runs on a worker that ran some of
    the earlier calls; their stale cancels arrive while it runs.
    """
    probe = Probe()
    client, server = memory.stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_rpc_session, conformance_manager(probe), server)
            await send_json(client, HELLO)
            await receive_json(client)
            for call_id in range(1, 6):
                await send_json(client, call_message(call_id, "add", [call_id, 1]))
                reply = await receive_json(client)
                assert reply == {"t": "result", "id": call_id, "value": call_id + 1}
            await send_json(client, call_message(10, "wait_until_cancelled", ["late"]))
            await probe.wait("started:late")
            for call_id in range(1, 6):
                await send_json(client, {"t": "cancel", "id": call_id})  # all too late
            await send_json(client, call_message(11, "add", [2, 2]))
            assert await receive_json(client) == {"t": "result", "id": 11, "value": 4}
            assert not probe.is_set("finally:late")
            # Its own cancel does stop it.
            await send_json(client, {"t": "cancel", "id": 10})
            await probe.wait("cancelled:late")
            await send_json(client, call_message(12, "add", [3, 3]))
            assert await receive_json(client) == {"t": "result", "id": 12, "value": 6}
            await client.aclose()


@pytest.mark.parametrize("sleep", [0.099, 0.1, 0.101])
async def test_deadline_at_the_end_of_a_call_leaves_the_session_healthy(
    sleep: float, autojump_clock: trio.testing.MockClock
) -> None:
    """A deadline firing as the impl ends: a result or deadline-exceeded, never a stuck worker."""

    class Sleeper(tether.RpcInterface):
        interface_name = "test.Sleeper"
        interface_version = "1.0.0"

        async def nap(self, seconds: float) -> str: ...

    class SleeperImpl(Sleeper):
        async def nap(self, seconds: float) -> str:
            await trio.sleep(seconds)
            return "rested"

    manager = tether.RpcManager()
    manager.register_impl(Sleeper, SleeperImpl)
    client, server = memory.stream_pair()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_rpc_session, manager, server)
            await send_json(client, HELLO)
            await receive_json(client)
            base = {"iface": "test.Sleeper", "ver": "1.0.0", "op": "nap", "ctx": {}}
            outcomes = []
            for call_id in range(1, 4):
                await send_json(
                    client, {"t": "call", "id": call_id, "args": [sleep], "timeout_ms": 100, **base}
                )
                reply = await receive_json(client)
                assert reply["id"] == call_id
                outcomes.append(reply.get("value") or reply["error"]["code"])  # type: ignore[index]
                # The worker (with a fresh scope if its own was spent) serves the next call.
                await send_json(client, {"t": "call", "id": 100 + call_id, "args": [0], **base})
                assert await receive_json(client) == {
                    "t": "result",
                    "id": 100 + call_id,
                    "value": "rested",
                }
            await client.aclose()
    expected = {
        0.099: {"rested"},
        0.1: {"rested", "deadline-exceeded"},
        0.101: {"deadline-exceeded"},
    }
    assert set(outcomes) <= expected[sleep]


async def test_a_contextvar_set_before_the_call_yields_does_not_reach_other_calls() -> None:
    """The reader that takes over mid-call starts from a clean context, not the call's."""
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker2", default="clean")
    seen: list[str] = []

    class Yielding(tether.RpcInterface):
        interface_name = "test.Yielding"
        interface_version = "1.0.0"

        async def touch(self) -> None: ...

    class YieldingImpl(Yielding):
        async def touch(self) -> None:
            seen.append(marker.get())
            marker.set("dirty")
            await trio.lowlevel.checkpoint()  # yields: the reading is handed over here

    manager = tether.RpcManager()
    manager.register_impl(Yielding, YieldingImpl)
    with trio.fail_after(5):
        async with memory.connect(manager, interfaces=[Yielding]) as backend:
            client = backend.get_client(Yielding)
            for _ in range(4):
                await client.touch()
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(client.touch)
    assert seen == ["clean"] * 12


class Burst(tether.RpcInterface):
    interface_name = "test.Burst"
    interface_version = "1.0.0"

    async def echo(self, x: int) -> int: ...
    async def bad_details(self) -> int: ...
    async def bad_args(self) -> int: ...


@tether.remote_error(name="tests.memory.Unsendable")
class Unsendable(Exception):
    """An application error whose args JSON cannot hold."""


class BurstImpl(Burst):
    def __init__(self) -> None:
        self.calls = 0

    async def echo(self, x: int) -> int:
        self.calls += 1
        return x

    async def bad_details(self) -> int:
        raise tether.InvalidRequest("nope", details={"when": object()})

    async def bad_args(self) -> int:
        raise Unsendable({1, 2})


def burst_manager(impl: BurstImpl | None = None) -> tether.RpcManager:
    manager = tether.RpcManager()
    manager.register_impl(Burst, impl or BurstImpl())
    return manager


@pytest.mark.parametrize("thread", [False, True])
@pytest.mark.parametrize("yields", [0, 2, 5])
async def test_an_abandoned_burst_of_calls_does_not_wedge_the_connection(
    thread: bool, yields: int
) -> None:
    """Replies nobody waits for fill the buffers; the backend must keep reading regardless.

    600 quick calls are cancelled mid-flight: their replies pile up unread on the
    frontend, and the backend's sends of more replies would block. The next call
    must still get through (it once hung: both sides blocked on send).
    """
    with trio.fail_after(20):
        async with memory.connect(burst_manager(), interfaces=[Burst], thread=thread) as backend:
            client = backend.get_client(Burst)
            async with trio.open_nursery() as nursery:
                for i in range(600):
                    nursery.start_soon(client.echo, i)
                for _ in range(yields):
                    await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()
            assert await client.echo(7) == 7
            assert [await client.echo(i) for i in range(300)] == list(range(300))


async def test_errors_whose_details_cannot_be_encoded_still_reach_the_caller() -> None:
    with trio.fail_after(5):
        async with memory.connect(burst_manager(), interfaces=[Burst]) as backend:
            client = backend.get_client(Burst)
            with pytest.raises(tether.InvalidRequest, match="nope") as bad:
                await client.bad_details()
            with pytest.raises(tether.RemoteError) as unsendable:
                await client.bad_args()
            assert await client.echo(3) == 3
    assert bad.value.details == {}
    assert unsendable.value.remote_type == "tests.memory.Unsendable"


async def test_a_call_from_a_cancelled_scope_is_not_sent() -> None:
    impl = BurstImpl()
    with trio.fail_after(5):
        async with memory.connect(burst_manager(impl), interfaces=[Burst]) as backend:
            client = backend.get_client(Burst)
            with trio.CancelScope() as scope:
                scope.cancel()
                await client.echo(1)
            assert scope.cancelled_caught
            assert await client.echo(2) == 2
    assert impl.calls == 1


async def test_cancelling_connect_while_the_backend_thread_starts_returns() -> None:
    """The backend thread waits for hello; a cancelled connect must close it, not hang."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:

                async def cancel_once_the_thread_runs() -> None:
                    for _ in range(100_000):
                        names = {thread.name for thread in threading.enumerate()}
                        if "tether-backend" in names:
                            break
                        await trio.lowlevel.checkpoint()
                    scope.cancel()

                nursery.start_soon(cancel_once_the_thread_runs)
                async with memory.connect(burst_manager(), interfaces=[Burst], thread=True):
                    await trio.sleep_forever()
            assert scope.cancelled_caught
    assert "tether-backend" not in {thread.name for thread in threading.enumerate()}


async def test_thread_mode_connections_do_not_use_trios_default_thread_limiter() -> None:
    """41 thread-mode connections (the default limiter has 40 tokens) leave to_thread usable."""
    with trio.fail_after(30):
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(41):
                await stack.enter_async_context(
                    memory.connect(burst_manager(), interfaces=[Burst], thread=True)
                )
            assert await trio.to_thread.run_sync(lambda: 42) == 42


@pytest.mark.parametrize("value", [0, -1, True, 2.5, "8"])
async def test_open_rpc_connection_refuses_a_max_in_flight_that_is_not_a_positive_int(
    value: Any,
) -> None:
    # Refused before the stream is touched (it is never used here).
    with pytest.raises(ValueError, match="max_in_flight must be a positive int"):
        async with open_rpc_connection(
            object(),  # type: ignore[arg-type]
            interfaces=[ConformanceInterface],
            max_in_flight=value,
        ):
            raise AssertionError("connected")  # pragma: no cover
