"""A rolling restart: a client calling in a loop sees no failed call.

The backend runs in a process of its own (tests/rolling_backend_process.py).
While a client with its default settings calls `echo` in a loop, the backend
is stopped gracefully (SIGTERM: it drains and exits), stays down for about
two seconds, and is started again on the same port. Every call succeeds, with
its own value: calls running at the stop finish (drain), and those made while
no backend answers are retried until the new one does (the client's default
`RetryPolicy`, and on WebSocket its reconnect).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.child_processes import child_process
from tests.rolling_backend_process import Echo
from tether.runtime import RpcBackend
from tether.transports import http, websocket

HERE = Path(__file__).resolve().parent
SCRIPT = "rolling_backend_process.py"
#: The whole test: two Python processes start (about 1 s each), 2 s down.
TIMEOUT = 15.0
#: How long the backend stays down between the stop and the new start.
DOWN = 2.0
#: Calls that must succeed before the stop, and after the new start.
CALLS_AROUND = 20
#: Seconds between two calls of the loop (it is a client, not a benchmark).
PACE = 0.005


class Loop:
    """A client calling `echo(n)` in a loop: what came back, and what failed."""

    def __init__(self, backend: RpcBackend) -> None:
        self.client = backend.get_client(Echo)
        self.succeeded = 0
        self.failures: list[BaseException] = []
        self.wrong: list[tuple[int, int]] = []
        self.stop = False
        self.progressed = trio.Event()

    async def run(self, most: int) -> None:
        for n in range(most):
            if self.stop:
                return
            try:
                value = await self.client.echo(n)
            except Exception as exc:  # every failure is what this test counts
                self.failures.append(exc)
            else:
                if value != n:
                    self.wrong.append((n, value))
                self.succeeded += 1
                self.progressed.set()
                self.progressed = trio.Event()
            await trio.sleep(PACE)

    async def wait_for(self, succeeded: int) -> None:
        while self.succeeded < succeeded and not self.failures:
            await self.progressed.wait()


def _connect(kind: str) -> Callable[[str], AbstractAsyncContextManager[Any]]:
    # The client's defaults: no retry, timeout or reconnect setting given.
    if kind == "http":
        return lambda url: http.connect(url, interfaces=[Echo])
    return lambda url: websocket.connect(url, interfaces=[Echo])


@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_a_client_calling_in_a_loop_sees_no_failure_across_a_rolling_restart(
    kind: str,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with child_process(SCRIPT, kind, "0", path=(HERE.parent,)) as first:
            port = first.port
            async with _connect(kind)(first.url) as backend, trio.open_nursery() as nursery:
                loop = Loop(backend)
                nursery.start_soon(loop.run, 100_000)
                await loop.wait_for(CALLS_AROUND)
                assert await first.stop() == 0  # drained, then exited by itself
                stopped_at = loop.succeeded
                # Down for about two seconds: the loop's calls wait meanwhile.
                await trio.sleep(DOWN)
                async with child_process(SCRIPT, kind, str(port), path=(HERE.parent,)) as second:
                    assert second.port == port
                    await loop.wait_for(stopped_at + CALLS_AROUND)
                    loop.stop = True
                    assert await second.stop() == 0
    assert loop.failures == []
    assert loop.wrong == []
    assert loop.succeeded >= stopped_at + CALLS_AROUND
