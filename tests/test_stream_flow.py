"""A slow consumer holds a fast producer at the window, and the server's memory stays flat.

Issue 14: "a consumer that reads one item per second while the producer could
make 100,000 per second holds the server's memory flat". In-process, the
consumer's second is virtual (`autojump_clock`); over WebSocket, real sockets
carry the items and the consumer takes one every millisecond.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest
import trio

import tether
from tether.runtime import RpcBackend
from tether.transports import memory, websocket

#: Bytes the traced memory may grow by while thousands more items go through.
FLAT = 64 * 1024


class Ticker(tether.RpcInterface):
    interface_name = "test.FlowTicker"
    interface_version = "1.0.0"

    def ticks(self) -> tether.Stream[str]: ...


class TickerImpl(Ticker):
    """A producer with no wait of its own: only the stream's credit holds it."""

    def __init__(self) -> None:
        self.produced = 0

    async def ticks(self) -> AsyncIterator[str]:
        while True:
            yield f"tick {self.produced:08d} " + "x" * 100
            self.produced += 1  # the stream took it


async def _rate(produce: Callable[[], AsyncIterator[str]]) -> float:
    """Items per second the producer makes when nothing holds it."""
    generator = produce()
    start = time.perf_counter()
    for _ in range(20_000):
        await anext(generator)
    await generator.aclose()  # type: ignore[attr-defined]
    return 20_000 / (time.perf_counter() - start)


async def _slow_consumer(
    impl: TickerImpl,
    opened: AbstractAsyncContextManager[RpcBackend],
    window: tether.StreamWindow,
    *,
    items: int,
    every: float,
    warm_up: int,
) -> int:
    """Take `items` one by one, `every` seconds apart; return the traced memory's growth."""
    async with opened as backend:
        client = backend.get_client(Ticker)
        async with tether.open_stream(client.ticks()) as ticks:
            consumed = 0
            baseline = 0
            async for tick in ticks:
                assert tick.startswith(f"tick {consumed:08d}")
                consumed += 1
                assert impl.produced <= window.items + consumed
                if consumed == warm_up:
                    baseline = tracemalloc.get_traced_memory()[0]
                if consumed == items:
                    break
                await trio.sleep(every)
            grown = tracemalloc.get_traced_memory()[0] - baseline
    assert impl.produced <= window.items + consumed
    return grown


@pytest.fixture
def traced() -> AsyncIterator[None]:
    tracemalloc.start()
    try:
        yield None
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("window", [tether.StreamWindow(items=16), tether.StreamWindow()])
async def test_in_process_one_item_per_second(
    autojump_clock: trio.abc.Clock, traced: None, window: tether.StreamWindow
) -> None:
    impl = TickerImpl()
    # Alone, the producer makes more than 100,000 items a second.
    assert await _rate(TickerImpl().ticks) > 100_000
    manager = tether.RpcManager()
    manager.register_impl(Ticker, impl)
    with trio.fail_after(10_000):  # virtual seconds: the consumer's pace
        grown = await _slow_consumer(
            impl,
            memory.connect(manager, interfaces=[Ticker], stream_window=window),
            window,
            items=window.items + 3000,
            every=1.0,
            warm_up=window.items + 200,
        )
    assert grown < FLAT, f"the traced memory grew by {grown} bytes"


async def test_websocket_one_item_per_millisecond(traced: None) -> None:
    window = tether.StreamWindow(items=32)
    impl = TickerImpl()
    manager = tether.RpcManager()
    manager.register_impl(Ticker, impl)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                lambda task_status: websocket.serve(
                    manager, "127.0.0.1", 0, task_status=task_status
                )
            )
            grown = await _slow_consumer(
                impl,
                websocket.connect(url, interfaces=[Ticker], stream_window=window),
                window,
                items=1500,
                every=0.001,
                warm_up=300,
            )
            nursery.cancel_scope.cancel()
    assert grown < FLAT, f"the traced memory grew by {grown} bytes"
