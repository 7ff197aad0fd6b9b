"""`bench.scale` runs end to end: tether serve processes, nginx in front, client processes.

The tiniest configuration (one worker, one short window) so the bench cannot rot:
every process it starts is real, and every one has exited when it returns.
"""

from __future__ import annotations

import os

import pytest
import trio

from bench.scale import Settings, find_nginx, measure, summary


async def test_scale_bench_measures_a_positive_rate_and_stops_everything() -> None:
    if find_nginx() is None:
        message = "nginx is not installed: `make test` installs it (Debian: apt-get install nginx)"
        if os.environ.get("TETHER_REQUIRE_NGINX"):
            pytest.fail(message)
        pytest.skip(message)
    settings = Settings(
        workers=(1,), shapes=("procs",), clients=1, concurrency=2, warmup=0.2, window=0.5, repeat=1
    )
    started: list[trio.Process] = []
    with trio.fail_after(30):
        samples = await measure(settings, started)
    rows = {row["config"]: row for row in summary(samples)}
    assert set(rows) == {"no proxy, 1 worker", "nginx → 1 process"}
    for row in rows.values():
        assert row["rate"] > 0
        assert row["errors"] == 0
        assert row["per_tether_core"] > 0
    # One tether server, one client, one nginx: all stopped.
    assert len(started) == 3
    assert all(process.returncode is not None for process in started)
