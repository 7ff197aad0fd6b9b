"""Close reasons that say what happened: a backend that died, a frontend that stalled.

* A backend process killed outright (TCP gone, no close frame: 1006) ends the
  frontend's calls and sessions with a reason that says the connection was
  lost, not that the backend closed it.
* A frontend that stops reading is dropped by hypercorn's `/ws` with the
  documented 1000 "frontend too slow", as by `websocket.serve`, however long
  it stops (hypercorn itself used to close with 1011 and no reason).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
import trio_websocket
from test_websocket import (
    TIMEOUT,
    VARIANTS,
    raw,
    served,
)

import tether
from tether.runtime import PROTOCOL_VERSION, ConnectionClosed
from tether.runtime._protocol import Hello, Invoke, encode
from tether.testing import ConformanceInterface, ConformanceIpc
from tether.transports import websocket
from tether.transports.websocket import _streams

TESTS = Path(__file__).parent


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    """Which server: trio-websocket's (`websocket.serve`) or hypercorn's (`http.serve`)."""
    param: str = request.param
    return param


# ---------------------------------------------------------------------------
# A backend killed outright


@asynccontextmanager
async def backend_process(variant: str) -> AsyncIterator[tuple[trio.Process, str]]:
    """tests/ws_backend.py in a process of its own; yields it and its URL. Killed at the end."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                [sys.executable, str(TESTS / "ws_backend.py"), variant],
                stdout=-1,  # subprocess.PIPE
                check=False,
                env=env,
            )
        )
        try:
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                data = await process.stdout.receive_some(1024)
                assert data, "the backend process ended before printing its URL"
                line += data
            yield process, line.decode().strip()
        finally:
            process.kill()


async def kill_once_blocked(process: trio.Process) -> None:
    """SIGKILL `process` once every task here waits (the call is sent)."""
    await trio.testing.wait_all_tasks_blocked()
    process.send_signal(signal.SIGKILL)


async def test_killed_backend_ends_an_ipc_session_with_connection_lost(variant: str) -> None:
    with trio.fail_after(30):
        async with (
            backend_process(variant) as (process, url),
            # Not resumable: the lost connection is the session's end (a
            # resumable one would try to resume it: test_websocket_resume).
            websocket.connect_ipc(url, channels=[ConformanceIpc], retry=None) as frontend,
            trio.open_nursery() as nursery,
        ):
            proxy = frontend.proxy(ConformanceIpc)
            assert await proxy.add(1, 2) == 3
            nursery.start_soon(kill_once_blocked, process)
            with pytest.raises(ConnectionClosed) as caught:
                await proxy.wait_until_cancelled("k")
            reason = await frontend.wait_closed()
    assert "connection was lost" in reason, reason
    assert frontend.closed_reason == reason
    assert caught.value.reason == reason
    assert caught.value.close_code == 1006


async def test_killed_backend_fails_a_pending_rpc_call_with_connection_lost(variant: str) -> None:
    with trio.fail_after(30):
        async with (
            backend_process(variant) as (process, url),
            websocket.connect(url, interfaces=[ConformanceInterface]) as backend,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(kill_once_blocked, process)
            with pytest.raises(ConnectionClosed) as caught:
                await backend.get_client(ConformanceInterface).wait_until_cancelled("k")
    assert caught.value.close_code == 1006
    assert caught.value.reason is not None
    assert "connection was lost" in caught.value.reason


# ---------------------------------------------------------------------------
# A frontend that stops reading, on hypercorn's /ws


class Firehose(tether.IpcInterface):
    channel_name = "tests.firehose"
    version = "1.0.0"

    async def flood(self, count: int, size: int) -> None: ...


class FirehoseEvents(tether.NotificationInterface):
    channel_name = "tests.firehose-events"

    async def chunk(self, n: int, data: str) -> None: ...


class FirehoseHandler(tether.IpcHandler, Firehose):
    async def flood(self, count: int, size: int) -> None:
        notifier = tether.current_session().notifier(FirehoseEvents)
        data = "x" * size
        for n in range(count):
            await notifier.chunk(n, data)


async def test_a_frontend_that_stops_reading_on_ws_gets_1000_frontend_too_slow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The close first waits (CLOSE_TIMEOUT) for what is queued to go out,
    # which a frontend that does not read never lets happen; shortened here
    # so the test does not wait 5 s for it.
    monkeypatch.setattr(_streams, "CLOSE_TIMEOUT", 0.5)
    backend = tether.BackendIpc(max_pending_notifications=8, slow_frontend_timeout=0.2)
    backend.register(FirehoseHandler)
    hello = Hello(PROTOCOL_VERSION, channels={Firehose.channel_name: Firehose.version}, mode="ipc")
    count = 1000  # 64 MB: far more than the socket buffers and the queues hold
    with trio.fail_after(2 * TIMEOUT):
        async with (
            served("hypercorn", None, backend) as url,
            raw(url, hello=encode(hello), message_queue_size=1) as ws,
        ):
            (session,) = backend.sessions
            flood = Invoke(1, Firehose.channel_name, "flood", [count, 64 * 1024])
            await ws.send_message(encode(flood).decode())
            # Not reading: the backend's notifications pile up until it drops
            # this frontend. Then it reads what came, up to the close.
            assert await session.wait_closed() == "frontend too slow"
            received, closed = await read_until_closed(ws, count)
    assert closed is not None
    assert (closed.code, closed.reason) == (1000, "frontend too slow")
    assert 0 < received < count


async def read_until_closed(
    ws: trio_websocket.WebSocketConnection, most: int
) -> tuple[int, trio_websocket.CloseReason | None]:
    """Read every message until the close (`most` can come); how many came, and the close."""
    for received in range(most + 1):
        try:
            await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            return received, exc.reason
    raise AssertionError("no close came")  # pragma: no cover
