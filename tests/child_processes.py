"""Backend processes a test starts, reads and stops (the tests/*_process.py scripts).

A script prints `url <its URL>` once it serves, and may print more lines,
`<kind> <value>` ("started increment", "signal started:ipc"), which a test
awaits with `wait_line`. The process is killed when the block ends, whatever
happened: no test leaves one behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

import tether
from tether.runtime._util import open_service_nursery

HERE = Path(__file__).resolve().parent
#: The child must import this tree's tether, not an installed one.
SOURCES = Path(tether.__file__).resolve().parents[1]


class Child:
    """One run of a backend script: its URL, and the lines it printed."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.url = ""
        self.lines: list[tuple[str, str]] = []
        self._changed = trio.Event()

    @property
    def port(self) -> int:
        return int(self.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])

    async def read_lines(self, task_status: trio.TaskStatus[None]) -> None:
        assert self.process.stdout is not None
        pending = b""
        while chunk := await self.process.stdout.receive_some():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                kind, _, value = line.decode().partition(" ")
                if kind == "url" and not self.url:
                    self.url = value
                    task_status.started()
                else:
                    self.lines.append((kind, value))
                    self._changed.set()
                    self._changed = trio.Event()
        assert self.url, "the backend process exited before serving"

    async def wait_line(self, kind: str, value: str | None = None) -> None:
        """Wait until the script printed a `kind` line (with `value`, when given)."""
        while not any(k == kind and value in (None, v) for k, v in self.lines):
            await self._changed.wait()

    async def kill(self) -> None:
        """SIGKILL: no graceful anything; wait for the process to be gone."""
        self.process.kill()
        await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM (a graceful stop); wait for the process to exit; its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return await self.process.wait()


@asynccontextmanager
async def child_process(
    script: str, *args: str, path: tuple[Path, ...] = (HERE,)
) -> AsyncIterator[Child]:
    """Run `tests/<script>` with `args` for the block, once it printed its URL.

    `path` goes on the child's PYTHONPATH after this tree's sources.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SOURCES), *map(str, path)])}
    process = await trio.lowlevel.open_process(
        [sys.executable, str(HERE / script), *args], env=env, stdout=subprocess.PIPE
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


class Serving:
    """One `tether serve` process: the lines it printed (its URLs, then worker
    sockets), and its stderr lines."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._changed = trio.Event()

    @property
    def urls(self) -> list[str]:
        """What it printed to stdout: the served URLs first."""
        return self.lines

    async def read_lines(self, count: int, *, task_status: trio.TaskStatus[None]) -> None:
        assert self.process.stdout is not None
        pending = b""
        started = False
        while chunk := await self.process.stdout.receive_some():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            self.lines += [line.decode() for line in lines]
            if len(self.lines) >= count and not started:
                started = True
                task_status.started()
        assert started, f"tether serve exited before printing its URLs: {self.errors}"

    async def read_errors(self) -> None:
        assert self.process.stderr is not None
        pending = b""
        while chunk := await self.process.stderr.receive_some():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            self.errors += [line.decode() for line in lines]
            self._changed.set()
            self._changed = trio.Event()

    async def wait_error(self, *texts: str) -> str:
        """The first stderr line holding every one of `texts` (awaited)."""
        while True:
            for line in self.errors:
                if all(text in line for text in texts):
                    return line
            await self._changed.wait()

    async def wait_count(self, text: str, count: int) -> None:
        """Until `count` stderr lines hold `text`."""
        while sum(text in line for line in self.errors) < count:
            await self._changed.wait()

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return await self.process.wait()


@asynccontextmanager
async def serving(
    target: str, *args: str, lines: int, env: dict[str, str], kind: type[Serving] = Serving
) -> AsyncIterator[Serving]:
    """`tether serve TARGET ARGS` for the block, once it printed `lines` lines;
    killed when the block ends, whatever happened (its workers stop by
    themselves once it is gone: they watch it)."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tether", "serve", target, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    run = kind(process)
    try:
        async with open_service_nursery() as nursery:
            nursery.start_soon(run.read_errors)
            await nursery.start(run.read_lines, lines)
            yield run
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
