"""A backend killed with SIGKILL: the HTTP client says the connection was lost.

The backend runs in a process of its own (tests/http_backend_process.py),
started and killed by each test, so that its sockets are closed by the kernel
as a crash closes them, mid-response.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

import tether
from tether.runtime import ConnectionClosed
from tether.testing import ConformanceInterface, ConformanceIpc
from tether.transports import http

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child_processes import child_process

HERE = Path(__file__).resolve().parent
TIMEOUT = 30.0  # a Python process has to start and import tether and hypercorn
LOST = "the connection to the backend was lost"


async def test_ipc_over_http_says_the_connection_was_lost_when_the_backend_is_killed() -> None:
    raised: list[BaseException] = []
    with trio.fail_after(TIMEOUT):
        async with (
            child_process("http_backend_process.py") as backend,
            http.connect_ipc(
                backend.url,
                channels=[ConformanceIpc],
                # Resuming is tried, and fails: nothing listens any more.
                retry=tether.RetryPolicy(attempts=3, initial_backoff=0.05),
            ) as frontend,
        ):
            proxy = frontend.proxy(ConformanceIpc)
            assert await proxy.add(40, 2) == 42  # the event stream is up

            async def pending() -> None:
                try:
                    await proxy.wait_until_cancelled("ipc")
                except ConnectionClosed as exc:
                    raised.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pending)
                await backend.wait_line("signal", "started:ipc")
                await backend.kill()
            reason = await frontend.wait_closed()
    assert reason.startswith(f"{LOST}, and could not be made again within the backend's grace")
    assert "(3 tries in " in reason
    assert "could not connect to" in reason  # the last try's error
    assert frontend.closed_reason == reason
    [exc] = raised
    assert isinstance(exc, ConnectionClosed)
    assert exc.reason == reason


async def test_rpc_call_pending_when_the_backend_is_killed_says_the_connection_was_lost() -> None:
    raised: list[BaseException] = []
    with trio.fail_after(TIMEOUT):
        async with (
            child_process("http_backend_process.py") as backend,
            http.connect(backend.url, interfaces=[ConformanceInterface]) as connection,
        ):
            client = connection.get_client(ConformanceInterface)

            async def pending() -> None:
                try:
                    await client.wait_until_cancelled("rpc")
                except ConnectionClosed as exc:
                    raised.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pending)
                await backend.wait_line("signal", "started:rpc")
                await backend.kill()
    [exc] = raised
    assert isinstance(exc, ConnectionClosed)
    assert exc.reason == "connection lost"
    assert "was lost" in str(exc)
