"""A backend killed with SIGKILL: the HTTP client says the connection was lost.

The backend runs in a process of its own (tests/http_backend_process.py),
started and killed by each test, so that its sockets are closed by the kernel
as a crash closes them, mid-response.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

import tether
from tether.runtime import ConnectionClosed
from tether.runtime._util import open_service_nursery
from tether.testing import ConformanceInterface, ConformanceIpc
from tether.transports import http

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "http_backend_process.py"
#: The child must import this tree's tether, not an installed one.
SOURCES = Path(tether.__file__).resolve().parents[1]
TIMEOUT = 30.0  # a Python process has to start and import tether and hypercorn
LOST = "the connection to the backend was lost"


class Backend:
    """A backend process: its URL, the signals its impls gave, and a way to kill it."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.url = ""
        self.signals: set[str] = set()
        self.changed = trio.Event()

    async def read_lines(self, task_status: trio.TaskStatus[None]) -> None:
        assert self.process.stdout is not None
        pending = b""
        while chunk := await self.process.stdout.receive_some():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                kind, _, value = line.decode().partition(" ")
                if kind == "url":
                    self.url = value
                    task_status.started()
                elif kind == "signal":
                    self.signals.add(value)
                    self.changed.set()
                    self.changed = trio.Event()
        assert self.url, "the backend process exited before serving"

    async def wait(self, signal: str) -> None:
        while signal not in self.signals:
            await self.changed.wait()

    async def kill(self) -> None:
        self.process.kill()  # SIGKILL: no graceful anything
        await self.process.wait()


@asynccontextmanager
async def backend_process() -> AsyncIterator[Backend]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SOURCES), str(HERE)])}
    process = await trio.lowlevel.open_process(
        [sys.executable, str(SCRIPT)], env=env, stdout=subprocess.PIPE
    )
    backend = Backend(process)
    try:
        async with open_service_nursery() as nursery:
            await nursery.start(backend.read_lines)
            yield backend
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def test_ipc_over_http_says_the_connection_was_lost_when_the_backend_is_killed() -> None:
    raised: list[BaseException] = []
    with trio.fail_after(TIMEOUT):
        async with (
            backend_process() as backend,
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
                await backend.wait("started:ipc")
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
            backend_process() as backend,
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
                await backend.wait("started:rpc")
                await backend.kill()
    [exc] = raised
    assert isinstance(exc, ConnectionClosed)
    assert exc.reason == "connection lost"
    assert "was lost" in str(exc)
