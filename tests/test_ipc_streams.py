"""IPC streams below the conformance suite: windows, and a peer that breaks the credit rules.

The other side here is a raw peer speaking the wire (docs/wire.md) over an
in-process MessageStream, so it can do what tether never does: send past its
credit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

import tether
from tether.runtime import MessageStream, open_ipc_connection, serve_ipc_session
from tether.runtime._protocol import (
    PROTOCOL_VERSION,
    Cancel,
    Credit,
    Error,
    Hello,
    Invoke,
    Item,
    Message,
    Ready,
    Result,
    Send,
    Welcome,
    decode,
    encode,
)
from tether.transports import http, local, memory, websocket
from tether.transports.memory._streams import stream_pair

TIMEOUT = 10.0


class Counter(tether.IpcInterface):
    channel_name = "stream-engine-test"
    version = "1.0.0"

    def count(self, n: int) -> tether.Stream[int]: ...

    async def total(self, xs: tether.Stream[int]) -> int: ...


class CounterHandler(tether.IpcHandler, Counter):
    go = trio.Event()
    finished = trio.Event()

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    async def total(self, xs: tether.Stream[int]) -> int:
        try:
            # Reads nothing until the test says so: what comes meanwhile is buffered.
            await CounterHandler.go.wait()
            return sum([x async for x in xs])
        finally:
            CounterHandler.finished.set()


async def receive(stream: MessageStream) -> Message:
    return decode(await stream.receive_message())


async def send(stream: MessageStream, message: Message) -> None:
    await stream.send_message(encode(message))


# -- windows -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, 256, (256, 1024), None, "256"])
async def test_a_stream_window_that_is_not_a_stream_window_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"stream_window must be a tether\.StreamWindow"):
        tether.BackendIpc(stream_window=bad)
    connects = [
        memory.connect_ipc(tether.BackendIpc(), stream_window=bad),
        websocket.connect_ipc("ws://127.0.0.1:9/", stream_window=bad),
        local.connect_ipc("/nonexistent/tether.sock", stream_window=bad),
        http.connect_ipc("http://127.0.0.1:9/", stream_window=bad),
    ]
    with trio.fail_after(TIMEOUT):
        for connect in connects:
            # Refused before anything is connected to.
            with pytest.raises(ValueError, match="stream_window"):
                async with connect:
                    pass  # pragma: no cover


@pytest.mark.parametrize(
    ("items", "size"), [(0, 1), (1, 0), (-1, 10), (True, 10)], ids=["items", "bytes", "neg", "bool"]
)
def test_a_stream_window_of_no_items_or_bytes_is_refused(items: Any, size: Any) -> None:
    with pytest.raises(ValueError, match="must be a positive int"):
        tether.StreamWindow(items=items, bytes=size)


async def test_the_windows_default_to_256_items_and_4_mib() -> None:
    assert tether.BackendIpc().stream_window == tether.StreamWindow(256, 4 * 1024 * 1024)
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(tether.BackendIpc()) as frontend:
            assert frontend._peer.stream_window == tether.StreamWindow()


# -- a peer that sends past its credit -----------------------------------------------------


async def _fake_backend_handshake(stream: MessageStream) -> None:
    hello = await receive(stream)
    assert isinstance(hello, Hello)
    await stream.send_message(
        encode(Welcome(PROTOCOL_VERSION, "fake-session", {Counter.channel_name: "1.0.0"}))
    )


async def test_a_backend_sending_items_past_the_credit_fails_only_that_stream() -> None:
    client_end, server_end = stream_pair()
    window = tether.StreamWindow(items=2, bytes=1024 * 1024)
    seen: list[int] = []
    cancelled = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def fake_backend() -> None:
                await _fake_backend_handshake(server_end)
                invoke = await receive(server_end)
                assert isinstance(invoke, Invoke)
                assert invoke.method == "count"
                credit = await receive(server_end)
                assert credit == Credit(invoke.id, 2, 1024 * 1024)
                for i in range(3):  # one past the credit
                    await send(server_end, Item(invoke.id, i))
                # The frontend's reader cancels the invoke at once.
                assert await receive(server_end) == Cancel(invoke.id)
                cancelled.set()
                # The session goes on: the next stream is served.
                invoke = await receive(server_end)
                assert isinstance(invoke, Invoke)
                await receive(server_end)  # its credit
                await send(server_end, Item(invoke.id, 7))
                await send(server_end, Result(invoke.id, None))

            nursery.start_soon(fake_backend)
            async with open_ipc_connection(client_end, stream_window=window) as frontend:
                proxy = frontend.proxy(Counter)

                async def consume() -> None:
                    async with tether.open_stream(proxy.count(10)) as items:
                        await cancelled.wait()
                        async for x in items:
                            seen.append(x)

                with pytest.raises(tether.InvalidRequest, match="past its credit"):
                    await consume()
                async with tether.open_stream(proxy.count(1)) as items:
                    assert [x async for x in items] == [7]
                assert frontend.is_valid
    assert seen == [0, 1]


async def test_a_frontend_sending_items_past_the_credit_fails_only_that_invoke() -> None:
    backend = tether.BackendIpc(stream_window=tether.StreamWindow(items=2, bytes=1024 * 1024))
    backend.register(CounterHandler)
    CounterHandler.finished = trio.Event()
    CounterHandler.go = trio.Event()
    client_end, server_end = stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_ipc_session, backend, server_end)
            await send(client_end, Hello(PROTOCOL_VERSION, None, None, None, {}, mode="ipc"))
            assert isinstance(await receive(client_end), Welcome)
            await send(client_end, Invoke(1, Counter.channel_name, "total", [None]))
            assert await receive(client_end) == Ready(1, 2, 1024 * 1024)
            for i in range(3):  # one past the credit
                await send(client_end, Send(1, i))
            refused = await receive(client_end)
            assert isinstance(refused, Error)
            assert refused.id == 1
            assert refused.error.code == "bad-request"
            assert "past its credit" in refused.error.message
            await CounterHandler.finished.wait()
            # Late messages for that invoke are dropped; the session serves on.
            await send(client_end, Send(1, 5))
            await send(client_end, Invoke(2, Counter.channel_name, "count", [2]))
            await send(client_end, Credit(2, 8, 1024 * 1024))
            assert [await receive(client_end) for _ in range(3)] == [
                Item(2, 0),
                Item(2, 1),
                Result(2, None),
            ]
            await client_end.aclose()
