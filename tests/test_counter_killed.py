"""A counter behind a backend killed mid-call is never incremented twice (issue 15).

The backend runs in a child process (tests/counter_backend_process.py) that
keeps its count in a file. The test waits until an `increment` has written the
file, SIGKILLs the child, and starts it again on the same port: the
non-idempotent `increment` fails with `CallMayHaveRun` (it is not retried),
the file shows one increment, and an idempotent `read` made while the backend
is down is retried through the restart and returns.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import tether
from tether.runtime import CallMayHaveRun
from tether.runtime._util import open_service_nursery
from tether.transports import http, websocket

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "counter_backend_process.py"
SOURCES = Path(tether.__file__).resolve().parents[1]
TIMEOUT = 60.0  # two Python processes start and import tether and hypercorn

sys.path.insert(0, str(HERE))
from counter_backend_process import Counter  # noqa: E402


class Child:
    """One run of the backend process: its URL, and an event per `started` line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.url = ""
        self.started = trio.Event()

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
                elif kind == "started":
                    self.started.set()


@asynccontextmanager
async def child(kind: str, port: int, count_file: Path) -> AsyncIterator[Child]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SOURCES), str(HERE)])}
    process = await trio.lowlevel.open_process(
        [sys.executable, str(SCRIPT), kind, str(port), str(count_file)],
        env=env,
        stdout=subprocess.PIPE,
    )
    run = Child(process)
    try:
        async with open_service_nursery() as nursery:
            await nursery.start(run.read_lines)
            yield run
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def kill(run: Child) -> None:
    run.process.kill()  # SIGKILL: no graceful anything
    await run.process.wait()


def port_of(url: str) -> int:
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


async def test_http_counter_killed_mid_call_is_incremented_at_most_once(tmp_path: Path) -> None:
    count_file = tmp_path / "count"
    count_file.write_text("0")
    raised: list[BaseException] = []
    with trio.fail_after(TIMEOUT):
        async with child("http", 0, count_file) as first:
            port = port_of(first.url)
            async with http.connect(first.url, interfaces=[Counter]) as backend:
                counter = backend.get_client(Counter)

                async def increment() -> None:
                    with pytest.raises(CallMayHaveRun) as info:
                        await counter.increment()
                    raised.append(info.value)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(increment)
                    await first.started.wait()
                    await kill(first)
                assert "not idempotent" in str(raised[0])
                assert count_file.read_text() == "1"

                # The backend is down: a read waits in its retries (default
                # policy) until the backend is back on the same port.
                read: list[int] = []
                done = trio.Event()

                async def read_through_restart() -> None:
                    read.append(await counter.read())
                    done.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_through_restart)
                    async with child("http", port, count_file) as second:
                        assert port_of(second.url) == port
                        await done.wait()
                assert read == [1]
    assert count_file.read_text() == "1"


async def test_websocket_counter_killed_mid_call_is_incremented_at_most_once(
    tmp_path: Path,
) -> None:
    """The same over WebSocket: the increment in flight raises CallMayHaveRun; the
    client reconnects by itself when the backend is back on its port, and a read
    made while it was down returns then."""
    count_file = tmp_path / "count"
    count_file.write_text("0")
    raised: list[BaseException] = []
    with trio.fail_after(TIMEOUT):
        async with child("websocket", 0, count_file) as first:
            port = port_of(first.url)
            async with websocket.connect(first.url, interfaces=[Counter]) as backend:
                counter = backend.get_client(Counter)

                async def increment() -> None:
                    with pytest.raises(CallMayHaveRun) as info:
                        await counter.increment()
                    raised.append(info.value)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(increment)
                    await first.started.wait()
                    await kill(first)
                assert "may have run on the backend" in str(raised[0])
                assert count_file.read_text() == "1"

                read: list[int] = []
                done = trio.Event()

                async def read_through_restart() -> None:
                    read.append(await counter.read())
                    done.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_through_restart)
                    async with child("websocket", port, count_file) as second:
                        assert port_of(second.url) == port
                        await done.wait()
                assert read == [1]
    assert count_file.read_text() == "1"
