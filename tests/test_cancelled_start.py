"""A connect or serve entered under a cancelled scope ends at once, Cancelled.

trio's `nursery.start` trap: a task that calls `task_status.started()` while
the caller of `start()` is cancelled is not moved to the target nursery;
`start()` waits for it to end. A started task that then waits shielded (the
WebSocket client's connection tasks, the servers' connection nurseries)
held its caller for ever, beyond any `fail_after`. It hung the WebSocket
`BackendGroup` test under coverage: a group closed while a member was
dialling again cancelled that dial at this very point.

Each case runs in a process of its own (`cancelled_start_process.py`) that
this test kills if it hangs: a hang in the test's own Trio run could not be
ended from within it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio

from tests.child_processes import SOURCES

SCRIPT = Path(__file__).resolve().parent / "cancelled_start_process.py"
#: Generous for a loaded machine; the process needs about a second.
TIMEOUT = 20.0


@pytest.mark.parametrize("case", ["websocket-connect", "websocket-serve", "local-serve"])
async def test_a_connect_or_serve_under_a_cancelled_scope_ends_at_once(case: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SOURCES), str(SCRIPT.parents[1])])}
    with trio.fail_after(TIMEOUT):
        done = await trio.run_process(
            [sys.executable, str(SCRIPT), case],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == ["left", case]
