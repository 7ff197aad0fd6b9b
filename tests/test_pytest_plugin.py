"""The pytest plugin, run as a user runs it: docs/testing.md's suite in a project of its own.

The project's files are the page's code blocks (each opens with `# file: NAME`),
so the page and the plugin cannot drift. Each run is a pytest subprocess
(`pytester.runpytest_subprocess`) in a temporary directory: the plugin loaded
with `-p` from this source tree, or through an entry point made from
pyproject.toml's `pytest11` declaration, as an installed tether loads it.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections import Counter
from pathlib import Path

import pytest

import tether

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "testing.md"
SOURCE = Path(tether.__file__).resolve().parent.parent
_BLOCK = re.compile(r"^```\w+\n# file: (?P<name>[\w./-]+)\n(?P<code>.*?)^```$", re.M | re.S)
#: Passed tests per transport the page promises: 4 in test_counter.py on each,
#: and test_faults.py's one test on the three transports its marker names.
EXPECTED = {"memory": 5, "thread": 5, "http": 4, "websocket": 5}
#: Seconds each pytest subprocess may take (about 2 s unloaded).
TIMEOUT = 60


def documented_project() -> dict[str, str]:
    """The files docs/testing.md's blocks hold, name -> text."""
    files = {
        m["name"]: f"# file: {m['name']}\n{m['code']}" for m in _BLOCK.finditer(DOC.read_text())
    }
    assert sorted(files) == [
        "conftest.py",
        "counter.py",
        "pyproject.toml",
        "test_counter.py",
        "test_faults.py",
    ]
    return files


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name, text in documented_project().items():
        (pytester.path / name).write_text(text)
    # This source tree, not whatever tether the interpreter would find; and
    # only the plugins a run names (an installed tether's entry point would
    # clash with `-p tether.testing.pytest_plugin`: one module, two names).
    monkeypatch.setenv("PYTHONPATH", str(SOURCE))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    return pytester


def run_explicit(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest with pytest-trio and the plugin loaded by name, no other plugin."""
    return pytester.runpytest_subprocess(
        "-p", "trio", "-p", "tether.testing.pytest_plugin", "-p", "no:cacheprovider",
        "-v", *args, timeout=TIMEOUT,
    )  # fmt: skip


def passed_per_transport(result: pytest.RunResult) -> Counter[str]:
    return Counter(m[1] for line in result.outlines if (m := re.search(r"\[(\w+)\] PASSED", line)))


def test_the_documented_suite_passes_on_every_transport(project: pytest.Pytester) -> None:
    result = run_explicit(project)
    result.assert_outcomes(passed=sum(EXPECTED.values()))
    assert passed_per_transport(result) == EXPECTED
    # Each test ran under its transport's id, once.
    result.stdout.fnmatch_lines(
        [
            "*test_counter.py::test_increment[[]memory[]] PASSED*",
            "*test_counter.py::test_increment[[]thread[]] PASSED*",
            "*test_counter.py::test_increment[[]http[]] PASSED*",
            "*test_counter.py::test_increment[[]websocket[]] PASSED*",
        ]
    )


def test_the_entry_point_declared_in_pyproject_loads_the_plugin(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What pip writes from pyproject.toml, on the path: pytest loads the plugin by itself."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared["pytest11"] == {"tether": "tether.testing.pytest_plugin"}
    dist = project.path / "site" / "tether_plugin_check-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tether-plugin-check\nVersion: 0\n")
    lines = [f"{name} = {target}" for name, target in declared["pytest11"].items()]
    (dist / "entry_points.txt").write_text("[pytest11]\n" + "\n".join(lines) + "\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SOURCE), str(dist.parent)]))
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-v", timeout=TIMEOUT)
    result.assert_outcomes(passed=sum(EXPECTED.values()))
    assert passed_per_transport(result) == EXPECTED


MISTAKES = """
import logging
import math

import pytest
import trio

import tether
from counter import Counter, Notes


async def test_wrong_sum(rpc_backend):
    assert await rpc_backend.get_client(Counter).increment(2) == 3


@pytest.mark.tether_transports("http")
async def test_faults_over_http(rpc_backend, tether_faults):
    pass


@pytest.mark.tether_transports("memory")
async def test_an_activity_only_on_the_frontend(rpc_backend, tether_logs):
    with tether.activity() as ctx:
        logging.getLogger("frontend").info("no call made")
    tether_logs.assert_on_both_tiers(ctx.activity_id)


async def test_ipc_speaks_through_the_faulty_stream(ipc_frontend, tether_faults):
    assert await ipc_frontend.proxy(Notes).add("milk") == 1
    [stream] = tether_faults.streams
    assert stream.sent >= 2 and stream.received >= 2  # hello, invoke; welcome, result


class TestASessionThatNeverOpens:
    @pytest.fixture
    def tether_ipc(self):
        async def never_answers(handshake):
            await trio.sleep_forever()

        return tether.BackendIpc(authorize=never_answers, authorize_timeout=math.inf)

    @pytest.mark.tether_transports("memory")
    async def test_it(self, ipc_frontend):
        pass
"""

UNKNOWN = """
import pytest


@pytest.mark.tether_transports("memory", "carrier-pigeon")
async def test_somewhere(tether_transport):
    pass
"""


def test_mistakes_fail_with_what_went_wrong(project: pytest.Pytester) -> None:
    (project.path / "test_mistakes.py").write_text(MISTAKES)
    (project.path / "test_unknown.py").write_text(UNKNOWN)
    result = run_explicit(
        project,
        "test_mistakes.py",
        "test_unknown.py",
        "--continue-on-collection-errors",
        "-o",
        "tether_timeout=2",
    )
    # Passed: IPC through the FaultyStream on the 4 transports (HTTP's too).
    # Failed: 4 wrong sums (one per transport), the activity with no backend
    # record, the session that never opens (pytest-trio sets async fixtures up
    # in the test's call). Errors: the HTTP faults fixture (at setup), and the
    # module naming an unknown transport (at collection).
    result.assert_outcomes(failed=6, errors=2, passed=4)
    result.stdout.fnmatch_lines_random(
        [
            "*assert 2 == 3*",
            "*tether_faults cannot break RPC over HTTP*",
            "*ActivityId * has no record on the backend (1 frontend, 0 backend)*",
            "*frontend: no call made*",
            "*TooSlowError: ipc_frontend over memory did not open within 2 s "
            "(the tether_timeout ini option)*",
            "*names 'carrier-pigeon', which is not a tether transport: expected some of "
            "memory, thread, http, websocket*",
        ]
    )
    for transport in EXPECTED:
        result.stdout.fnmatch_lines([f"FAILED test_mistakes.py::test_wrong_sum[[]{transport}[]]*"])


def test_an_unknown_transport_in_the_ini_option_stops_the_run(project: pytest.Pytester) -> None:
    (project.path / "pytest.ini").write_text(
        "[pytest]\ntrio_mode = true\ntether_transports = memory udp\n"
    )
    result = run_explicit(project)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*the tether_transports ini option names 'udp'*"])


def test_without_the_option_tests_run_on_the_default_transports(project: pytest.Pytester) -> None:
    (project.path / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")  # wins over pyproject
    result = run_explicit(project, "test_counter.py::test_increment")
    result.assert_outcomes(passed=3)
    assert passed_per_transport(result) == {"memory": 1, "http": 1, "websocket": 1}
