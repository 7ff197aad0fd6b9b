"""A WebSocket RPC client between calls: it reads its own socket, and must go on doing so.

Real `websocket.serve` on 127.0.0.1 and the real client; short keepalive
settings so that an unanswered ping shows within a second.
"""

from __future__ import annotations

import functools
import logging

import trio
import trio.testing
from test_websocket import _PingWatch, _TrioWebSocketLog

import tether
from tether.transports import websocket

TIMEOUT = 10


class Slow(tether.RpcInterface):
    interface_name = "IdleReading.Slow"
    interface_version = "1.0.0"

    async def late(self) -> str: ...

    async def quick(self, n: int) -> int: ...


class SlowImpl(Slow):
    started: trio.Event
    release: trio.Event
    replied: trio.Event

    async def late(self) -> str:
        # Ignores the caller's cancel: its reply reaches a client that gave up.
        self.started.set()
        with trio.CancelScope(shield=True):
            await self.release.wait()
        return "too late"

    async def quick(self, n: int) -> int:
        return n + 1


async def test_a_late_reply_to_an_idle_client_does_not_stop_it_answering_pings() -> None:
    SlowImpl.started = trio.Event()
    SlowImpl.release = trio.Event()
    manager = tether.RpcManager()
    manager.register_impl(Slow, SlowImpl)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as server:
            url = await server.start(
                functools.partial(websocket.serve, manager, ping_interval=0.2, ping_timeout=0.3)
            )
            async with websocket.connect(
                url, interfaces=[Slow], ping_interval=0.2, ping_timeout=0.3
            ) as backend:
                client = backend.get_client(Slow)
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as calls:
                        calls.start_soon(client.late)
                        await SlowImpl.started.wait()
                        scope.cancel()
                # The late reply arrives while no call reads. Then, with no call,
                # the client must go on answering the server's pings (every
                # 0.2 s, each to be answered within 0.3 s): count eight of them.
                watch = _PingWatch(wanted=8)
                handler = _TrioWebSocketLog(watch)
                logger = logging.getLogger("trio-websocket")
                level = logger.level
                logger.setLevel(logging.DEBUG)
                logger.addHandler(handler)
                try:
                    SlowImpl.release.set()
                    with trio.fail_after(5):
                        await watch.done.wait()
                finally:
                    logger.removeHandler(handler)
                    logger.setLevel(level)
                assert watch.closes == []
                assert await client.quick(1) == 2
            server.cancel_scope.cancel()
