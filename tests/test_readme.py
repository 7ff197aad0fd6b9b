"""The README's quickstart runs as pasted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_quickstart_runs_as_pasted() -> None:
    quickstart = python_blocks()[0]
    assert "trio.run(main)" in quickstart
    result = subprocess.run(
        [sys.executable, "-c", quickstart], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"counted robots in activity [0-9a-f-]{36}", result.stdout)


def test_ipc_sample_runs_as_pasted() -> None:
    [sample] = [block for block in python_blocks() if "memory.connect_ipc(" in block]
    assert "trio.run(main)" in sample
    result = subprocess.run(
        [sys.executable, "-c", sample], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    # The notification reached the frontend carrying the ActivityId of the action that caused it.
    called = re.search(r"^moved 0x20 in activity ([0-9a-f-]{36})$", result.stdout, re.MULTILINE)
    notified = re.search(
        r"^0x20 moved to Placement\(x=1\.5, y=0\.0\) in activity ([0-9a-f-]{36})$",
        result.stdout,
        re.MULTILINE,
    )
    assert called is not None, result.stdout
    assert notified is not None, result.stdout
    assert called.group(1) == notified.group(1)


def test_http_main_runs_with_the_quickstart() -> None:
    quickstart = python_blocks()[0]
    [sample] = [block for block in python_blocks() if "http.serve" in block]
    program = quickstart.replace("trio.run(main)", "") + sample + "\ntrio.run(main)\n"
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"counted robots over http://127\.0\.0\.1:\d+/rpc", result.stdout)


def test_websocket_main_runs_with_the_quickstart() -> None:
    quickstart = python_blocks()[0]
    [sample] = [block for block in python_blocks() if "websocket.serve" in block]
    program = quickstart.replace("trio.run(main)", "") + sample + "\ntrio.run(main)\n"
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"counted robots over ws://127\.0\.0\.1:\d+/", result.stdout)


def test_every_python_block_compiles() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 3
    for block in blocks:
        compile(block, "README.md", "exec")
