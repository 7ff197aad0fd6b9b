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

import tether
from tether import BackendIpc, ConnectionState
from tether.runtime import ConnectionClosed
from tether.testing import faulty_streams
from tether.transports import websocket
from tether.transports.websocket._client import _open_stream

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


async def test_grace_expiry_ends_the_session_with_the_reason_on_both_sides() -> None:
    """No connection for the grace period: the backend ends the session (handlers
    told why), and the frontend's resume is refused with that reason: closed,
    calls fail with ConnectionClosed carrying it."""
    runs = Runs()
    backend = make_backend(runs)
    slow = tether.RetryPolicy(attempts=3, initial_backoff=0.6, max_backoff=0.6, jitter=0)
    with trio.fail_after(TIMEOUT), faulty_streams() as faults:
        async with (
            serving(backend, resume_grace=0.3) as url,
            websocket.connect_ipc(url, channels=[Counter], retry=slow) as frontend,
        ):
            assert await frontend.proxy(Counter).bump(1) == 2
            (session,) = backend.sessions
            faults.latest.cut("test cut")
            reason = await session.wait_closed()
            assert reason == "session expired: no connection for 0.3 s"
            assert await frontend.wait_closed() == reason
            with pytest.raises(ConnectionClosed) as caught:
                await frontend.proxy(Counter).bump(2)
            assert caught.value.reason == reason
    assert runs.closed == [reason]
    assert frontend.state is ConnectionState.CLOSED


async def test_spent_tries_close_the_frontend_with_a_reason() -> None:
    """The backend goes away while the frontend is between tries: after
    `attempts` tries the session is closed, and the reason says how many over how long."""
    backend = make_backend(Runs())
    two = tether.RetryPolicy(attempts=2, initial_backoff=0.3, max_backoff=0.3, jitter=0)
    with trio.fail_after(TIMEOUT), faulty_streams() as faults:
        async with trio.open_nursery() as nursery:
            server = trio.CancelScope()

            async def run_server(*, task_status: trio.TaskStatus[str]) -> None:
                with server:
                    await websocket.serve(None, ipc=backend, task_status=task_status)

            url = await nursery.start(run_server)
            async with websocket.connect_ipc(url, channels=[Counter], retry=two) as frontend:
                assert await frontend.proxy(Counter).bump(0) == 1
                faults.latest.cut("test cut")
                await frontend.wait_state_change(ConnectionState.CONNECTED)
                server.cancel()  # gone for good, while the frontend waits to try
                reason = await frontend.wait_closed()
    assert reason.startswith(
        "could not resume the session: no connection to the backend after 2 tries over"
    )
    assert "could not connect to" in reason
    assert frontend.state is ConnectionState.CLOSED


async def _raw_hello(url: str, hello: dict) -> dict:
    """Send `hello` on a fresh socket of our own; return the first answer."""
    async with _open_stream(
        url,
        headers=[],
        max_message_size=1 << 20,
        connect_timeout=5,
        ping_interval=None,
        ping_timeout=5,
        ssl_context=None,
    ) as stream:
        await stream.send_message(
            json.dumps({"t": "hello", "protocol": 1, "mode": "ipc", **hello}).encode()
        )
        return dict(json.loads(await stream.receive_message()))


async def test_a_wrong_or_foreign_token_cannot_take_a_session() -> None:
    """A resuming hello with another session's token, or a made-up one, is
    refused (not-found, saying nothing of the session) and the session carries on."""
    backend = make_backend(Runs())
    with trio.fail_after(TIMEOUT):
        async with (
            serving(backend) as url,
            websocket.connect_ipc(url, channels=[Counter]) as frontend,
        ):
            # Another session, opened by hand: its welcome shows its own token.
            other = await _raw_hello(url, {"channels": {}, "resumable": True})
            assert other["t"] == "welcome"
            assert len(other["resume_token"]) >= 43
            assert other["grace_ms"] == 20000
            for token in (other["resume_token"], "x" * 43, "not-a-token"):
                answer = await _raw_hello(
                    url,
                    {
                        "session_id": frontend.session_id,
                        "channels": {},
                        "resume": {"token": token, "received": 0},
                    },
                )
                assert answer["t"] == "error"
                assert answer["error"]["code"] == "not-found"
                assert "no session to resume with this id and token" in answer["error"]["message"]
            assert await frontend.proxy(Counter).bump(1) == 2
            assert frontend.is_valid
            assert frontend.state is ConnectionState.CONNECTED


async def test_a_full_replay_buffer_ends_the_session_clearly() -> None:
    """The frontend away while the backend sends more than its replay buffer holds
    (invokes of the frontend's channel, here):
    once full for slow_frontend_timeout, the session ends, saying so, on both sides."""
    runs = Runs()
    backend = make_backend(runs)
    backend.slow_frontend_timeout = 0.2
    away = tether.RetryPolicy(attempts=1, initial_backoff=3.0, max_backoff=3.0, jitter=0)
    with trio.fail_after(TIMEOUT), faulty_streams() as faults:
        async with (
            serving(backend, replay_messages=50) as url,
            websocket.connect_ipc(url, channels=[Counter], retry=away) as frontend,
        ):
            assert await frontend.proxy(Counter).bump(1) == 2
            (session,) = backend.sessions
            faults.latest.cut("test cut")
            doubler = session.proxy(Doubler)
            failed: list[BaseException] = []

            async def ask(n: int) -> None:
                try:
                    await doubler.double(n)
                except ConnectionClosed as exc:
                    failed.append(exc)

            async with trio.open_nursery() as asks:
                for n in range(60):  # the 51st waits for room, which never comes
                    asks.start_soon(ask, n)
            assert len(failed) == 60
            reason = await session.wait_closed()
            assert reason.startswith("replay buffer full: 50 messages")
            assert "unacknowledged by the frontend for 0.2 s" in reason
            assert await frontend.wait_closed() == reason
    assert runs.closed == [reason]


async def test_the_http_servers_ws_route_resumes_too() -> None:
    """The HTTP server's {prefix}/ws keeps sessions the same way."""
    from tether.transports import http

    runs = Runs()
    backend = make_backend(runs)
    with trio.fail_after(TIMEOUT), faulty_streams() as faults:
        async with trio.open_nursery() as nursery:
            base = await nursery.start(
                lambda task_status: http.serve(
                    None, "127.0.0.1", 0, ipc=backend, task_status=task_status
                )
            )
            url = base.replace("http://", "ws://").rstrip("/") + "/ws"
            async with websocket.connect_ipc(url, channels=[Counter], retry=FAST) as frontend:
                listener = Listener(100)
                frontend.add_notification_handler(listener)
                counter = frontend.proxy(Counter)
                assert await counter.bump(1) == 2
                faults.latest.cut("test cut")
                assert await counter.bump(2) == 3
                assert await counter.burst(100) == 100
                await listener.reached[100].wait()
                assert listener.seen == list(range(100))
                assert len(faults.streams) == 2
            nursery.cancel_scope.cancel()
    assert runs.bumps == [1, 2]
