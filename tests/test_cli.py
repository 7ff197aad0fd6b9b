"""The `tether` command line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import pytest
import trio
from openapi_spec_validator import validate

from examples.robot_world.backend import make_backend
from tether import RpcInterface, RpcManager
from tether.__main__ import main
from tether.cli._call import exit_code_of
from tether.cli._common import CliError
from tether.cli._openapi import find_manager
from tether.transports import http, websocket
from tether.transports.http._openapi import openapi_document


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


# -- describe, call, openapi: the real command against real servers -----------------

ROOT = Path(__file__).resolve().parent.parent
COUNT = "RobotWorldReadRpcInterface.count_robots"


@attrs.frozen
class Ran:
    code: int
    out: str
    err: str


async def run_tether(*argv: str) -> Ran:
    """Run `python -m tether ARGV` as a child process, this worktree's sources first."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "tether", *argv],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
    return Ran(done.returncode, done.stdout.decode(), done.stderr.decode())


@attrs.frozen
class Urls:
    http: str
    ws: str


@pytest.fixture
async def urls(nursery: trio.Nursery) -> Urls:
    """The RobotWorld backend over HTTP and over WebSocket, stopped with the test's nursery."""
    manager = make_backend()
    with trio.fail_after(20):
        http_url = await nursery.start(http.serve, manager)
        ws_url = await nursery.start(websocket.serve, manager)
    return Urls(http_url, ws_url)


def closed_port_url(scheme: str) -> str:
    """A loopback URL nothing listens on (a port just bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}/rpc"


@pytest.mark.parametrize("transport", ["http", "ws"])
async def test_call_prints_the_result_as_json(urls: Urls, transport: str) -> None:
    ran = await run_tether("call", getattr(urls, transport), COUNT, '{"key": "warehouse"}')
    assert (ran.code, ran.out, ran.err) == (0, "3\n", "")
    ran = await run_tether(
        "call",
        getattr(urls, transport),
        "RobotWorldReadRpcInterface.query_obstacles_hit_by_robot",
        '{"key": "warehouse"}',
        '"robot-1"',
        "--timeout",
        "10",
        "-H",
        "X-Client: cli-test",
    )
    assert (ran.code, json.loads(ran.out)) == (0, ["crate-1", "crate-2"])


@pytest.mark.parametrize("transport", ["http", "ws"])
async def test_call_error_goes_to_stderr_with_its_exit_code(urls: Urls, transport: str) -> None:
    url = getattr(urls, transport)
    ran = await run_tether("call", url, COUNT, '{"key": "atlantis"}', "--activity-id", "act-42")
    assert ran.code == 1  # an application error
    assert ran.out == ""
    assert "error: application (status 422" in ran.err
    assert "IModelNotFound" in ran.err
    assert "message: no iModel 'atlantis'" in ran.err
    assert 'details: {"fields": {"key": "atlantis"}}' in ran.err
    assert "activity id: act-42" in ran.err

    ran = await run_tether("call", url, COUNT, '{"kee": "warehouse"}')
    assert ran.code == 3  # bad-request
    assert "error: bad-request (status 400" in ran.err
    assert "imodel.key" in ran.err


@pytest.mark.parametrize("transport", ["http", "ws"])
async def test_call_refuses_bad_input_in_one_line(urls: Urls, transport: str) -> None:
    url = getattr(urls, transport)
    cases = [
        ((url, "RobotWorldReadRpcInterface.fly"), 2, "has no operation 'fly'"),
        ((url, "Nope.count_robots", "1"), 2, "serves no interface 'Nope'"),
        ((url, COUNT, "warehouse"), 2, "argument 1 is not a JSON value"),
        ((url, "count_robots"), 2, "expected Interface.operation"),
        ((url, COUNT, "1", "-H", "Authorization Bearer s3cret"), 2, "expected -H 'Name: value'"),
        ((closed_port_url(transport), COUNT, "1"), 9, "cannot"),
        (("ftp://127.0.0.1/rpc", COUNT, "1"), 2, "expected a URL starting with http://"),
    ]
    for argv, code, words in cases:
        ran = await run_tether("call", *argv)
        assert (ran.code, ran.out) == (code, ""), (argv, ran)
        assert ran.err.startswith("tether: "), (argv, ran.err)
        assert words in ran.err, (argv, ran.err)
        assert ran.err.count("\n") == 1, ran.err  # one line, no traceback
        assert "s3cret" not in ran.err


def test_exit_codes_follow_the_documented_table() -> None:
    table = {
        "application": 1,
        "internal": 1,
        "bad-request": 3,
        "not-found": 4,
        "unauthorized": 5,
        "forbidden": 5,
        "incompatible-version": 6,
        "unavailable": 7,
        "too-many-requests": 7,
        "deadline-exceeded": 8,
        "transport": 9,
        "something-new": 1,
    }
    assert {code: exit_code_of(code) for code in table} == table
    doc = (ROOT / "docs" / "cli.md").read_text()
    for code, status in table.items():
        if code != "something-new":
            assert f"| {status} | `{code}`" in doc or f"`{code}`" in doc, code


async def test_describe_over_http_shows_operations_with_their_types(urls: Urls) -> None:
    ran = await run_tether("describe", urls.http)
    assert ran.code == 0, ran.err
    assert "types: from /rpc/openapi.json" in ran.out
    rows = [line.split() for line in ran.out.splitlines()]
    assert [
        "RobotWorldReadRpcInterface",
        "1.0.0",
        "count_robots(imodel:",
        "IModelProps)",
        "int",
    ] in rows
    assert any(
        r[:3] == ["RobotTelemetryRpcInterface", "1.0.0", "snapshot(imodel:"] and r[-1] == "bytes"
        for r in rows
    )
    assert "IPC channels: none" in ran.out

    ran = await run_tether("describe", urls.http, "--json")
    described = json.loads(ran.out)
    read = described["interfaces"]["RobotWorldReadRpcInterface"]
    assert read["version"] == "1.0.0"
    assert read["operations"]["count_robots_in_array"] == {
        "params": [
            {"name": "imodel", "type": "IModelProps"},
            {"name": "element_ids", "type": "list[str]"},
        ],
        "returns": "int",
        "policy": None,
        "stream": None,
    }
    assert (
        described["interfaces"]["RobotTelemetryRpcInterface"]["operations"]["watch"]["stream"]
        == "server"
    )


async def test_describe_over_websocket_says_types_are_unavailable(urls: Urls) -> None:
    ran = await run_tether("describe", urls.ws, "--json")
    assert ran.code == 0, ran.err
    described = json.loads(ran.out)
    assert described["transport"] == "websocket"
    assert described["types"].startswith("unavailable")
    count = described["interfaces"]["RobotWorldReadRpcInterface"]["operations"]["count_robots"]
    assert (count["params"], count["returns"]) == (None, None)
    ran = await run_tether("describe", urls.ws)
    assert "count_robots(?)" in ran.out
    assert "types: unavailable" in ran.out


async def test_describe_unreachable_or_not_tether_exits_in_one_line(urls: Urls) -> None:
    ran = await run_tether("describe", closed_port_url("http"))
    assert ran.code == 9
    assert ran.err.startswith("tether: cannot reach")
    ran = await run_tether("describe", urls.http.replace("/rpc", "/elsewhere"))
    assert ran.code == 2
    assert "answered HTTP 404" in ran.err
    assert ran.err.count("\n") == 1


async def test_openapi_writes_a_valid_document(tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    ran = await run_tether(
        "openapi", "examples.robot_world.backend:make_backend", "-o", str(out), "--prefix", "/api"
    )
    assert (ran.code, ran.out, ran.err) == (0, "", "")
    document = json.loads(out.read_text())
    validate(document)
    assert document == json.loads(json.dumps(openapi_document(make_backend(), prefix="/api")))
    assert "/api/RobotWorldReadRpcInterface/1.0.0/count_robots" in document["paths"]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("no_such_module_xyz:manager", "no module named 'no_such_module_xyz'"),
        ("examples.robot_world.backend:nothing", "has no attribute 'nothing'"),
        ("examples.robot_world.backend:SNAPSHOT_SIZE", "expected an RpcManager"),
        ("examples.robot_world.backend", "expected module:attr"),
    ],
)
async def test_openapi_bad_target_is_one_line(spec: str, words: str) -> None:
    ran = await run_tether("openapi", spec)
    assert (ran.code, ran.out) == (2, "")
    assert ran.err.startswith("tether: ")
    assert words in ran.err
    assert ran.err.count("\n") == 1


def test_find_manager_takes_a_holder_or_a_factory() -> None:
    manager = make_backend()

    class Holder:
        def __init__(self) -> None:
            self.rpc = manager

    assert find_manager(manager, "x:y") is manager
    assert find_manager(Holder(), "x:y") is manager
    assert find_manager(lambda: manager, "x:y") is manager
    with pytest.raises(CliError, match="expected an RpcManager"):
        find_manager(object(), "x:y")


class Sleeper(RpcInterface):
    interface_name = "CliSleeper"
    interface_version = "1.0.0"

    async def wait(self) -> int: ...  # type: ignore[empty-body]


class SleeperImpl(Sleeper):
    async def wait(self) -> int:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


@pytest.mark.parametrize("serve", [http.serve, websocket.serve])
async def test_call_timeout_is_sent_and_past_it_exits_8(
    nursery: trio.Nursery, serve: Callable[..., Awaitable[None]]
) -> None:
    manager = RpcManager()
    manager.register_impl(Sleeper, SleeperImpl())
    with trio.fail_after(20):
        url = await nursery.start(serve, manager)
    ran = await run_tether("call", url, "CliSleeper.wait", "--timeout", "0.5")
    assert ran.code == 8, ran.err
    # The server's own deadline answered (it got X-Timeout-Ms / timeout_ms).
    assert "error: deadline-exceeded (status 504" in ran.err


async def test_a_module_in_the_current_directory_is_found_without_pythonpath(
    tmp_path: Path,
) -> None:
    """The installed `tether` script does not put the current directory on sys.path
    (`python -P` does the same); `tether serve app:manager` in the app's folder must
    still find it, as hypercorn and uvicorn do."""
    (tmp_path / "cwd_app.py").write_text(
        "import tether\n"
        "class Ping(tether.RpcInterface):\n"
        "    interface_name = 'Ping'\n"
        "    interface_version = '1.0.0'\n"
        "    async def ping(self) -> int: ...\n"
        "class PingImpl(Ping):\n"
        "    async def ping(self) -> int:\n"
        "        return 1\n"
        "manager = tether.RpcManager()\n"
        "manager.register_impl(Ping, PingImpl)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-P", "-m", "tether", "openapi", "cwd_app:manager"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
            cwd=tmp_path,
        )
    assert done.returncode == 0, done.stderr.decode()
    assert "/rpc/Ping/1.0.0/ping" in json.loads(done.stdout)["paths"]
