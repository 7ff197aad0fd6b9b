"""`tether serve --workers N`, `--route`, `--socket-dir`, and mutual TLS options.

Real processes: each test runs `python -m tether serve tests/workers_app.py`
with this tree on PYTHONPATH, reads what it prints, calls through the shared
TCP port and through each worker's own Unix socket (relayed from a TCP port on
127.0.0.1, as nginx would reach it), and stops it (SIGTERM; a kill when the
block ends, whatever happened).
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme

import tether
from tests import child_processes
from tether import ConnectError
from tether.transports import http, websocket

HERE = Path(__file__).resolve().parent
SOURCES = Path(tether.__file__).resolve().parents[1]
TARGET = "workers_app:app"
#: Python processes start in about a second each; a loaded machine takes longer.
TIMEOUT = 40.0
#: New connections tried before both workers must have answered one.
MAX_TRIES = 200

sys.path.insert(0, str(HERE))
from workers_app import Pid, PidIpc  # noqa: E402


class Serving(child_processes.Serving):
    """One `tether serve --workers` process: its URL and its workers' sockets."""

    @property
    def url(self) -> str:
        return self.lines[0]

    @property
    def sockets(self) -> list[str]:
        """Each worker's Unix socket path, from its `worker i: unix:PATH` line."""
        found = []
        for index, line in enumerate(line for line in self.lines if line.startswith("worker ")):
            prefix = f"worker {index}: unix:"
            assert line.startswith(prefix), line
            found.append(line.removeprefix(prefix))
        return found


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SOURCES), str(HERE)])}


@asynccontextmanager
async def serving(*args: str, lines: int) -> AsyncIterator[Serving]:
    """`tether serve TARGET args` for the block, once it printed `lines` lines."""
    async with child_processes.serving(TARGET, *args, lines=lines, env=_env(), kind=Serving) as run:
        assert isinstance(run, Serving)
        yield run


@asynccontextmanager
async def unix_relay(path: str) -> AsyncIterator[int]:
    """A TCP port on 127.0.0.1 whose connections are relayed to the Unix socket `path`."""

    async def pump(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
            await sink.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def relay(client: trio.SocketStream) -> None:
        async with client, await trio.open_unix_socket(path) as server, trio.open_nursery() as n:
            n.start_soon(pump, client, server)
            n.start_soon(pump, server, client)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, relay, 0, host="127.0.0.1")
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def call_pid(url: str, **kwargs: object) -> int:
    """`Pid.pid` over a new connection."""
    async with http.connect(url, interfaces=[Pid], retry=None, **kwargs) as backend:  # type: ignore[arg-type]
        return await backend.get_client(Pid).pid()


def worker_pids(parent: int) -> set[int]:
    """The pids of `parent`'s children running a tether worker (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            found.add(int(entry))
    return found


# ---------------------------------------------------------------------------
# Serving


async def test_two_workers_serve_calls_on_the_shared_port_and_each_on_its_own_socket() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving("--http", "127.0.0.1:0", "--workers", "2", lines=3) as run:
            assert run.url.startswith("http://127.0.0.1:")
            assert run.url.endswith("/rpc")
            paths = run.sockets
            assert [Path(p).name for p in paths] == ["w-0.sock", "w-1.sock"]
            assert Path(paths[0]).parent == Path(paths[1]).parent
            for path in paths:
                assert os.stat(path).st_mode & 0o777 == 0o666
            assert os.stat(Path(paths[0]).parent).st_mode & 0o777 == 0o755
            workers = worker_pids(run.process.pid)
            assert len(workers) == 2
            # The kernel spreads new connections over both processes.
            seen: set[int] = set()
            for _ in range(MAX_TRIES):
                seen.add(await call_pid(run.url))
                if len(seen) == 2:
                    break
            assert seen == workers
            # Each worker's Unix socket reaches that worker, and no other.
            own = []
            for path in paths:
                async with unix_relay(path) as port:
                    own.append(await call_pid(f"http://127.0.0.1:{port}/rpc"))
            assert set(own) == workers
            with trio.fail_after(15):
                assert await run.stop() == 0
            assert not Path(paths[0]).parent.exists(), "the temporary socket dir is left"


async def test_ipc_over_http_reaches_the_worker_of_the_socket_with_its_route(
    tmp_path: Path,
) -> None:
    """`--route b1 --socket-dir DIR`: worker i is `b1-i`, its socket DIR/b1-i.sock;
    an IPC session opened through it is that worker's, and its id says so."""
    with trio.fail_after(TIMEOUT):
        async with serving(
            "--http",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--route",
            "b1",
            "--socket-dir",
            str(tmp_path),
            lines=3,
        ) as run:
            assert run.sockets == [str(tmp_path / "b1-0.sock"), str(tmp_path / "b1-1.sock")]
            for index, path in enumerate(run.sockets):
                async with unix_relay(path) as port:
                    url = f"http://127.0.0.1:{port}/rpc"
                    rpc_pid = await call_pid(url)
                    async with http.connect_ipc(url, channels=[PidIpc]) as frontend:
                        assert frontend.session_id.startswith(f"b1-{index}.")
                        assert await frontend.proxy(PidIpc).pid() == rpc_pid
            # IPC over the shared port's /ws is routed too.
            ws_url = run.url.replace("http://", "ws://", 1) + "/ws"
            async with websocket.connect_ipc(ws_url, channels=[PidIpc]) as frontend:
                index = int(frontend.session_id.split(".", 1)[0].removeprefix("b1-"))
                async with unix_relay(run.sockets[index]) as port:
                    own = await call_pid(f"http://127.0.0.1:{port}/rpc")
                assert await frontend.proxy(PidIpc).pid() == own
            assert await run.stop() == 0
    # A --socket-dir given is kept; the sockets in it are removed.
    assert os.listdir(tmp_path) == []


async def test_sigterm_lets_a_call_in_flight_finish_then_exits_0() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving("--http", "127.0.0.1:0", "--workers", "2", lines=3) as run:
            async with http.connect(run.url, interfaces=[Pid], retry=None) as backend:
                answers: list[int] = []

                async def nap() -> None:
                    answers.append(await backend.get_client(Pid).nap(1.0))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(nap)
                    pid = int((await run.wait_error("napping")).split()[-1])
                    run.process.send_signal(signal.SIGTERM)
                    await run.wait_error("SIGTERM: stopping gracefully")
                assert answers == [pid]
            with trio.fail_after(15):
                assert await run.process.wait() == 0
            # One line per worker: the parent forwarded the signal to both.
            await run.wait_count("SIGTERM: stopping gracefully", 2)


async def test_sigterm_to_every_process_as_systemd_sends_it_still_drains() -> None:
    """systemd's default stop sends SIGTERM to each process of the unit: a worker
    then gets it twice (from systemd and from the parent), and must still drain."""
    with trio.fail_after(TIMEOUT):
        async with serving("--http", "127.0.0.1:0", "--workers", "2", lines=3) as run:
            workers = worker_pids(run.process.pid)
            async with http.connect(run.url, interfaces=[Pid], retry=None) as backend:
                answers: list[int] = []

                async def nap() -> None:
                    answers.append(await backend.get_client(Pid).nap(1.0))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(nap)
                    pid = int((await run.wait_error("napping")).split()[-1])
                    for each in workers:
                        os.kill(each, signal.SIGTERM)
                    # Both began draining (two signals at once would be one).
                    await run.wait_count("SIGTERM: stopping gracefully", 2)
                    run.process.send_signal(signal.SIGTERM)
                assert answers == [pid]
            with trio.fail_after(15):
                assert await run.process.wait() == 0


async def test_a_second_signal_stops_the_workers_at_once_with_exit_1() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(
            "--http", "127.0.0.1:0", "--workers", "2", "--graceful-timeout", "30", lines=3
        ) as run:
            async with http.connect(run.url, interfaces=[Pid], retry=None) as backend:

                async def nap() -> None:
                    with pytest.raises(tether.TransportError):
                        await backend.get_client(Pid).nap(30.0)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(nap)
                    await run.wait_error("napping")
                    run.process.send_signal(signal.SIGINT)
                    await run.wait_error("SIGTERM: stopping gracefully")
                    run.process.send_signal(signal.SIGINT)
            # Long before the 30 s of --graceful-timeout.
            with trio.fail_after(10):
                assert await run.process.wait() == 1


async def test_a_worker_that_dies_stops_the_others_and_exits_1() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving("--http", "127.0.0.1:0", "--workers", "2", lines=3) as run:
            workers = worker_pids(run.process.pid)
            assert len(workers) == 2
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            with trio.fail_after(15):
                assert await run.process.wait() == 1
            line = await run.wait_error("exited unexpectedly")
            assert line.startswith("tether: worker ")
            assert f"(pid {victim}) exited unexpectedly (killed by SIGKILL)" in line
            for pid in workers - {victim}:
                assert _state(pid) in ("gone", "Z")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


async def test_websocket_is_served_by_worker_0() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(
            "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--workers", "2", lines=4
        ) as run:
            assert run.lines[1].startswith("ws://127.0.0.1:")
            async with websocket.connect(run.lines[1], interfaces=[Pid]) as backend:
                ws_pid = await backend.get_client(Pid).pid()
            async with unix_relay(run.sockets[0]) as port:
                assert await call_pid(f"http://127.0.0.1:{port}/rpc") == ws_pid
            assert await run.stop() == 0


# ---------------------------------------------------------------------------
# Bad input


def _refusal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", "serve", TARGET, *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--ws", "127.0.0.1:0", "--workers", "2"], "--workers N needs --http HOST:PORT"),
        (["--http", "127.0.0.1:0", "--workers", "0"], "--workers expects a count of 1 or more"),
        (["--http", "127.0.0.1:0", "--route", "B1"], "--route expects 1-32 characters"),
        (
            ["--http", "127.0.0.1:0", "--workers", "2", "--route", "x" * 31],
            "(with -<worker index> added)",
        ),
        (
            ["--http", "127.0.0.1:0", "--workers", "2", "--socket-dir", "/" + "d" * 120],
            "cannot listen on the Unix socket",
        ),
        (["--http", "127.0.0.1:0", "--require-client-cert"], "--require-client-cert needs"),
        (["--http", "127.0.0.1:0", "--client-ca", "/no/ca.pem"], "--client-ca needs --certfile"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    done = _refusal(*args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("tether: ")
    assert says in done.stderr


def test_a_port_in_use_is_exit_2_with_workers() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _refusal("--http", f"127.0.0.1:{port}", "--workers", "2")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"cannot listen on --http 127.0.0.1:{port}: the address is in use" in done.stderr


def test_a_ws_port_in_use_is_exit_2_with_workers() -> None:
    """Worker 0 cannot bind --ws: its one line, the other worker stopped, exit 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _refusal("--http", "127.0.0.1:0", "--ws", f"127.0.0.1:{port}", "--workers", "2")
    assert done.returncode == 2
    assert done.stdout == ""
    refusals = [line for line in done.stderr.splitlines() if line.startswith("tether: ")]
    assert refusals == [
        f"tether: cannot listen on --ws 127.0.0.1:{port}: the address is in use "
        "(pick another HOST:PORT, or 0 for any port)"
    ]


# ---------------------------------------------------------------------------
# Mutual TLS


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[trustme.CA, list[str]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    options = ["--certfile", str(certfile), "--keyfile", str(keyfile), "--client-ca", str(cafile)]
    return ca, options


def _client(ca: trustme.CA, *, certificate: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if certificate is not None:
        certificate.issue_cert("frontend@example.com").configure_cert(context)
    return context


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_require_client_cert_refuses_a_client_without_one(
    workers: str, tls_files: tuple[trustme.CA, list[str]]
) -> None:
    ca, options = tls_files
    lines = 1 if workers == "1" else 3
    args = ("--http", "127.0.0.1:0", "--workers", workers, *options, "--require-client-cert")
    with trio.fail_after(TIMEOUT):
        async with serving(*args, lines=lines) as run:
            assert run.url.startswith("https://127.0.0.1:")
            with pytest.raises(ConnectError) as caught:
                await call_pid(run.url, ssl_context=_client(ca))
            assert caught.value.reason == "client certificate refused"
            with pytest.raises(ConnectError) as stranger:
                await call_pid(run.url, ssl_context=_client(ca, certificate=trustme.CA()))
            assert stranger.value.reason == "client certificate refused"
            assert await call_pid(run.url, ssl_context=_client(ca, certificate=ca)) > 0
            assert await run.stop() == 0


async def test_client_ca_without_require_verifies_a_certificate_but_takes_none(
    tls_files: tuple[trustme.CA, list[str]],
) -> None:
    ca, options = tls_files
    with trio.fail_after(TIMEOUT):
        async with serving("--http", "127.0.0.1:0", *options, lines=1) as run:
            assert await call_pid(run.url, ssl_context=_client(ca)) > 0
            assert await call_pid(run.url, ssl_context=_client(ca, certificate=ca)) > 0
            with pytest.raises(ConnectError):
                await call_pid(run.url, ssl_context=_client(ca, certificate=trustme.CA()))
            assert await run.stop() == 0


def test_an_unreadable_client_ca_is_exit_2(
    tls_files: tuple[trustme.CA, list[str]], tmp_path: Path
) -> None:
    _, options = tls_files
    bogus = tmp_path / "bogus-ca.pem"
    bogus.write_text("not a certificate\n")
    options[-1] = str(bogus)
    done = _refusal("--http", "127.0.0.1:0", *options)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"cannot use the client CA {bogus}" in done.stderr
