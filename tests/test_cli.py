"""The `tether` command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tether.__main__ import main


@pytest.mark.parametrize(
    ("backend", "frontend", "status", "word"),
    [
        ("1.2.0", "1.1.0", 0, "compatible"),
        ("1.0.3", "1.1.0", 1, "incompatible"),
        ("2.0.0", "1.0.0", 1, "incompatible"),
    ],
)
def test_check_version_answers_with_its_exit_status(
    backend: str, frontend: str, status: int, word: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-version", backend, frontend]) == status
    out = capsys.readouterr().out
    assert out.startswith(f"{word}:")
    if status:
        assert backend in out
        assert frontend in out


def test_check_version_rejects_a_malformed_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-version", "1.0", "1.0.0"]) == 2
    assert "not a semantic version" in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "check-version" in capsys.readouterr().out


def test_module_entry_point_prints_the_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tether", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("tether 0.1.0 (wire protocol 1)")
