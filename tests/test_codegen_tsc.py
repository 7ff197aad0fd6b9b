"""The generated stubs under the real TypeScript compiler: right pages pass, misuses fail.

Pages in tests/codegen_pages/ import the stubs generated here into a temporary
folder, and `tether-client` mapped to the client's sources. `good_*.ts` must
type-check under `--strict`; each `bad_*.ts` marks the one line that must fail
with `// expect TSnnnn`, and must fail there with that code and nowhere else.
Two compiler runs in all: the good pages alone, then every page.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tether.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = Path(__file__).resolve().parent / "codegen_pages"
CLIENT = ROOT / "clients" / "typescript"
TSC = CLIENT / "node_modules" / ".bin" / "tsc"

#: stub file -> the `tether codegen typescript` target it is generated from.
STUBS = {
    "robot_world.ts": "examples.robot_world.interface",
    "ipc_editor.ts": "examples.ipc_editor.interface",
    "conformance.ts": "tether.testing._rpc_suite:ConformanceInterface",
    "streams.ts": "tether.testing._rpc_streams_suite:ConformanceStreams",
    "ipc_streams.ts": "tether.testing._ipc_streams",
    "samples.ts": "codegen_samples",
}
EXPECT = re.compile(r"// expect (TS\d+)")
DIAGNOSTIC = re.compile(r"^(?P<file>[^(\s]+)\((?P<line>\d+),\d+\): error (?P<code>TS\d+):", re.M)


def _tsc() -> Path:
    if not TSC.exists():
        pytest.fail(f"{TSC} is missing: run `make ts` first (it installs the client's tsc)")
    return TSC


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("codegen_pages")
    for name, target in STUBS.items():
        assert main(["codegen", "typescript", target, "-o", str(folder / name)]) == 0, target
    for page in PAGES.glob("*.ts"):
        shutil.copy(page, folder / page.name)
    return folder


def _compile(folder: Path, files: list[str]) -> subprocess.CompletedProcess[str]:
    config = {
        "compilerOptions": {
            "target": "ES2022",
            "module": "ES2022",
            "moduleResolution": "Bundler",
            "lib": ["ES2022", "DOM", "DOM.Iterable"],
            "types": [],
            "strict": True,
            "noUnusedLocals": True,
            "noUnusedParameters": True,
            "noEmit": True,
            "paths": {"tether-client": [str(CLIENT / "src" / "index.ts")]},
        },
        "files": files,
    }
    (folder / "tsconfig.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return subprocess.run(
        [str(_tsc()), "-p", str(folder / "tsconfig.json"), "--pretty", "false"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _pages(prefix: str) -> list[str]:
    names = sorted(page.name for page in PAGES.glob(f"{prefix}*.ts"))
    assert names, f"no {prefix}*.ts pages in {PAGES}"
    return names


def test_the_stubs_and_the_right_pages_pass_strict(workdir: Path) -> None:
    ran = _compile(workdir, [*STUBS, *_pages("good_")])
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout == ""


def test_each_misuse_fails_on_its_line_with_its_code(workdir: Path) -> None:
    bad = _pages("bad_")
    assert len(bad) >= 5
    ran = _compile(workdir, [*STUBS, *_pages("good_"), *bad])
    assert ran.returncode != 0
    found: dict[str, set[tuple[int, str]]] = {}
    for match in DIAGNOSTIC.finditer(ran.stdout):
        found.setdefault(Path(match["file"]).name, set()).add((int(match["line"]), match["code"]))
    expected: dict[str, set[tuple[int, str]]] = {}
    for name in bad:
        lines = (PAGES / name).read_text(encoding="utf-8").splitlines()
        marks = {
            (number, mark[1])
            for number, line in enumerate(lines, 1)
            if (mark := EXPECT.search(line)) is not None
        }
        assert len(marks) == 1, f"{name} must mark exactly one line with // expect TSnnnn"
        expected[name] = marks
    # Every error is the one a bad page expects: none in the stubs or the good pages.
    assert found == expected, ran.stdout


def test_without_the_compiler_the_test_says_to_run_make_ts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "TSC", tmp_path / "tsc")
    with pytest.raises(pytest.fail.Exception, match=r"run `make ts` first"):
        _tsc()
