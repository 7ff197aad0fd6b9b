"""RPC streams over a MessageStream, message by message: one side real, the other a test peer.

The conformance suite (tether.testing) checks what every transport does; these
check the protocol's rules where only a peer that breaks them, or a test that
watches every message, can show them: credit in half-window batches, items
past credit, late messages for finished calls, `max_in_flight`, and the
pump reading for itself when it is the only task waiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

import tether
from tether.runtime import (
    ClientOptions,
    InvalidRequest,
    MessageStream,
    StreamWindow,
    open_rpc_connection,
    serve_rpc_session,
)
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
from tether.transports import local, memory, websocket
from tether.transports.memory._streams import stream_pair


class Numbers(tether.RpcInterface):
    interface_name = "test.StreamNumbers"
    interface_version = "1.0.0"

    def count(self, n: int) -> tether.Stream[int]: ...
    async def total(self, values: tether.Stream[int]) -> int: ...
    def scale(self, factor: int, values: tether.Stream[int]) -> tether.Stream[int]: ...
    async def add(self, a: int, b: int) -> int: ...
    async def hold(self, values: tether.Stream[int]) -> int: ...


class NumbersImpl(Numbers):
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

    async def hold(self, values: tether.Stream[int]) -> int:
        await trio.sleep_forever()  # never reads its stream
        return 0  # pragma: no cover


def _manager(**kwargs: Any) -> tether.RpcManager:
    manager = tether.RpcManager(**kwargs)
    manager.register_impl(Numbers, NumbersImpl())
    return manager


async def _numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


class Peer:
    """The test's end of a MessageStream: it sends and reads decoded messages."""

    def __init__(self, stream: MessageStream) -> None:
        self.stream = stream

    async def send(self, message: Message) -> None:
        await self.stream.send_message(encode(message))

    async def receive(self) -> Message:
        return decode(await self.stream.receive_message())

    async def welcome(self) -> None:
        """Play a backend's handshake."""
        assert type(await self.receive()) is Hello
        info = InterfaceInfo(Numbers.interface_version, tuple(Numbers.__tether_operations__))
        await self.send(Welcome(PROTOCOL_VERSION, "s1", interfaces={Numbers.interface_name: info}))


# -- windows -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [5, None, (256, 1024), "big"])
def test_a_stream_window_must_be_a_stream_window(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"stream_window must be a tether.StreamWindow"):
        ClientOptions(stream_window=bad)
    with pytest.raises(ValueError, match=r"stream_window must be a tether.StreamWindow"):
        tether.RpcManager(stream_window=bad)


@pytest.mark.parametrize(("items", "size"), [(0, 10), (-1, 10), (10, 0), (True, 10)])
def test_a_stream_window_takes_positive_ints(items: Any, size: Any) -> None:
    with pytest.raises(ValueError, match=r"(items|bytes) must be a positive int"):
        StreamWindow(items=items, bytes=size)


async def test_connect_refuses_a_bad_stream_window_before_connecting() -> None:
    with trio.fail_after(5):
        for connect in (
            lambda: memory.connect(_manager(), interfaces=[Numbers], stream_window=8),  # type: ignore[arg-type]
            lambda: websocket.connect("ws://127.0.0.1:9/", interfaces=[Numbers], stream_window=8),  # type: ignore[arg-type]
            lambda: local.connect(
                "/nonexistent/tether.sock", interfaces=[Numbers], stream_window=8
            ),  # type: ignore[arg-type]
        ):
            with pytest.raises(ValueError, match="stream_window"):
                async with connect():
                    pass  # pragma: no cover - refused


# -- the caller's side, against a test backend ------------------------------------


async def test_the_caller_grants_its_window_then_half_windows_as_it_takes() -> None:
    window = StreamWindow(items=8, bytes=1 << 30)
    client_end, server_end = stream_pair()
    peer = Peer(server_end)
    credits: list[tuple[int, int]] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.welcome)
            options = ClientOptions(stream_window=window)
            async with open_rpc_connection(
                client_end, interfaces=[Numbers], options=options
            ) as connection:
                client = connection.get_client(Numbers)
                async with tether.open_stream(client.count(20)) as items:
                    call = await peer.receive()
                    assert type(call) is Call
                    first = await peer.receive()
                    assert first == Credit(call.id, 8, 1 << 30)
                    sent = 0
                    for _ in range(8):  # the whole window, at once
                        await peer.send(Item(call.id, sent))
                        sent += 1
                    for taken in range(1, 21):
                        assert await anext(items) == taken - 1
                        if taken % 4 == 0:
                            credit = await peer.receive()
                            assert type(credit) is Credit
                            assert credit.items == 4
                            credits.append((credit.items, credit.bytes))
                            for _ in range(credit.items):
                                if sent < 20:
                                    await peer.send(Item(call.id, sent))
                                    sent += 1
                    await peer.send(Result(call.id, None))
                    with pytest.raises(StopAsyncIteration):
                        await anext(items)
    assert len(credits) == 5


async def test_an_item_past_credit_fails_that_stream_and_cancels_the_call() -> None:
    window = StreamWindow(items=2)
    client_end, server_end = stream_pair()
    peer = Peer(server_end)
    got: list[int] = []
    added: list[int] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.welcome)
            async with open_rpc_connection(
                client_end, interfaces=[Numbers], options=ClientOptions(stream_window=window)
            ) as connection:
                client = connection.get_client(Numbers)

                answered = trio.Event()

                async def add() -> None:
                    added.append(await client.add(1, 2))
                    answered.set()

                async with tether.open_stream(client.count(10)) as items:
                    call = await peer.receive()
                    assert await peer.receive() == Credit(call.id, 2, window.bytes)
                    for i in range(3):  # one past the window
                        await peer.send(Item(call.id, i))
                    # A unary call reads them while it waits for its reply.
                    nursery.start_soon(add)
                    unary = await peer.receive()
                    assert type(unary) is Call
                    await peer.send(Result(unary.id, 3))
                    await answered.wait()  # it has read the three items
                    with pytest.raises(InvalidRequest, match="past its credit"):
                        await _drain(items, got)
                while type(message := await peer.receive()) is Credit:
                    pass
                assert message == Cancel(call.id)
                # Late news for it is dropped; the connection goes on.
                await peer.send(Item(call.id, 99))
                await peer.send(Ready(call.id, 5, 5))

                async def answer() -> None:
                    unary = await peer.receive()
                    assert type(unary) is Call
                    await peer.send(Result(unary.id, 4))

                nursery.start_soon(answer)
                assert await client.add(2, 2) == 4
    assert got == [0, 1]  # what came within the window was delivered
    assert added == [3]


async def _drain(items: AsyncIterator[Any], into: list[Any]) -> None:
    async for item in items:
        into.append(item)


async def test_a_stream_counts_as_one_call_against_max_in_flight() -> None:
    client_end, server_end = stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_rpc_session, _manager(), server_end)
            async with open_rpc_connection(
                client_end, interfaces=[Numbers], max_in_flight=1
            ) as connection:
                client = connection.get_client(Numbers)
                done = trio.Event()

                async def add() -> None:
                    assert await client.add(1, 2) == 3
                    done.set()

                async with tether.open_stream(client.count(3)) as items:
                    assert await anext(items) == 0
                    assert connection.statistics().open_streams == 1
                    nursery.start_soon(add)
                    await trio.testing.wait_all_tasks_blocked()
                    assert not done.is_set()  # waiting for the stream's place
                await done.wait()
                assert connection.statistics().open_streams == 0


async def test_the_pump_reads_for_itself_when_it_is_the_only_task_waiting() -> None:
    # The block's body waits for the source to end without reading its items:
    # only the pump, waiting for `ready` credit, reads the connection.
    exhausted = trio.Event()

    async def source() -> AsyncIterator[int]:
        for i in range(40):
            yield i
        exhausted.set()

    manager = _manager(stream_window=StreamWindow(items=4))
    with trio.fail_after(5):
        async with memory.connect(
            manager, interfaces=[Numbers], stream_window=StreamWindow(items=64)
        ) as backend:
            client = backend.get_client(Numbers)
            async with tether.open_stream(client.scale(2, source())) as items:
                await exhausted.wait()
                assert [item async for item in items] == [2 * i for i in range(40)]


# -- the callee's side, against a test frontend -----------------------------------


def _call(call_id: int, op: str, args: list[Any]) -> Call:
    return Call(
        call_id,
        Numbers.interface_name,
        Numbers.interface_version,
        op,
        args,
        CallContext("test-activity"),
        None,
    )


async def test_a_send_past_credit_fails_the_call_with_invalid_request() -> None:
    client_end, server_end = stream_pair()
    peer = Peer(client_end)
    manager = _manager(stream_window=StreamWindow(items=2))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_rpc_session, manager, server_end)
            await peer.send(Hello(PROTOCOL_VERSION))
            assert type(await peer.receive()) is Welcome
            await peer.send(_call(1, "hold", [None]))
            assert await peer.receive() == Ready(1, 2, StreamWindow().bytes)
            for i in range(3):
                await peer.send(Send(1, i))
            reply = await peer.receive()
            assert type(reply) is Error
            assert reply.id == 1
            assert reply.error.code == "bad-request"
            assert "past its credit" in reply.error.message
            assert reply.error.activity_id == "test-activity"
            # Late messages for it, and for ids never seen, are dropped.
            await peer.send(Send(1, 5))
            await peer.send(End(1))
            await peer.send(Credit(77, 1, 1))
            await peer.send(_call(2, "add", [2, 3]))
            assert await peer.receive() == Result(2, 5)
            assert manager.statistics().open_streams == 0
            await client_end.aclose()


async def test_the_callee_waits_for_credit_before_each_item() -> None:
    client_end, server_end = stream_pair()
    peer = Peer(client_end)
    manager = _manager()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_rpc_session, manager, server_end)
            await peer.send(Hello(PROTOCOL_VERSION))
            assert type(await peer.receive()) is Welcome
            await peer.send(_call(1, "count", [5]))
            await trio.testing.wait_all_tasks_blocked()
            assert manager.statistics().open_streams == 1  # waiting: nothing sent
            await peer.send(Credit(1, 2, 1 << 20))
            assert await peer.receive() == Item(1, 0)
            assert await peer.receive() == Item(1, 1)
            await peer.send(Credit(1, 10, 1 << 20))
            assert [await peer.receive() for _ in range(3)] == [Item(1, 2), Item(1, 3), Item(1, 4)]
            assert await peer.receive() == Result(1, None)
            await client_end.aclose()


async def test_a_cancel_closes_the_generator_and_drops_the_stream() -> None:
    closed = trio.Event()

    class Forever(NumbersImpl):
        async def count(self, n: int) -> AsyncIterator[int]:
            try:
                while True:
                    yield n
            finally:
                closed.set()

    manager = tether.RpcManager()
    manager.register_impl(Numbers, Forever())
    client_end, server_end = stream_pair()
    peer = Peer(client_end)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_rpc_session, manager, server_end)
            await peer.send(Hello(PROTOCOL_VERSION))
            assert type(await peer.receive()) is Welcome
            await peer.send(_call(1, "count", [7]))
            await peer.send(Credit(1, 1, 1 << 20))
            assert await peer.receive() == Item(1, 7)
            await peer.send(Cancel(1))
            await closed.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert manager.statistics().open_streams == 0
            await peer.send(_call(2, "add", [1, 1]))
            assert await peer.receive() == Result(2, 2)  # no reply for the cancelled one
            await client_end.aclose()


async def test_an_impl_reading_its_stream_when_the_connection_drops_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The impl gets ConnectionClosed from its stream argument: the session is
    # ending, not the impl failing, so nothing is logged as an internal error.
    reading = trio.Event()
    closed: list[str] = []

    class Reader(NumbersImpl):
        async def total(self, values: tether.Stream[int]) -> int:
            reading.set()
            try:
                return sum([value async for value in values])
            except tether.ConnectionClosed as exc:
                closed.append(type(exc).__name__)
                raise

    async def silent() -> AsyncIterator[int]:
        await trio.sleep_forever()
        yield 0  # pragma: no cover

    manager = tether.RpcManager()
    manager.register_impl(Numbers, Reader())
    caplog.set_level("ERROR", logger="tether")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            async with memory.connect(manager, interfaces=[Numbers]) as backend:
                client = backend.get_client(Numbers)

                async def upload() -> None:
                    with pytest.raises(tether.ConnectionClosed):
                        await client.total(silent())

                nursery.start_soon(upload)
                await reading.wait()
            await trio.testing.wait_all_tasks_blocked()
    assert closed == ["ConnectionClosed"]
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
