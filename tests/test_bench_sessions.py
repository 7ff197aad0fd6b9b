"""`bench.sessions` runs end to end: a backend process, many sessions, one burst of invokes."""

from __future__ import annotations

import pytest
import trio

from bench.sessions import measure


@pytest.mark.parametrize("transport", ["websocket", "local"])
async def test_sessions_bench_measures_every_session_of_a_backend(transport: str) -> None:
    with trio.fail_after(60):
        result = await measure(transport, 20, settle=0.05, seconds=50)
    assert result.transport == transport
    # Every session was open on the backend when it was sampled, and left before the end.
    assert result.idle.sessions == result.before.sessions + 20
    # One socket per session, and the session's tasks were counted by the backend.
    assert result.idle.fds - result.before.fds == 20
    assert result.tasks_per_session >= 1
    assert result.idle.rss_kib > 0
    # Each session invoked once, and was answered.
    assert len(result.latencies_ms) == 20
    assert all(0 < ms <= result.all_answered_ms + 1 for ms in result.latencies_ms)
    assert result.percentile(50) <= result.percentile(99) <= max(result.latencies_ms)
