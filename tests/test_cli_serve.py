"""`tether serve module:attr` (issue 16, point 1): a real child process, real sockets.

Each test runs `python -m tether serve ...` with this tree on PYTHONPATH, reads
the URLs it prints, calls through them with tether's clients, and stops it
(SIGTERM, or a kill when the block ends whatever happened).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import tether
from examples.robot_world.interface import IModelProps, RobotWorldRead
from tests import child_processes
from tests.child_processes import Serving
from tether.cli._common import CliError as UsageError
from tether.cli._serve import resolve_app
from tether.transports import http, websocket

SOURCES = Path(tether.__file__).resolve().parents[1]
ROOT = Path(__file__).resolve().parents[1]
TARGET = "examples.robot_world.service:manager"
#: A Python process starts in about a second; a loaded machine takes longer.
TIMEOUT = 20.0
WAREHOUSE = IModelProps("warehouse")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SOURCES), str(ROOT)])}


@asynccontextmanager
async def serving(*args: str, urls: int) -> AsyncIterator[Serving]:
    """`tether serve TARGET args` for the block, once it printed `urls` URLs."""
    async with child_processes.serving(TARGET, *args, lines=urls, env=_env()) as run:
        yield run


async def test_serves_http_and_websocket_and_stops_gracefully_on_sigterm() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving("--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", urls=2) as run:
            http_url, ws_url = run.urls
            assert http_url.startswith("http://127.0.0.1:")
            assert http_url.endswith("/rpc")
            assert ws_url.startswith("ws://127.0.0.1:")
            async with http.connect(http_url, interfaces=[RobotWorldRead]) as backend:
                assert await backend.get_client(RobotWorldRead).count_robots(WAREHOUSE) == 3
            async with websocket.connect(ws_url, interfaces=[RobotWorldRead]) as backend:
                assert await backend.get_client(RobotWorldRead).count_robots(WAREHOUSE) == 3
            # HTTP serves /ws under its prefix too.
            async with websocket.connect(
                http_url.replace("http://", "ws://") + "/ws", interfaces=[RobotWorldRead]
            ) as backend:
                assert await backend.get_client(RobotWorldRead).count_robots(WAREHOUSE) == 3
            with trio.fail_after(10):
                assert await run.stop() == 0
            await run.wait_error("SIGTERM: stopping gracefully")


async def test_json_log_lines_carry_the_activity_id_of_a_call() -> None:
    activity = str(uuid.uuid4())
    with trio.fail_after(TIMEOUT):
        async with serving("--http", "127.0.0.1:0", "--log-format", "json", urls=1) as run:
            async with http.connect(run.urls[0], interfaces=[RobotWorldRead]) as backend:
                with tether.activity(activity):
                    await backend.get_client(RobotWorldRead).count_robots(WAREHOUSE)
            line = await run.wait_error(activity, '"tether.access"')
            assert await run.stop() == 0
    record = json.loads(line)
    assert record["activity_id"] == activity
    assert record["logger"] == "tether.access"
    assert record["operation"].endswith("count_robots")
    assert record["outcome"] == "ok"
    # Every line the process wrote is one JSON object.
    assert all(json.loads(text)["level"] for text in run.errors if text)


async def test_no_access_log_writes_no_access_line() -> None:
    activity = str(uuid.uuid4())
    with trio.fail_after(TIMEOUT):
        async with serving(
            "--http", "127.0.0.1:0", "--log-format", "json", "--no-access-log", urls=1
        ) as run:
            async with http.connect(run.urls[0], interfaces=[RobotWorldRead]) as backend:
                with tether.activity(activity):
                    await backend.get_client(RobotWorldRead).count_robots(WAREHOUSE)
            assert await run.stop() == 0
    # The process has exited: everything it wrote has been read.
    loggers = [json.loads(text)["logger"] for text in run.errors if text]
    assert "tether.serve" in loggers
    assert "tether.access" not in loggers


def _refusal(*args: str, target: str = TARGET) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", "serve", target, *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize(
    ("target", "args", "says"),
    [
        ("no_such_module:app", ["--http", "127.0.0.1:0"], "no module named 'no_such_module'"),
        (f"{TARGET}x", ["--http", "127.0.0.1:0"], "has no attribute 'managerx'"),
        (
            "examples.robot_world.interface:RobotWorldRead",
            ["--http", "127.0.0.1:0"],
            "expected an RpcManager, a BackendIpc",
        ),
        ("examples.robot_world.service", ["--http", "127.0.0.1:0"], "expected module:attr"),
        (TARGET, ["--http", "127.0.0.1"], "--http expects HOST:PORT"),
        (TARGET, ["--ws", "localhost:99999"], "--ws expects HOST:PORT"),
        (TARGET, [], "give --http HOST:PORT and/or --ws HOST:PORT"),
        (TARGET, ["--http", "127.0.0.1:0", "--workers", "0"], "--workers expects a count"),
        (TARGET, ["--http", "127.0.0.1:0", "--certfile", "/no/such.pem"], "cannot read --certfile"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(target: str, args: list[str], says: str) -> None:
    done = _refusal(*args, target=target)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("tether: ")
    assert says in done.stderr


def test_unreadable_certificate_is_exit_2(tmp_path: Path) -> None:
    bogus = tmp_path / "cert.pem"
    bogus.write_text("not a certificate\n")
    done = _refusal("--http", "127.0.0.1:0", "--certfile", str(bogus))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "is not a PEM certificate" in done.stderr


@pytest.mark.parametrize("option", ["--http", "--ws"])
def test_a_port_in_use_is_exit_2(option: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _refusal(option, f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert f"cannot listen on {option} 127.0.0.1:{port}: the address is in use" in done.stderr


async def test_websocket_serve_on_a_busy_port_raises() -> None:
    """Regression: it hung (its connections' task waited for a shutdown never begun)."""
    from examples.robot_world.service import manager

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        refused: list[BaseExceptionGroup[OSError]] = []
        with trio.fail_after(5):
            try:
                async with trio.open_nursery() as nursery:
                    port = taken.getsockname()[1]
                    await nursery.start(websocket.serve, manager, "127.0.0.1", port)
            except* OSError as group:
                refused.append(group)
    assert refused, "websocket.serve did not raise OSError for a port in use"


class Both:
    def __init__(self) -> None:
        self.manager = tether.RpcManager()
        self.ipc = tether.BackendIpc()


def test_resolve_app_takes_each_documented_shape() -> None:
    manager, ipc = tether.RpcManager(), tether.BackendIpc()
    assert resolve_app(manager) == (manager, None)
    assert resolve_app(ipc) == (None, ipc)
    assert resolve_app((manager, ipc)) == (manager, ipc)
    assert resolve_app(lambda: (None, ipc)) == (None, ipc)
    both = Both()
    assert resolve_app(both) == (both.manager, both.ipc)


def test_resolve_app_refuses_other_shapes() -> None:
    for wrong in (42, ("a", "b"), object(), lambda: 42):
        with pytest.raises(UsageError, match="expected an RpcManager"):
            resolve_app(wrong)
    with pytest.raises(UsageError, match="factory, called with no arguments"):
        resolve_app(lambda needed: needed)


async def test_serves_https_and_wss_with_a_certificate_and_key(tmp_path: Path) -> None:
    """`--certfile/--keyfile`: the URLs printed are https:// and wss://, and a
    client that trusts the certificate's CA calls through both."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    options = ("--certfile", str(certfile), "--keyfile", str(keyfile))
    with trio.fail_after(TIMEOUT):
        async with serving("--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", *options, urls=2) as run:
            https_url, wss_url = run.urls
            assert https_url.startswith("https://127.0.0.1:")
            assert wss_url.startswith("wss://127.0.0.1:")
            connect = http.connect(https_url, interfaces=[RobotWorldRead], ssl_context=trusting)
            async with connect as backend:
                assert await backend.get_client(RobotWorldRead).count_robots(WAREHOUSE) == 3
            connect_ws = websocket.connect(
                wss_url, interfaces=[RobotWorldRead], ssl_context=trusting
            )
            async with connect_ws as backend:
                assert await backend.get_client(RobotWorldRead).count_robots(WAREHOUSE) == 3
            assert await run.stop() == 0


def test_serve_rough_edges_are_clear_lines(tmp_path: Path) -> None:
    """Found in review: each said less than it knew (a bare `[SSL] PEM lib`, which of
    two files was missing, "is a int"), or none at all (a module calling sys.exit)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))

    done = _refusal("--http", "127.0.0.1:0", "--certfile", str(certfile))
    assert done.returncode == 2
    assert "has no private key: give --keyfile" in done.stderr

    missing = tmp_path / "missing-key.pem"
    done = _refusal("--http", "127.0.0.1:0", "--certfile", str(certfile), "--keyfile", str(missing))
    assert done.returncode == 2
    assert f"cannot read --keyfile {missing}" in done.stderr

    (tmp_path / "exits_app.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "int_app.py").write_text("manager = 5\n")
    env = {**_env(), "PYTHONPATH": os.pathsep.join([_env()["PYTHONPATH"], str(tmp_path)])}
    for target, says in [
        ("exits_app:manager", "importing module 'exits_app' called sys.exit(3)"),
        ("int_app:manager", "is an int:"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "tether", "serve", target, "--http", "127.0.0.1:0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
        assert says in done.stderr


async def test_cors_origins_and_allowed_hosts() -> None:
    """Behind a proxy the backend sees the proxy's Host, and a browser page is
    cross-origin to it: `--allowed-host` and `--cors-origin` say whom to serve."""
    import httpx

    args = ["--cors-origin", "https://app.example", "--allowed-host", "api.example"]
    with trio.fail_after(TIMEOUT):
        async with serving("--http", "127.0.0.1:0", *args, urls=1) as run:
            (url,) = run.urls
            async with httpx.AsyncClient() as client:

                async def status(host: str, origin: str | None = None) -> httpx.Response:
                    headers = {"host": host}
                    if origin is not None:
                        headers["origin"] = origin
                    return await client.get(f"{url}/", headers=headers)

                assert (await status("api.example")).status_code == 200
                assert (await status("other.example")).status_code == 400
                listed = await status("api.example", "https://app.example")
                assert listed.status_code == 200
                assert listed.headers["access-control-allow-origin"] == "https://app.example"
                assert (await status("api.example", "https://evil.example")).status_code == 403
            assert await run.stop() == 0
    done = _refusal("--http", "127.0.0.1:0", "--cors-origin", "app.example")
    assert (done.returncode, done.stderr.count("\n")) == (2, 1)
    assert done.stderr.startswith("tether: --cors-origin/--allowed-host: ")


async def test_the_readme_first_screen_commands_run(tmp_path: Path) -> None:
    """The `tether` lines of the README's first screen, run as written (port 0
    instead of 8000, a temporary file for the OpenAPI document)."""
    import shlex

    text = (ROOT / "README.md").read_text()
    block = text.split("The `tether` command serves", 1)[1].split("```\n", 2)[1]
    lines = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    commands = [shlex.split(line) for line in lines]
    assert [c[:2] for c in commands] == [
        ["tether", "serve"],
        ["tether", "describe"],
        ["tether", "call"],
        ["tether", "openapi"],
    ]
    serve = [arg.replace(":8000", ":0") for arg in commands[0][2:]]
    assert serve[0] == TARGET
    with trio.fail_after(TIMEOUT * 2):
        async with serving(*serve[1:], urls=1) as run:
            (url,) = run.urls[:1]
            outputs = []
            for command in commands[1:]:
                argv = [url if arg == "http://127.0.0.1:8000/rpc" else arg for arg in command[1:]]
                argv = [str(tmp_path / arg) if arg.endswith(".json") else arg for arg in argv]
                done = await trio.run_process(
                    [sys.executable, "-m", "tether", *argv],
                    env=_env(),
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
                assert done.returncode == 0, (argv, done.stderr.decode())
                outputs.append(done.stdout.decode())
            assert await run.stop() == 0
    assert "RobotWorldReadRpcInterface" in outputs[0]
    assert json.loads(outputs[1]) == 3
    assert "/rpc/RobotWorldReadRpcInterface/" in (tmp_path / "openapi.json").read_text()


async def test_sigterm_while_the_module_imports_is_one_line(tmp_path: Path) -> None:
    """Before serving, trio's signal handling is not installed yet: SIGTERM killed the
    process with no word (exit -15) while SIGINT said "interrupted"."""
    (tmp_path / "slow_app.py").write_text(
        "import sys\nprint('importing', file=sys.stderr, flush=True)\nsys.stdin.readline()\n"
    )
    env = {**_env(), "PYTHONPATH": os.pathsep.join([_env()["PYTHONPATH"], str(tmp_path)])}
    with trio.fail_after(TIMEOUT):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tether", "serve", "slow_app:app", "--http", "127.0.0.1:0"],
            env=env,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert process.stderr is not None
            seen = b""
            while b"importing\n" not in seen:
                chunk = await process.stderr.receive_some()
                assert chunk, seen
                seen += chunk
            process.send_signal(signal.SIGTERM)
            while chunk := await process.stderr.receive_some():
                seen += chunk
            code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
    assert code == 130
    assert seen.decode().splitlines() == ["importing", "tether: interrupted"]
