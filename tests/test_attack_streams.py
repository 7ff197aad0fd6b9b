"""Attacks on RPC streams: hostile peers message by message, cancellation and teardown.

One side is tether's real engine; the other a test peer over an in-process
MessageStream pair that sends what it likes (huge credit, credit for calls
that are no streams, `send` where none is taken, items past credit...). Each
attack checks that the connection stays usable (or closes with a clear
reason), that nothing grows without bound, and that no task is left behind.
IPC, binary frames and the other transports are attacked in
test_attack_streams_ipc.py and test_attack_streams_wire.py.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import tether
from tether.runtime import (
    ClientOptions,
    MessageStream,
    open_rpc_connection,
    serve_rpc_session,
)
from tether.runtime._dispatch import error_info
from tether.runtime._protocol import (
    PROTOCOL_VERSION,
    Call,
    CallContext,
    Cancel,
    Credit,
    End,
    Error,
    Hello,
    InterfaceInfo,
    Item,
    Message,
    Ready,
    Result,
    Send,
    Welcome,
    decode,
    encode,
)
from tether.transports import memory
from tether.transports.memory import stream_pair


class Numbers(tether.RpcInterface):
    interface_name = "attack.StreamNumbers"
    interface_version = "1.0.0"

    def count(self, n: int) -> tether.Stream[int]: ...
    async def total(self, values: tether.Stream[int]) -> int: ...
    def scale(self, factor: int, values: tether.Stream[int]) -> tether.Stream[int]: ...
    async def add(self, a: int, b: int) -> int: ...
    def forever(self) -> tether.Stream[int]: ...
    def repeat(self, text: str, n: int) -> tether.Stream[str]: ...


class NumbersImpl(Numbers):
    def __init__(self) -> None:
        self.forever_closed = 0
        self.forever_started = 0

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    async def total(self, values: tether.Stream[int]) -> int:
        return sum([value async for value in values])

    async def scale(self, factor: int, values: tether.Stream[int]) -> AsyncIterator[int]:
        async for value in values:
            yield value * factor

    async def add(self, a: int, b: int) -> int:
        return a + b

    async def repeat(self, text: str, n: int) -> AsyncIterator[str]:
        for _ in range(n):
            yield text

    async def forever(self) -> AsyncIterator[int]:
        self.forever_started += 1
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            self.forever_closed += 1


def _manager(impl: NumbersImpl | None = None, **kwargs: Any) -> tether.RpcManager:
    manager = tether.RpcManager(**kwargs)
    manager.register_impl(Numbers, impl if impl is not None else NumbersImpl())
    return manager


class Peer:
    """The test's end of a MessageStream: it sends and reads decoded messages."""

    def __init__(self, stream: MessageStream) -> None:
        self.stream = stream

    async def send(self, message: Message) -> None:
        await self.stream.send_message(encode(message))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_message(data)

    async def receive(self) -> Message:
        return decode(await self.stream.receive_message())

    async def hello(self) -> None:
        """Play a frontend's handshake."""
        await self.send(Hello(PROTOCOL_VERSION))
        assert type(await self.receive()) is Welcome

    async def welcome(self) -> None:
        """Play a backend's handshake."""
        assert type(await self.receive()) is Hello
        info = InterfaceInfo(Numbers.interface_version, tuple(Numbers.__tether_operations__))
        await self.send(Welcome(PROTOCOL_VERSION, "s1", interfaces={Numbers.interface_name: info}))

    async def still_answers(self, call_id: int) -> None:
        """The session still serves calls: `add` answers."""
        await self.send(_call(call_id, "add", [call_id, 1]))
        assert await self.receive() == Result(call_id, call_id + 1)


def _call(call_id: int, op: str, args: list[Any], timeout_ms: int | None = None) -> Call:
    return Call(
        call_id,
        Numbers.interface_name,
        Numbers.interface_version,
        op,
        args,
        CallContext("attack-activity"),
        timeout_ms,
    )


async def _serving(nursery: trio.Nursery, manager: tether.RpcManager) -> Peer:
    client_end, server_end = stream_pair()
    nursery.start_soon(serve_rpc_session, manager, server_end)
    peer = Peer(client_end)
    await peer.hello()
    return peer


# -- a hostile frontend, against the backend's session ------------------------------


@pytest.mark.parametrize("huge", [2**62, 2**63 - 1])
async def test_huge_credit_is_credit_and_the_session_goes_on(huge: int) -> None:
    manager = _manager()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            peer = await _serving(nursery, manager)
            await peer.send(_call(1, "count", [3]))
            await peer.send(Credit(1, huge, huge))
            await peer.send(Credit(1, huge, huge))  # adds up past 64 bits: still credit
            assert [await peer.receive() for _ in range(4)] == [
                Item(1, 0),
                Item(1, 1),
                Item(1, 2),
                Result(1, None),
            ]
            await peer.still_answers(2)
            nursery.cancel_scope.cancel()


async def test_credit_past_64_bits_is_refused_as_malformed_and_the_session_goes_on() -> None:
    manager = _manager()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            peer = await _serving(nursery, manager)
            await peer.send(_call(1, "count", [2]))
            await peer.send_raw(b'{"t":"credit","id":1,"items":%d,"bytes":5}' % 2**200)
            refusal = await peer.receive()
            assert type(refusal) is Error
            assert refusal.error.code == "bad-request"
            await peer.send(Credit(1, 5, 1 << 20))
            assert [await peer.receive() for _ in range(3)] == [
                Item(1, 0),
                Item(1, 1),
                Result(1, None),
            ]
            await peer.still_answers(2)
            nursery.cancel_scope.cancel()


async def test_stream_messages_for_a_unary_call_or_an_unknown_id_are_dropped() -> None:
    manager = _manager()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            peer = await _serving(nursery, manager)
            for message in (
                Credit(1, 10, 10),
                Send(1, 5),
                End(1),
                Credit(99, 1, 1),
                Send(99, 1),
                End(99),
                Ready(99, 1, 1),  # a backend's message: refused, not dropped
            ):
                await peer.send(message)
            refusal = await peer.receive()
            assert type(refusal) is Error
            assert "Ready" in refusal.error.message
            await peer.still_answers(1)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("messages", "why"),
    [
        ([Send(1, 5)], "takes no stream argument"),
        ([Ready(1, 4, 4)], "does not accept 'Ready'"),
    ],
)
async def test_argument_items_for_a_server_stream_fail_that_stream_only(
    messages: list[Message], why: str
) -> None:
    impl = NumbersImpl()
    manager = _manager(impl)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            peer = await _serving(nursery, manager)
            await peer.send(_call(1, "forever", []))
            await trio.testing.wait_all_tasks_blocked()
            for message in messages:
                await peer.send(message)
            refusal = await peer.receive()
            assert type(refusal) is Error
            assert why in refusal.error.message
            await peer.still_answers(2)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()


async def test_end_twice_and_send_after_end() -> None:
    manager = _manager()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            peer = await _serving(nursery, manager)
            # `end` twice is the same end.
            await peer.send(_call(1, "total", [None]))
            assert type(await peer.receive()) is Ready
            await peer.send(Send(1, 4))
            await peer.send(End(1))
            await peer.send(End(1))
            assert await peer.receive() == Result(1, 4)
            # A `send` after `end` fails that call with a reason.
            await peer.send(_call(2, "scale", [2, None]))
            assert type(await peer.receive()) is Ready
            await peer.send(End(2))
            await peer.send(Send(2, 1))
            reply = await peer.receive()
            assert type(reply) is Error or reply == Result(2, None)
            if type(reply) is Error:
                assert reply.error.code == "bad-request"
                assert "no more stream items" in reply.error.message
            await peer.still_answers(3)
            assert manager.statistics().open_streams == 0
            nursery.cancel_scope.cancel()


async def test_streams_never_credited_are_bounded_by_max_in_flight_and_end_with_the_session() -> (
    None
):
    impl = NumbersImpl()
    manager = _manager(impl)
    client_end, server_end = stream_pair()
    peer = Peer(client_end)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: serve_rpc_session(manager, server_end, max_in_flight=200))
            await peer.hello()
            for call_id in range(1, 251):
                await peer.send(_call(call_id, "forever", []))
            refused = [await peer.receive() for _ in range(50)]
            assert all(type(r) is Error and r.error.code == "too-many-requests" for r in refused)
            await trio.testing.wait_all_tasks_blocked()
            # Nobody spins: every generator waits, parked, for credit.
            assert impl.forever_started == 200
            assert manager.statistics().open_streams == 200
            await client_end.aclose()
        # The session's end closed every generator.
    assert impl.forever_closed == 200
    assert manager.statistics().open_streams == 0


async def test_a_generator_waiting_for_credit_does_not_spin() -> None:
    impl = NumbersImpl()
    manager = _manager(impl)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            peer = await _serving(nursery, manager)
            await peer.send(_call(1, "forever", []))
            await peer.send(Credit(1, 2, 1 << 20))
            assert [await peer.receive() for _ in range(2)] == [Item(1, 0), Item(1, 1)]
            # wait_all_tasks_blocked returns only if no task is runnable: a
            # generator polling for credit would keep it waiting (fail_after).
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(Credit(1, 0, 1 << 20))  # bytes but no items: still waits
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(Credit(1, 1, 0))
            assert await peer.receive() == Item(1, 2)
            nursery.cancel_scope.cancel()
    assert impl.forever_closed == 1


async def test_a_duplicate_stream_call_id_is_refused() -> None:
    impl = NumbersImpl()
    manager = _manager(impl)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            peer = await _serving(nursery, manager)
            await peer.send(_call(1, "forever", []))
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(_call(1, "forever", []))
            refusal = await peer.receive()
            assert type(refusal) is Error
            assert "already in flight" in refusal.error.message
            await peer.send(Credit(1, 1, 1 << 20))
            assert await peer.receive() == Item(1, 0)
            await peer.send(Cancel(1))
            await peer.still_answers(2)
            nursery.cancel_scope.cancel()
    assert impl.forever_started == 1


# -- a hostile backend, against the frontend's connection ---------------------------


async def _connected(
    nursery: trio.Nursery, max_message_size: int = 1 << 20, **options: Any
) -> tuple[Peer, Any]:
    client_end, server_end = stream_pair(max_message_size=max_message_size)
    peer = Peer(server_end)
    nursery.start_soon(peer.welcome)
    connection = await nursery_enter(
        nursery,
        open_rpc_connection(client_end, interfaces=[Numbers], options=ClientOptions(**options)),
    )
    return peer, connection


async def nursery_enter(nursery: trio.Nursery, manager: Any) -> Any:
    """Enter an async context manager for the rest of the nursery's life."""
    entered: Any = None

    async def hold(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal entered
        async with manager as value:
            entered = value
            task_status.started()
            await trio.sleep_forever()

    await nursery.start(hold)
    return entered


async def test_a_consumer_cancelled_with_items_buffered_stops_at_once() -> None:
    # Trio's rule: an async function that can block is a checkpoint. A
    # consumer whose scope is cancelled must not go on taking buffered items.
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            peer, connection = await _connected(nursery)
            client = connection.get_client(Numbers)
            async with tether.open_stream(client.count(10)) as items:
                call = await peer.receive()
                assert type(await peer.receive()) is Credit
                for i in range(10):
                    await peer.send(Item(call.id, i))
                # A unary call reads them all while it waits for its reply.
                async with trio.open_nursery() as inner:
                    inner.start_soon(client.add, 1, 2)
                    unary = await peer.receive()
                    assert type(unary) is Call
                    await peer.send(Result(unary.id, 3))
                assert await anext(items) == 0
                taken = []
                with trio.CancelScope() as scope:
                    scope.cancel()
                    async for item in items:
                        taken.append(item)
                assert taken == []
            assert await peer.receive() == Cancel(call.id)
            nursery.cancel_scope.cancel()


async def test_a_stream_opened_in_a_cancelled_scope_sends_nothing() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            peer, connection = await _connected(nursery)
            client = connection.get_client(Numbers)
            with trio.CancelScope() as scope:
                scope.cancel()
                async with tether.open_stream(client.count(3)):
                    pytest.fail("the block must not run")  # pragma: no cover
            with trio.CancelScope() as scope:
                scope.cancel()
                await client.total(_numbers(3))
            assert connection.statistics().open_streams == 0
            # The next thing the backend hears is the next call.
            nursery.start_soon(client.add, 1, 2)
            message = await peer.receive()
            assert type(message) is Call
            assert message.op == "add"
            nursery.cancel_scope.cancel()


async def _collect(stream: tether.Stream[int], into: list[int]) -> None:
    async with tether.open_stream(stream) as items:
        async for item in items:
            into.append(item)


async def _numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def test_a_stream_call_opens_once() -> None:
    with trio.fail_after(5):
        async with memory.connect(_manager(), interfaces=[Numbers]) as backend:
            client = backend.get_client(Numbers)
            call = client.count(2)
            async with tether.open_stream(call) as items:
                assert [item async for item in items] == [0, 1]
            with pytest.raises(RuntimeError, match="opened already"):
                async with tether.open_stream(call):
                    pass  # pragma: no cover
            with pytest.raises(TypeError, match="open_stream"):
                aiter(client.count(1))


async def test_huge_ready_from_a_backend_is_credit() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            peer, connection = await _connected(nursery)
            client = connection.get_client(Numbers)

            async def upload() -> int:
                return await client.total(_numbers(5))

            result: list[int] = []

            async def run() -> None:
                result.append(await upload())

            nursery.start_soon(run)
            call = await peer.receive()
            assert type(call) is Call
            await peer.send(Ready(call.id, 2**63 - 1, 2**63 - 1))
            await peer.send(Ready(call.id, 2**63 - 1, 2**63 - 1))
            sent = [await peer.receive() for _ in range(6)]
            # No `credit`: a client stream's caller takes one value, no items.
            assert sent == [*(Send(call.id, i) for i in range(5)), End(call.id)]
            await peer.send(Result(call.id, 10))
            await trio.testing.wait_all_tasks_blocked()
            assert result == [10]
            assert math.isfinite(connection.statistics().open_streams)
            nursery.cancel_scope.cancel()


async def test_a_stream_call_over_the_size_limit_sends_nothing_not_even_cancel() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            peer, connection = await _connected(nursery, max_message_size=1000)
            client = connection.get_client(Numbers)
            with pytest.raises(tether.PayloadTooLarge, match="over this connection's limit"):
                async with tether.open_stream(client.repeat("x" * 2000, 1)):
                    pass  # pragma: no cover
            assert connection.statistics().open_streams == 0
            nursery.start_soon(client.add, 1, 2)
            message = await peer.receive()
            assert type(message) is Call, message
            assert message.op == "add"
            nursery.cancel_scope.cancel()


# -- deadlines ----------------------------------------------------------------------


class Slow(NumbersImpl):
    def __init__(self) -> None:
        super().__init__()
        self.closed = trio.Event()

    async def count(self, n: int) -> AsyncIterator[int]:
        try:
            for i in range(n):
                yield i
                await trio.sleep(1)
        finally:
            self.closed.set()

    async def total(self, values: tether.Stream[int]) -> int:
        try:
            return sum([value async for value in values])
        finally:
            self.closed.set()


async def _forever_slowly() -> AsyncIterator[int]:
    i = 0
    while True:
        yield i
        i += 1
        await trio.sleep(1)


async def test_the_callers_own_deadline_mid_stream_is_a_clean_trio_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    impl = Slow()
    async with memory.connect(_manager(impl), interfaces=[Numbers]) as backend:
        client = backend.get_client(Numbers)
        got: list[int] = []
        with pytest.raises(trio.TooSlowError), trio.fail_after(5.5):
            await _collect(client.count(100), got)
        assert got == [0, 1, 2, 3, 4, 5]
        with trio.fail_after(1):
            await impl.closed.wait()
        # A client stream the same way: its own deadline, a clean timeout.
        impl.closed = trio.Event()
        with trio.move_on_after(3.5) as scope:
            await client.total(_forever_slowly())
        assert scope.cancelled_caught
        with trio.fail_after(1):
            await impl.closed.wait()
        assert backend.statistics().open_streams == 0


async def test_the_backends_shorter_deadline_mid_stream_is_deadline_exceeded(
    autojump_clock: trio.abc.Clock,
) -> None:
    impl = Slow()
    manager = _manager(impl)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            peer = await _serving(nursery, manager)
            # A frontend whose call says 2.5 s: the generator is cancelled then.
            await peer.send(_call(1, "count", [100], timeout_ms=2500))
            await peer.send(Credit(1, 100, 1 << 20))
            replies = [await peer.receive() for _ in range(4)]
            assert replies[:3] == [Item(1, 0), Item(1, 1), Item(1, 2)]
            error = replies[3]
            assert type(error) is Error
            assert error.error.code == "deadline-exceeded"
            await impl.closed.wait()
            await peer.still_answers(2)
            nursery.cancel_scope.cancel()


async def test_deadline_exceeded_from_the_backend_before_the_callers_deadline_is_raised() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            peer, connection = await _connected(nursery)
            client = connection.get_client(Numbers)
            got: list[int] = []

            async def backend_gives_up() -> None:
                call = await peer.receive()
                assert type(await peer.receive()) is Credit
                await peer.send(Item(call.id, 0))
                exc = tether.DeadlineExceeded("too slow", activity_id="a")
                await peer.send(Error(call.id, error_info(exc, "a", development_mode=False)))

            nursery.start_soon(backend_gives_up)
            with pytest.raises(tether.DeadlineExceeded), trio.move_on_after(1000):
                await _collect(client.count(10), got)
            assert got == [0]
            nursery.cancel_scope.cancel()


# -- cancellation and teardown ---------------------------------------------------------


async def test_leaving_the_block_while_the_pump_waits_in_the_source() -> None:
    closed = trio.Event()
    waiting = trio.Event()

    async def stuck() -> AsyncIterator[int]:
        try:
            yield 1
            waiting.set()
            await trio.sleep_forever()
            yield 2  # pragma: no cover
        finally:
            closed.set()

    impl = NumbersImpl()
    with trio.fail_after(5):
        async with memory.connect(_manager(impl), interfaces=[Numbers]) as backend:
            client = backend.get_client(Numbers)
            async with tether.open_stream(client.scale(3, stuck())) as items:
                assert await anext(items) == 3
                await waiting.wait()
            assert closed.is_set()
            assert backend.statistics().open_streams == 0
            await trio.testing.wait_all_tasks_blocked()
            assert await client.add(1, 1) == 2


class SourceBroke(Exception):
    pass


async def test_a_source_that_raises_raises_from_the_call_as_itself() -> None:
    async def broken() -> AsyncIterator[int]:
        yield 1
        raise SourceBroke("the disk went away")

    impl = Slow()
    with trio.fail_after(5):
        async with memory.connect(_manager(impl), interfaces=[Numbers]) as backend:
            client = backend.get_client(Numbers)
            with pytest.raises(SourceBroke, match="disk"):
                await client.total(broken())
            await impl.closed.wait()
            with pytest.raises(SourceBroke, match="disk"):
                await _collect(client.scale(2, broken()), [])
            await trio.testing.wait_all_tasks_blocked()
            assert backend.statistics().open_streams == 0
            assert await client.add(1, 1) == 2


class Refuses(NumbersImpl):
    async def total(self, values: tether.Stream[int]) -> int:
        async for value in values:
            if value == 3:
                raise tether.InvalidRequest("three is not a number I take")
        return 0  # pragma: no cover


async def test_an_impl_that_raises_while_the_caller_still_sends() -> None:
    closed = trio.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    with trio.fail_after(5):
        async with memory.connect(_manager(Refuses()), interfaces=[Numbers]) as backend:
            client = backend.get_client(Numbers)
            with pytest.raises(tether.InvalidRequest, match="three"):
                await client.total(endless())
            assert closed.is_set()
            assert backend.statistics().open_streams == 0
            assert await client.add(1, 1) == 2


@pytest.mark.parametrize("phase", ["consumer", "pump", "upload"])
async def test_the_connection_dropping_in_each_phase_ends_the_stream(phase: str) -> None:
    impl = Slow()
    manager = _manager(impl)
    client_end, server_end = stream_pair()

    async def silent() -> AsyncIterator[int]:
        yield 1
        await trio.sleep_forever()
        yield 2  # pragma: no cover

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            server = trio.CancelScope()

            async def serve() -> None:
                with server:
                    await serve_rpc_session(manager, server_end)

            nursery.start_soon(serve)
            async with open_rpc_connection(client_end, interfaces=[Numbers]) as connection:
                client = connection.get_client(Numbers)
                if phase == "upload":
                    async with trio.open_nursery() as inner:
                        inner.start_soon(_cancel_when_blocked, server)
                        with pytest.raises(tether.ConnectionClosed):
                            await client.total(silent())
                if phase != "upload":
                    source = silent() if phase == "pump" else None
                    call = client.scale(1, source) if source is not None else client.count(100)
                    with pytest.raises(tether.ConnectionClosed):
                        await _drop_mid_stream(call, server)
                with pytest.raises(tether.ConnectionClosed):
                    await client.add(1, 1)
                assert connection.statistics().open_streams == 0
            await impl.closed.wait() if phase != "pump" else None


async def _drop_mid_stream(call: tether.Stream[int], server: trio.CancelScope) -> None:
    async with tether.open_stream(call) as items:
        await anext(items)
        await trio.testing.wait_all_tasks_blocked()
        server.cancel()
        async for _ in items:
            pass


async def _cancel_when_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()
