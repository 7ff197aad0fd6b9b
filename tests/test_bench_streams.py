"""`bench.streams --quick` runs end to end: every case moves what it should, against its
baseline, and the run reports a verdict for every target."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.sessions import _child_env

ROOT = Path(__file__).resolve().parent.parent


def test_streams_bench_quick_run_measures_every_case_against_its_baseline(
    tmp_path: Path,
) -> None:
    out = tmp_path / "streams.json"
    # A child process of its own (the bench starts its servers' child too); bounded in time,
    # and `run` kills it when the bound passes.
    done = subprocess.run(
        [sys.executable, "-m", "bench.streams", "--quick", "--rounds", "1", "--json", str(out)],
        cwd=ROOT,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())

    items = {case["key"]: case for case in result["items"]["cases"]}
    assert set(items) == {"bare-ws", "tether-ws", "tether-memory", "tether-local"}
    bulk = {case["key"]: case for case in result["bulk"]["cases"]}
    assert set(bulk) == {
        "bare-tcp-down",
        "tether-ws-down",
        "tether-http-down",
        "bare-tcp-up",
        "tether-ws-up",
        "tether-http-up",
    }
    for case in [*items.values(), *bulk.values()]:
        # One round, a positive rate, and (but for the baselines) a ratio to the baseline.
        assert len(case["rates"]) == 1
        assert case["best"] > 0
        assert (case["ratio_best"] is None) == (case["baseline"] is None)
    # The bulk cases moved the whole of --quick's 8 MiB, and the child's CPU was counted.
    assert all(case["amount_per_round"] == 8 * 1024 * 1024 for case in bulk.values())
    assert all(case["server_cpu"][0] > 0 for case in bulk.values() if case["baseline"])

    # A verdict per target (small items; each download), and the uploads against the same bar.
    verdicts = result["verdicts"]
    assert len(verdicts) == 5
    assert sum(line.startswith(("PASS: ", "FAIL: ")) for line in verdicts) == 3
    for line in verdicts:
        assert line in done.stdout
