"""`HttpApp` is a plain ASGI app: hypercorn's own command line serves it, with workers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import trio

import tether
from tether.testing import ConformanceInterface, ConformanceIpc
from tether.transports import http

HERE = Path(__file__).resolve().parent
HYPERCORN = Path(sys.executable).with_name("hypercorn")
#: hypercorn imports the tether these tests import (a checkout's, not an installed one).
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(HERE), str(Path(tether.__file__).parents[1])]),
}


async def _serve_with_cli(workers: int, task_status: trio.TaskStatus[str]) -> None:
    """Run `hypercorn asgi_app:asgi` on 127.0.0.1, port 0; report its URL."""
    command = [
        str(HYPERCORN),
        "asgi_app:asgi",
        "--worker-class",
        "trio",
        "--workers",
        str(workers),
        "--bind",
        "127.0.0.1:0",
    ]
    process = await trio.lowlevel.open_process(
        command, cwd=HERE, env=ENV, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    assert process.stderr is not None
    async with process.stderr:
        try:
            assert process.stderr is not None
            seen = b""
            while (found := re.search(rb"Running on (http://127\.0\.0\.1:\d+)", seen)) is None:
                chunk = await process.stderr.receive_some()
                assert chunk, f"hypercorn exited before serving: {seen.decode(errors='replace')}"
                seen += chunk
            task_status.started(found.group(1).decode() + "/rpc")
            while await process.stderr.receive_some():
                pass  # keep reading, so that hypercorn never blocks on a full pipe
            await trio.sleep_forever()
        finally:
            process.send_signal(signal.SIGTERM)
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()


async def test_hypercorn_command_line_serves_rpc_with_two_workers() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(_serve_with_cli, 2)
            async with http.connect(url, interfaces=[ConformanceInterface]) as backend:
                client = backend.get_client(ConformanceInterface)
                results = [await client.add(n, 1) for n in range(20)]
            nursery.cancel_scope.cancel()
    assert results == [n + 1 for n in range(20)]


async def test_hypercorn_command_line_serves_ipc_with_one_worker() -> None:
    # An IPC session lives in one process: with several workers, its requests
    # could reach another one (docs/http.md says to run one, or route sticky).
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(_serve_with_cli, 1)
            async with http.connect_ipc(url, channels=[ConformanceIpc]) as frontend:
                assert await frontend.proxy(ConformanceIpc).add(40, 2) == 42
            nursery.cancel_scope.cancel()


async def test_hypercorn_without_the_trio_worker_fails_at_startup_saying_what_to_add() -> None:
    # hypercorn's default worker is asyncio's: the app must refuse to start,
    # in one line that says what to add, not serve empty 500s.
    command = [str(HYPERCORN), "asgi_app:asgi", "--bind", "127.0.0.1:0"]
    process = await trio.lowlevel.open_process(
        command, cwd=HERE, env=ENV, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    assert process.stderr is not None
    seen = b""
    try:
        with trio.fail_after(60):
            async with process.stderr:
                while b"Running on" not in seen and (chunk := await process.stderr.receive_some()):
                    seen += chunk
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
    text = seen.decode(errors="replace")
    assert "Running on" not in text
    lines = [line for line in text.splitlines() if "--worker-class trio" in line]
    assert len(lines) == 1, text
    assert "tether" in lines[0]
