"""The desktop editor example: two processes, run as `make demo-desktop` runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# "[backend  1234] <activity id>  <message>": one log line of the demo.
LOG_LINE = re.compile(
    r"^\[(?P<tier>frontend|backend|tether) *(?P<pid>\d+)\] (?P<activity>\S+)  (?P<message>.*)$"
)
ACTIVITY_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ACTION = re.compile(r"^action (\d+): ")
ACCESS = re.compile(r"^(?P<call>[\w-]+\.\w+) (?P<outcome>\S+) [\d.]+ms$")
SERVES = re.compile(r"^backend process (\d+) serves on (\S+)$", re.MULTILINE)


def test_demo_logs_both_processes_with_each_actions_activity_id() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "examples.desktop_editor"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stderr == ""
    output = proc.stdout
    served = SERVES.search(output)
    assert served is not None, output
    backend_pid = int(served.group(1))
    assert f"backend process {backend_pid} exited with status 0" in output
    assert not os.path.exists(os.path.dirname(served.group(2)))  # cleaned up

    lines: dict[str, list[tuple[str, str]]] = defaultdict(list)  # activity -> (tier, message)
    pids: dict[str, set[int]] = defaultdict(set)  # tier -> processes
    actions: list[str] = []
    for line in output.splitlines():
        match = LOG_LINE.match(line)
        if match is None:
            continue
        tier, activity, message = match.group("tier", "activity", "message")
        lines[activity].append((tier, message))
        pids[tier].add(int(match.group("pid")))
        if tier == "frontend" and ACTION.match(message):
            actions.append(activity)

    # Two processes: every backend line came from the spawned one.
    assert pids["backend"] == {backend_pid}
    assert backend_pid not in pids["frontend"]
    assert len(pids["frontend"]) == 1
    assert len(actions) == 7
    assert len(set(actions)) == 7, "each user action has its own ActivityId"
    assert set(lines) == {*actions, "-"}, output
    assert sorted(lines["-"]) == [
        ("backend", "session over (closed by the frontend): closing floor-plan"),
        ("frontend", "view: session over (closed by the frontend)"),
    ]
    for activity in actions:
        assert ACTIVITY_ID.match(activity), activity
        assert {tier for tier, _ in lines[activity]} == {"frontend", "backend"}, lines[activity]

    def calls(action: int, tier: str) -> list[tuple[str, str]]:
        return [
            m.group("call", "outcome")
            for t, message in lines[actions[action - 1]]
            if t == tier and (m := ACCESS.match(message))
        ]

    assert calls(2, "backend") == [
        ("ipc-editor.add_element", "ok"),
        ("ipc-editor.move_element", "ok"),
    ]
    assert calls(3, "frontend") == [("ipc-editor-prompts.confirm", "ok")]
    assert calls(4, "backend") == [("ipc-editor.move_element", "application")]
    six = lines[actions[5]]
    assert ("backend", "validation cancelled after 4 of 5 elements") in six
    assert ("frontend", "validation cancelled: it took longer than 0.5s") in six
    assert ("frontend", "saved floor-plan at revision 4") in lines[actions[6]]


def test_the_backend_run_by_hand_says_what_to_do_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_LOCAL_")}
    proc = subprocess.run(
        [sys.executable, "-m", "examples.desktop_editor.backend"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith("python -m examples.desktop_editor.backend: TETHER_LOCAL_SOCKET and")
    assert "start the frontend" in line
