"""IPC over WebSocket survives a dropped socket: the session resumes, nothing
lost or delivered twice either way; after the grace period it ends with a reason
on both sides; a wrong token cannot take a session; the replay bound ends it.

Real trio-websocket servers (and the HTTP server's /ws route) on 127.0.0.1,
port 0; the socket is cut with `tether.testing.faulty_streams()`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio_websocket

import tether
from tether import BackendIpc, ConnectionState
from tether.runtime import ConnectionClosed
from tether.testing import faulty_streams
from tether.transports import websocket

TIMEOUT = 20
FAST = tether.RetryPolicy(attempts=20, initial_backoff=0.01, max_backoff=0.05)


class Counter(tether.IpcInterface):
    channel_name = "test.resume"
    version = "1.0.0"

    async def bump(self, n: int) -> int: ...
    async def burst(self, count: int) -> int: ...
    async def ask_frontend(self, count: int) -> int: ...


class Ticks(tether.NotificationInterface):
    channel_name = "test.resume.ticks"

    async def tick(self, n: int) -> None: ...


class Doubler(tether.IpcInterface):
    channel_name = "test.resume.frontend"
    version = "1.0.0"

    async def double(self, n: int) -> int: ...


class DoublerImpl(tether.IpcHandler, Doubler):
    def __init__(self) -> None:
        self.runs: list[int] = []

    async def double(self, n: int) -> int:
        self.runs.append(n)
        return 2 * n


class Runs:
    def __init__(self) -> None:
        self.bumps: list[int] = []
        self.closed: list[str] = []


def make_backend(runs: Runs) -> BackendIpc:
    backend = BackendIpc()

    class CounterImpl(tether.IpcHandler, Counter):
        async def bump(self, n: int) -> int:
            runs.bumps.append(n)
            return n + 1

        async def burst(self, count: int) -> int:
            ticks = tether.current_session().notifier(Ticks)
            for n in range(count):
                await ticks.tick(n)
            return count

        async def ask_frontend(self, count: int) -> int:
            doubler = tether.current_session().proxy(Doubler)
            total = 0
            for n in range(count):
                total += await doubler.double(n)
            return total

        def on_close(self, reason: str) -> None:
            runs.closed.append(reason)

    backend.register(CounterImpl)
    return backend


@asynccontextmanager
async def serving(backend: BackendIpc, **settings: object) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: websocket.serve(
                None, "127.0.0.1", 0, ipc=backend, task_status=task_status, **settings
            )
        )
        try:
            yield url
        finally:
            nursery.cancel_scope.cancel()


class Listener(tether.NotificationHandler, Ticks):
    def __init__(self, *marks: int) -> None:
        self.seen: list[int] = []
        #: Set once that many notifications were seen.
        self.reached = {mark: trio.Event() for mark in marks}

    async def tick(self, n: int) -> None:
        self.seen.append(n)
        event = self.reached.get(len(self.seen))
        if event is not None:
            event.set()


async def test_cuts_during_bursts_both_ways_lose_and_repeat_nothing() -> None:
    """Cut three times during notifications, invokes to the backend and to the
    frontend: every notification once in order, every invoke answered once,
    every impl run once, and the state goes RECONNECTING -> CONNECTED."""
    runs = Runs()
    backend = make_backend(runs)
    count = 3000
    with trio.fail_after(TIMEOUT), faulty_streams() as faults:
        async with (
            serving(backend) as url,
            websocket.connect_ipc(url, channels=[Counter], retry=FAST) as frontend,
        ):
            marks = [cut * count // 4 for cut in range(1, 4)]
            listener = Listener(*marks, count)
            frontend.add_notification_handler(listener)
            doubler = DoublerImpl()
            frontend.register(doubler)
            counter = frontend.proxy(Counter)
            states: list[ConnectionState] = []

            async def watch() -> None:
                state = frontend.state
                while state is not ConnectionState.CLOSED:
                    state = await frontend.wait_state_change(state)
                    states.append(state)

            answers: list[int] = []
            bumped = trio.Event()

            async def bumps() -> None:
                for n in range(300):
                    answers.append(await counter.bump(n))
                bumped.set()

            async def cutter() -> None:
                for cut, mark in enumerate(marks, 1):
                    await listener.reached[mark].wait()
                    faults.latest.cut(f"test cut {cut}")
                    await faults.wait_opened(cut + 1)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                nursery.start_soon(cutter)
                nursery.start_soon(bumps)
                assert await counter.burst(count) == count
                assert await counter.ask_frontend(200) == sum(2 * n for n in range(200))
                await listener.reached[count].wait()
                await bumped.wait()
                nursery.cancel_scope.cancel()
            assert listener.seen == list(range(count))
            assert answers == [n + 1 for n in range(300)]
            assert runs.bumps == list(range(300))
            assert doubler.runs == list(range(200))
            assert frontend.is_valid
            assert sum(s.cuts for s in faults.streams) == 3
            assert states.count(ConnectionState.RECONNECTING) == 3
            assert states.count(ConnectionState.CONNECTED) == 3
            assert frontend.state is ConnectionState.CONNECTED
