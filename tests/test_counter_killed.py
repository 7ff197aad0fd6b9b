"""A counter behind a backend killed mid-call is never incremented twice (issue 15).

The backend runs in a child process (tests/counter_backend_process.py) that
keeps its count in a file. The test waits until an `increment` has written the
file, SIGKILLs the child, and starts it again on the same port: the
non-idempotent `increment` fails with `CallMayHaveRun` (it is not retried),
the file shows one increment, and an idempotent `read` made while the backend
is down is retried (HTTP) or waits for the reconnect (WebSocket) through the
restart, and returns.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from tether.runtime import CallMayHaveRun
from tether.transports import http, websocket

HERE = Path(__file__).resolve().parent
TIMEOUT = 60.0  # two Python processes start and import tether and hypercorn

sys.path.insert(0, str(HERE))
from child_processes import child_process  # noqa: E402
from counter_backend_process import Counter  # noqa: E402


@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_a_counter_killed_mid_call_is_incremented_at_most_once(
    kind: str, tmp_path: Path
) -> None:
    count_file = tmp_path / "count"
    count_file.write_text("0")
    connect = http.connect if kind == "http" else websocket.connect
    raised: list[BaseException] = []
    with trio.fail_after(TIMEOUT):
        started = child_process("counter_backend_process.py", kind, "0", str(count_file))
        async with started as first, connect(first.url, interfaces=[Counter]) as backend:
            counter = backend.get_client(Counter)

            async def increment() -> None:
                with pytest.raises(CallMayHaveRun) as info:
                    await counter.increment()
                raised.append(info.value)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(increment)
                await first.wait_line("started", "increment")
                await first.kill()
            assert "may have run on the backend" in str(raised[0])
            assert "not idempotent" in str(raised[0])
            assert count_file.read_text() == "1"

            # The backend is down: a read waits (its retries, and on
            # WebSocket the reconnect) until it is back on the same port.
            read: list[int] = []
            done = trio.Event()

            async def read_through_restart() -> None:
                read.append(await counter.read())
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_through_restart)
                again = ("counter_backend_process.py", kind, str(first.port), str(count_file))
                async with child_process(*again) as second:
                    assert second.port == first.port
                    await done.wait()
            assert read == [1]
    assert count_file.read_text() == "1"
