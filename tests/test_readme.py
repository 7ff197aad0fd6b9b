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


def test_every_python_block_compiles() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 3
    for block in blocks:
        compile(block, "README.md", "exec")
