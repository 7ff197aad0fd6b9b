# mypy: disable-error-code="empty-body"
"""IPC below the conformance suite: declarations, registration, the wire, the bounds."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import tether
from tether.runtime import serve_ipc_session
from tether.runtime._ipc_engine import DRAIN_GRACE
from tether.runtime._protocol import (
    PROTOCOL_VERSION,
    Cancel,
    Error,
    Hello,
    Invoke,
    Notify,
    Result,
    Welcome,
    decode,
    encode,
)
from tether.runtime._stream import MessageStream
from tether.transports import memory

TIMEOUT = 10.0


@attrs.frozen
class Placement:
    x: float
    y: float


class EditorIpc(tether.IpcInterface):
    channel_name = "editor"
    version = "1.2.0"

    async def move(self, element_id: str, dx: float) -> Placement: ...
    async def wait(self) -> None: ...


class EditorEvents(tether.NotificationInterface):
    channel_name = "editor-events"

    async def moved(self, element_id: str, placement: Placement) -> None: ...


class EditorHandler(tether.IpcHandler, EditorIpc):
    started = 0

    def __init__(self) -> None:
        EditorHandler.started += 1
        self.closed: list[str] = []

    async def move(self, element_id: str, dx: float) -> Placement:
        placement = Placement(dx, 0.0)
        await tether.current_session().notifier(EditorEvents).moved(element_id, placement)
        return placement

    async def wait(self) -> None:
        await trio.sleep_forever()

    def on_close(self, reason: str) -> None:
        self.closed.append(reason)


def make_backend(**options: Any) -> tether.BackendIpc:
    backend = tether.BackendIpc(**options)
    backend.register(EditorHandler)
    return backend


# ---------------------------------------------------------------------------
# Declarations


def test_ipc_interface_needs_a_channel_name_and_a_semantic_version() -> None:
    with pytest.raises(TypeError, match="channel_name must be a non-empty string"):

        class NoName(tether.IpcInterface):
            channel_name = ""
            version = "1.0.0"

    with pytest.raises(TypeError, match="version must be a semantic version"):

        class NoVersion(tether.IpcInterface):
            channel_name = "c"

    with pytest.raises(TypeError, match=r"NotSemver\.version"):

        class NotSemver(tether.IpcInterface):
            channel_name = "c"
            version = "one"


def test_channel_methods_are_checked_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match=r"method c\.sync must be declared with 'async def'"):

        class Sync(tether.IpcInterface):
            channel_name = "c"
            version = "1.0.0"

            def sync(self) -> int: ...

    with pytest.raises(TypeError, match="parameter 'x' has no annotation"):

        class Unannotated(tether.IpcInterface):
            channel_name = "c"
            version = "1.0.0"

            async def f(self, x) -> int: ...  # type: ignore[no-untyped-def]


def test_notifications_must_return_none() -> None:
    with pytest.raises(TypeError, match=r"notification e\.count must return None"):

        class Answers(tether.NotificationInterface):
            channel_name = "e"

            async def count(self) -> int: ...


def test_a_subclass_without_a_declaration_is_refused() -> None:
    with pytest.raises(TypeError, match="sets neither channel_name nor version"):

        class Stray(tether.IpcInterface):
            pass

    with pytest.raises(TypeError, match="sets no channel_name"):

        class StrayEvents(tether.NotificationInterface):
            pass


def test_an_implementation_must_keep_methods_async() -> None:
    with pytest.raises(TypeError, match=r"Bad\.move implements method editor\.move"):

        class Bad(tether.IpcHandler, EditorIpc):
            def move(self, element_id: str, dx: float) -> Placement:  # type: ignore[override]
                return Placement(0, 0)


def test_handler_reports_its_channel_and_version() -> None:
    assert EditorHandler.channel_name == "editor"
    assert EditorHandler.get_version() == "1.2.0"
    assert list(EditorIpc.__tether_operations__) == ["move", "wait"]


# ---------------------------------------------------------------------------
# Registration


def test_register_refuses_what_is_not_a_complete_handler() -> None:
    backend = tether.BackendIpc()
    with pytest.raises(TypeError, match="is not an IpcHandler"):
        backend.register(EditorIpc)  # type: ignore[arg-type]

    class Partial(tether.IpcHandler, EditorIpc):
        async def move(self, element_id: str, dx: float) -> Placement:
            return Placement(dx, 0)

    with pytest.raises(TypeError, match="does not implement wait of channel editor"):
        backend.register(Partial)
    backend.register(EditorHandler)
    with pytest.raises(TypeError, match="'editor' is already registered"):
        backend.register(EditorHandler)
    assert backend.channels == {"editor": "1.2.0"}
    backend.unregister(EditorIpc)
    assert backend.channels == {}


def test_register_works_as_a_class_decorator() -> None:
    backend = tether.BackendIpc()

    @backend.register
    class Handler(tether.IpcHandler, EditorIpc):
        async def move(self, element_id: str, dx: float) -> Placement:
            return Placement(dx, 0)

        async def wait(self) -> None:
            pass

    assert isinstance(Handler, type)
    assert backend.channels == {"editor": "1.2.0"}


@pytest.mark.parametrize(
    "option",
    ["max_pending_notifications", "max_in_flight", "max_sessions", "slow_frontend_timeout"],
)
@pytest.mark.parametrize("value", [0, -1, "8", None])
def test_backend_bounds_must_be_positive_integers(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"{option} must be a positive"):
        tether.BackendIpc(**{option: value})


def test_current_session_outside_a_session_says_where_it_works() -> None:
    with pytest.raises(RuntimeError, match="only available on a backend"):
        tether.current_session()
    assert not tether.BackendIpc().is_valid


def test_listeners_need_a_channel_name_and_a_callable() -> None:
    backend = tether.BackendIpc()
    with pytest.raises(TypeError, match="non-empty string"):
        backend.add_listener("", print)
    with pytest.raises(TypeError, match="must be callable"):
        backend.add_listener("c", "print")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# The wire: a hand-written frontend against serve_ipc_session


@asynccontextmanager
async def raw_backend(backend: tether.BackendIpc) -> AsyncIterator[MessageStream]:
    client, server = memory.stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_ipc_session, backend, server)
        try:
            yield client
        finally:
            await client.aclose()


async def handshake(client: MessageStream, channels: dict[str, str] | None = None) -> Welcome:
    hello = Hello(PROTOCOL_VERSION, None, "app", "1.0", channels or {}, mode="ipc")
    await client.send_message(encode(hello))
    welcome = decode(await client.receive_message())
    assert isinstance(welcome, Welcome), welcome
    return welcome


async def expect_refusal(client: MessageStream) -> Error:
    reply = decode(await client.receive_message())
    assert isinstance(reply, Error), reply
    with pytest.raises(tether.ConnectionClosed):
        await client.receive_message()
    return reply


async def test_welcome_lists_the_channels_and_a_fresh_session_id() -> None:
    with trio.fail_after(TIMEOUT):
        backend = make_backend()
        async with raw_backend(backend) as a, raw_backend(backend) as b:
            first, second = await handshake(a), await handshake(b)
            assert first.channels == {"editor": "1.2.0"}
            assert first.session_id != second.session_id
            assert len(first.session_id) == 36  # a uuid4: unguessable
            assert sorted(s.id for s in backend.sessions) == sorted(
                [first.session_id, second.session_id]
            )


@pytest.mark.parametrize(
    ("hello", "code", "text"),
    [
        (Hello(PROTOCOL_VERSION + 1, mode="ipc"), "incompatible-version", "protocol"),
        (Hello(PROTOCOL_VERSION, mode="rpc"), "bad-request", "serves IPC sessions"),
        (Hello(PROTOCOL_VERSION, channels={"nope": "1.0.0"}, mode="ipc"), "not-found", "'nope'"),
        (
            Hello(PROTOCOL_VERSION, channels={"editor": "1.3.0"}, mode="ipc"),
            "incompatible-version",
            "channel 'editor' 1.2.0, this client needs 1.3.0",
        ),
        (Cancel(1), "bad-request", "expected 'hello' first"),
    ],
)
async def test_a_bad_hello_is_refused_with_a_reason_and_the_stream_closed(
    hello: Any, code: str, text: str
) -> None:
    with trio.fail_after(TIMEOUT):
        backend = make_backend()
        handlers_before = EditorHandler.started
        async with raw_backend(backend) as client:
            await client.send_message(encode(hello))
            refusal = await expect_refusal(client)
            assert refusal.error.code == code
            assert text in refusal.error.message
        assert backend.sessions == ()
        assert EditorHandler.started == handlers_before  # no handler made for a refused session


async def test_rpc_endpoint_refuses_an_ipc_hello() -> None:
    with trio.fail_after(TIMEOUT):
        client, server = memory.stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tether.runtime.serve_rpc_session, tether.RpcManager(), server)
            await client.send_message(encode(Hello(PROTOCOL_VERSION, mode="ipc")))
            refusal = await expect_refusal(client)
            assert refusal.error.code == "bad-request"
            assert "serves RPC sessions" in refusal.error.message


async def test_hello_without_mode_is_an_rpc_hello() -> None:
    hello = decode(json.dumps({"t": "hello", "protocol": PROTOCOL_VERSION}))
    assert isinstance(hello, Hello)
    assert hello.mode == "rpc"


async def test_malformed_messages_are_refused_and_the_session_goes_on() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_backend(make_backend()) as client:
            await handshake(client)
            await client.send_message(b"{not json")
            reply = decode(await client.receive_message())
            assert isinstance(reply, Error)
            assert reply.id is None
            assert reply.error.code == "bad-request"
            # A field of the wrong type in an invoke: refused for that id.
            await client.send_message(
                json.dumps(
                    {"t": "invoke", "id": 5, "channel": "editor", "method": 1, "args": []}
                ).encode()
            )
            reply = decode(await client.receive_message())
            assert isinstance(reply, Error)
            assert (reply.id, reply.error.details["field"]) == (5, "method")
            # A message that has no place in an open session.
            await client.send_message(encode(Hello(PROTOCOL_VERSION, mode="ipc")))
            reply = decode(await client.receive_message())
            assert isinstance(reply, Error)
            assert "not part of an open IPC session" in reply.error.message
            # Still serving.
            await client.send_message(encode(Invoke(6, "editor", "move", ["e", 2.0])))
            note = decode(await client.receive_message())
            assert note == Notify(
                "editor-events", "moved", ["e", {"x": 2.0, "y": 0.0}], note.activity_id
            )
            assert decode(await client.receive_message()) == Result(6, {"x": 2.0, "y": 0.0})


@pytest.mark.parametrize(
    ("invoke", "code", "text"),
    [
        (Invoke(1, "nope", "move", []), "not-found", "does not serve channel 'nope'"),
        (Invoke(1, "editor", "__init__", []), "not-found", "no method '__init__'"),
        (Invoke(1, "editor", "on_close", ["x"]), "not-found", "no method 'on_close'"),
        (Invoke(1, "editor", "get_version", []), "not-found", "no method 'get_version'"),
        (Invoke(1, "editor", "move", ["e"]), "bad-request", "takes 2 arguments"),
        (Invoke(1, "editor", "move", ["e", "far"]), "bad-request", "argument 'dx'"),
    ],
)
async def test_only_declared_methods_with_fitting_arguments_run(
    invoke: Invoke, code: str, text: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_backend(make_backend()) as client:
            await handshake(client)
            await client.send_message(encode(invoke))
            reply = decode(await client.receive_message())
            assert isinstance(reply, Error)
            assert (reply.id, reply.error.code) == (1, code)
            assert text in reply.error.message


async def test_invokes_beyond_max_in_flight_are_refused_as_overloaded() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_backend(make_backend(max_in_flight=2)) as client:
            await handshake(client)
            for call_id in (1, 2, 3):
                await client.send_message(encode(Invoke(call_id, "editor", "wait", [])))
            reply = decode(await client.receive_message())
            assert isinstance(reply, Error)
            assert (reply.id, reply.error.code, reply.error.status) == (3, "too-many-requests", 429)
            # A duplicate id of a running invoke is refused too.
            await client.send_message(encode(Invoke(1, "editor", "wait", [])))
            reply = decode(await client.receive_message())
            assert isinstance(reply, Error)
            assert "already in flight" in reply.error.message
            # Cancelling one makes room.
            await client.send_message(encode(Cancel(1)))
            await trio.testing.wait_all_tasks_blocked()
            await client.send_message(encode(Invoke(4, "editor", "move", ["e", 1.0])))
            decode(await client.receive_message())  # its notification
            assert decode(await client.receive_message()) == Result(4, {"x": 1.0, "y": 0.0})


async def test_sessions_beyond_max_sessions_are_refused() -> None:
    with trio.fail_after(TIMEOUT):
        backend = make_backend(max_sessions=1)
        async with raw_backend(backend) as first, raw_backend(backend) as second:
            await handshake(first)
            await second.send_message(encode(Hello(PROTOCOL_VERSION, mode="ipc")))
            refusal = await expect_refusal(second)
            # A full backend is unavailable (503), as docs/http.md says; 429 is
            # for one client over its own bound.
            assert (refusal.error.code, refusal.error.status) == ("unavailable", 503)
            assert len(backend.sessions) == 1


async def test_a_handler_that_cannot_be_created_refuses_the_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(tether.IpcHandler, EditorIpc):
        def __init__(self) -> None:
            raise OSError("no disk")

        async def move(self, element_id: str, dx: float) -> Placement:
            return Placement(dx, 0)

        async def wait(self) -> None:
            pass

    backend = tether.BackendIpc()
    backend.register(Broken)
    with trio.fail_after(TIMEOUT):
        async with raw_backend(backend) as client:
            await client.send_message(encode(Hello(PROTOCOL_VERSION, mode="ipc")))
            refusal = await expect_refusal(client)
    assert refusal.error.code == "unavailable"
    assert "OSError" in refusal.error.message
    assert "no disk" in caplog.text


async def test_a_frontend_that_never_reads_is_closed_as_too_slow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The backend's queue is bounded: it never grows past max_pending_notifications."""

    class Flood(tether.IpcHandler, EditorIpc):
        async def move(self, element_id: str, dx: float) -> Placement:
            notifier = tether.current_session().notifier(EditorEvents)
            for _ in range(2000):  # bounded: far more than the stream's and the queue's room
                await notifier.moved(element_id, Placement(0, 0))
            raise AssertionError("the queue never overflowed")

        async def wait(self) -> None:
            pass

    backend = tether.BackendIpc(max_pending_notifications=8, slow_frontend_timeout=2.0)
    backend.register(Flood)
    with trio.fail_after(TIMEOUT):
        async with raw_backend(backend) as client:
            await handshake(client)
            session = backend.sessions[0]
            start = trio.current_time()
            await client.send_message(encode(Invoke(1, "editor", "move", ["e", 1.0])))
            assert await session.wait_closed() == "frontend too slow"
            # The sender waited for room for slow_frontend_timeout, then gave up.
            assert 2.0 <= trio.current_time() - start < 3.0
            received = 0
            reason = None
            while received < 5000:
                try:
                    decode(await client.receive_message())
                except tether.ConnectionClosed as closed:
                    reason = closed.reason
                    break
                received += 1
            assert reason == "frontend too slow"
            # What reached the stream: its own buffer (256) and at most the bound.
            assert 256 <= received <= 256 + 8 + 1


async def test_the_frontend_learns_why_the_backend_closed() -> None:
    with trio.fail_after(TIMEOUT):
        backend = make_backend()
        async with memory.connect_ipc(backend) as frontend:
            session = backend.sessions[0]
            session.close("maintenance")
            assert await frontend.wait_closed() == "maintenance"
            assert not frontend.is_valid
            with pytest.raises(tether.ConnectionClosed) as closed:
                await frontend.call_backend("editor", "move", "e", 1.0)
            assert closed.value.reason == "maintenance"
            assert isinstance(closed.value, tether.TransportError)


async def test_session_close_from_another_thread_is_handed_to_its_loop() -> None:
    with trio.fail_after(TIMEOUT):
        backend = make_backend()
        async with memory.connect_ipc(backend, thread=True) as frontend:
            (session,) = backend.sessions  # lives in the backend's thread
            session.close("from the frontend's thread")
            assert await frontend.wait_closed() == "from the frontend's thread"


async def test_a_session_used_from_another_trio_run_raises_instead_of_hanging() -> None:
    with trio.fail_after(TIMEOUT):
        backend = make_backend()
        async with memory.connect_ipc(backend, thread=True) as frontend:
            (session,) = backend.sessions
            with pytest.raises(RuntimeError, match="belongs to another Trio run"):
                await session.send("editor-events", "moved", "e", {"x": 1, "y": 2})
            assert frontend.is_valid


async def test_notifications_already_received_are_delivered_after_the_backend_leaves() -> None:
    got: list[str] = []
    release = trio.Event()

    async def slow(method: str, element_id: str, placement: Any) -> None:
        await release.wait()
        got.append(element_id)

    with trio.fail_after(TIMEOUT):
        backend = make_backend()
        async with memory.connect_ipc(backend) as frontend:
            frontend.add_listener("editor-events", slow)
            editor = frontend.proxy(EditorIpc)
            for n in range(3):
                await editor.move(str(n), 1.0)
            backend.sessions[0].close("done")
            await trio.testing.wait_all_tasks_blocked()
            release.set()
            assert await frontend.wait_closed() == "done"
            assert got == ["0", "1", "2"]


async def test_a_stuck_listener_does_not_hold_the_teardown_past_the_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    entered = trio.Event()

    async def stuck(method: str, *args: Any) -> None:
        entered.set()
        await trio.sleep_forever()

    with trio.fail_after(DRAIN_GRACE * 4):
        backend = make_backend()
        async with memory.connect_ipc(backend) as frontend:
            frontend.add_listener("editor-events", stuck)
            await frontend.proxy(EditorIpc).move("e", 1.0)
            await entered.wait()
            start = trio.current_time()
            backend.sessions[0].close("bye")
            await frontend.wait_closed()
            assert DRAIN_GRACE <= trio.current_time() - start < DRAIN_GRACE * 2


async def test_leaving_the_block_tells_per_session_handlers_why() -> None:
    with trio.fail_after(TIMEOUT):
        handlers: list[EditorHandler] = []
        backend = tether.BackendIpc()

        class Recording(EditorHandler):
            def __init__(self) -> None:
                super().__init__()
                handlers.append(self)

        backend.register(Recording)
        async with memory.connect_ipc(backend) as frontend:
            await frontend.proxy(EditorIpc).move("e", 1.0)
            (session,) = backend.sessions
        assert await session.wait_closed() == "closed by the frontend"
        assert [h.closed for h in handlers] == [["closed by the frontend"]]
        assert backend.sessions == ()


async def test_call_backend_converts_arguments_by_their_runtime_type() -> None:
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(make_backend()) as frontend:
            assert await frontend.call_backend("editor", "move", "e", 2.5) == {"x": 2.5, "y": 0.0}
            with pytest.raises(tether.InvalidRequest, match="cannot be sent"):
                await frontend.call_backend("editor", "move", "e", object())


async def test_invoke_and_notification_over_the_size_limit_are_refused_locally() -> None:
    class Big(tether.IpcHandler, EditorIpc):
        async def move(self, element_id: str, dx: float) -> Placement:
            await tether.current_session().send("editor-events", "moved", "x" * 5000)
            return Placement(dx, 0)

        async def wait(self) -> None:
            pass

    backend = tether.BackendIpc()
    backend.register(Big)
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(backend, max_message_size=1000) as frontend:
            with pytest.raises(tether.PayloadTooLarge):
                await frontend.call_backend("editor", "move", "x" * 5000, 1.0)
            with pytest.raises(tether.PayloadTooLarge):
                await frontend.proxy(EditorIpc).move("e", 1.0)
            assert frontend.is_valid


async def test_access_log_has_one_line_per_invoke(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tether.access")
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(make_backend()) as frontend:
            await frontend.proxy(EditorIpc).move("e", 1.0)
            with pytest.raises(tether.NotFound):
                await frontend.call_backend("editor", "nope")
    lines = [r.getMessage() for r in caplog.records if r.name == "tether.access"]
    assert len(lines) == 1
    assert lines[0].startswith("editor.move ok ")


async def test_deadline_reaches_the_handler_as_its_own_deadline() -> None:
    seen: list[float] = []

    class Timed(tether.IpcHandler, EditorIpc):
        async def move(self, element_id: str, dx: float) -> Placement:
            seen.append(trio.current_effective_deadline() - trio.current_time())
            return Placement(dx, 0)

        async def wait(self) -> None:
            pass

    backend = tether.BackendIpc()
    backend.register(Timed)
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(backend) as frontend:
            editor = frontend.proxy(EditorIpc)
            await editor.move("e", 1.0)
            with trio.move_on_after(3):
                await editor.move("e", 1.0)
    assert TIMEOUT - 1 < seen[0] <= TIMEOUT  # the test's own fail_after
    assert 2.5 < seen[1] <= 3.0


async def test_a_burst_to_a_frontend_that_keeps_up_is_slowed_not_dropped() -> None:
    """A producer faster than a healthy frontend waits for room instead of losing the session."""
    count = 3000  # far beyond both bounds and the stream's buffer
    got: list[int] = []

    class Events(tether.NotificationInterface):
        channel_name = "burst-events"

        async def tick(self, n: int) -> None: ...

    class Burst(tether.IpcHandler, EditorIpc):
        async def move(self, element_id: str, dx: float) -> Placement:
            tick = tether.current_session().notifier(Events).tick
            for n in range(count):
                await tick(n)  # never yields on its own while there is room
            return Placement(dx, 0)

        async def wait(self) -> None:
            pass

    class Listener(tether.NotificationHandler, Events):
        async def tick(self, n: int) -> None:
            got.append(n)
            if n % 7 == 0:
                await trio.lowlevel.checkpoint()  # a listener that takes its time

    backend = tether.BackendIpc(max_pending_notifications=16)
    backend.register(Burst)
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(backend, max_pending_notifications=16) as frontend:
            frontend.add_notification_handler(Listener())
            await frontend.proxy(EditorIpc).move("e", 1.0)
            while len(got) < count:  # bounded by fail_after; each round delivers some
                await trio.testing.wait_all_tasks_blocked()
            assert frontend.is_valid
    assert got == list(range(count))


async def test_a_session_that_failed_to_open_gives_its_place_back() -> None:
    attempts: list[int] = []

    class FailsOnce(tether.IpcHandler, EditorIpc):
        def __init__(self) -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise OSError("first one fails")

        async def move(self, element_id: str, dx: float) -> Placement:
            return Placement(dx, 0)

        async def wait(self) -> None:
            pass

    backend = tether.BackendIpc(max_sessions=1)
    backend.register(FailsOnce)
    with trio.fail_after(TIMEOUT):
        with pytest.raises(tether.Unavailable, match="creating the handler"):
            async with memory.connect_ipc(backend):
                pass
        async with memory.connect_ipc(backend) as frontend:  # the place was given back
            assert await frontend.call_backend("editor", "move", "e", 1.0) == {"x": 1.0, "y": 0}
