"""Several `tether serve` backends behind nginx, on this machine (docs/deployment.md).

    python examples/deploy/run.py                      # 2 backends of 2 workers, nginx on :8000
    python examples/deploy/run.py --backends 3 --listen 127.0.0.1:9000
    python examples/deploy/run.py --app examples.robot_world.service:manager

It starts the backends (`tether serve APP --http 127.0.0.1:PORT --workers 2
--route bK --socket-dir DIR`, JSON logs in the run's directory), writes
nginx.conf from nginx.conf.template into a fresh temporary directory, starts
nginx (Debian's /usr/sbin/nginx) in the foreground, waits until every worker
answers `GET {prefix}/health` and nginx does, and prints the URL to call.
Ctrl-C (or SIGTERM) stops nginx and the backends gracefully. SIGHUP makes a
rolling restart: each backend in turn is taken out of nginx, stopped with
SIGTERM, started again on its port and put back once healthy (see
`Deployment.restart`).

Tests import `Deployment` and `deployed` from here (tests/test_deploy_nginx.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "nginx.conf.template"
#: The app served unless told otherwise: each answer names its backend process.
DEFAULT_APP = "examples.deploy.app:app"
#: Seconds a backend, or nginx, gets to start serving.
START_TIMEOUT = 20.0
#: Seconds a backend gets to finish its calls at SIGTERM (its --graceful-timeout).
GRACE = 5.0
#: How often a health check is repeated while waiting (a bounded number of times).
POLL = 0.05
#: nginx's `worker_shutdown_timeout` (the template's): how long, at most, old
#: workers outlive a reload, holding WebSocket connections.
NGINX_SHUTDOWN = 10.0


def find_nginx() -> str | None:
    """nginx's path: on PATH, or Debian's /usr/sbin (not on every user's PATH)."""
    return shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin")


@attrs.define
class Backend:
    """One `tether serve` command: its name (`--route`, `DEPLOY_BACKEND`), port,
    worker processes and log file."""

    name: str
    port: int
    log: Path
    workers: int = 1
    process: trio.Process | None = None
    #: Whether nginx sends it new requests (False while it is being restarted).
    up: bool = True

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def routes(self) -> list[str]:
        """Its workers' routing tokens: `--route NAME` and `--workers N` make
        `NAME-0` ... `NAME-<N-1>` (one worker: `NAME`)."""
        if self.workers == 1:
            return [self.name]
        return [f"{self.name}-{index}" for index in range(self.workers)]


async def http_get(host: str, port: int | None, target: str) -> int:
    """The status of `GET target` on host:port, or on the Unix socket `host` when
    `port` is None (HTTP/1.1, one request); 0 if none came."""
    try:
        if port is None:
            stream: trio.abc.Stream = await trio.open_unix_socket(host)
        else:
            stream = await trio.open_tcp_stream(host, port)
    except OSError:
        return 0
    async with stream:
        request = f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        try:
            await stream.send_all(request.encode())
            head = b""
            while b"\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return 0
                head += chunk
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return 0
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


async def wait_healthy(
    host: str, port: int | None, prefix: str, what: str, process: trio.Process
) -> None:
    """Ask `GET {prefix}/health` every POLL seconds until it answers 200 (START_TIMEOUT).

    Raises:
        RuntimeError: `process` exited, or did not answer 200 in time.
    """
    with trio.move_on_after(START_TIMEOUT):
        while await http_get(host, port, f"{prefix}/health") != 200:
            if process.returncode is not None:
                raise RuntimeError(f"{what} exited ({process.returncode}): see its log")
            await trio.sleep(POLL)
        return
    raise RuntimeError(f"{what} did not answer {prefix}/health within {START_TIMEOUT} s")


@attrs.define
class Deployment:
    """The backends and nginx of one run, in `directory`."""

    app: str
    directory: Path
    backends: list[Backend]
    prefix: str = "/rpc"
    listen: str = "127.0.0.1:8000"
    nginx: trio.Process | None = None
    #: Source trees the backends import from (put first on their PYTHONPATH).
    path: Sequence[Path] = ()

    @property
    def socket_dir(self) -> Path:
        """Where each worker listens on its own Unix socket, `<route>.sock`."""
        return self.directory / "sockets"

    def socket(self, route: str) -> Path:
        return self.socket_dir / f"{route}.sock"

    @property
    def url(self) -> str:
        """The URL clients call: nginx's address and the prefix."""
        return f"http://{self.listen}{self.prefix}"

    # -- backends -------------------------------------------------------------

    async def start_backend(self, backend: Backend) -> None:
        """Start `tether serve` for `backend` and wait until it answers its health check."""
        env = {**os.environ, "DEPLOY_BACKEND": backend.name}
        if self.path:
            env["PYTHONPATH"] = os.pathsep.join(
                [*map(str, self.path), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
        with backend.log.open("ab") as log:
            backend.process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "tether",
                    "serve",
                    self.app,
                    "--http",
                    backend.address,
                    "--prefix",
                    self.prefix,
                    "--workers",
                    str(backend.workers),
                    "--route",
                    backend.name,
                    *(["--socket-dir", str(self.socket_dir)] if backend.workers > 1 else []),
                    "--log-format",
                    "json",
                    "--graceful-timeout",
                    str(GRACE),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        what = f"backend {backend.name}"
        if backend.workers == 1:
            await wait_healthy("127.0.0.1", backend.port, self.prefix, what, backend.process)
            return
        # Every worker, each on its own socket: the shared port would answer
        # as soon as one of them does.
        for route in backend.routes:
            path = str(self.socket(route))
            await wait_healthy(path, None, self.prefix, f"{what} ({route})", backend.process)

    async def stop_backend(self, backend: Backend) -> int:
        """SIGTERM (a graceful stop: calls running finish); wait for the exit; its code."""
        process = backend.process
        if process is None:
            return 0
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(GRACE + 5):
            return await process.wait()
        process.kill()
        return await process.wait()

    # -- nginx ----------------------------------------------------------------

    def write_config(self) -> Path:
        """Write nginx.conf (`config`) into the directory; its path."""
        conf = self.directory / "nginx.conf"
        conf.write_text(self.config())
        return conf

    def config(self) -> str:
        """nginx.conf from the template: the backends that are up in the round
        robin, and every worker's own upstream (its sessions go on while its
        backend is out of the round robin, until it stops)."""
        servers = [f"        server {b.address} max_fails=0;" for b in self.backends if b.up]
        workers = []
        routes = []
        for backend in self.backends:
            for route in backend.routes:
                one = backend.workers == 1
                address = backend.address if one else f"unix:{self.socket(route)}"
                workers.append(
                    f"    upstream {route} {{ server {address} max_fails=0; keepalive 8; }}"
                )
                routes.append(f"        {route} {route};")
        user = "user root;" if os.geteuid() == 0 else ""
        text = TEMPLATE.read_text()
        for name, value in {
            "@DIR@": str(self.directory),
            "@LISTEN@": self.listen,
            "@PREFIX@": self.prefix,
            "@SERVERS@": "\n".join(servers),
            "@WORKERS@": "\n".join(workers),
            "@ROUTES@": "\n".join(routes),
            "@USER@": user,
        }.items():
            text = text.replace(name, value)
        return text

    async def start_nginx(self, listener: socket.socket | None = None) -> None:
        """Start nginx on `listen` (on `listener` when given: nginx inherits it)."""
        binary = find_nginx()
        if binary is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
        conf = self.write_config()
        env = dict(os.environ)
        fds: list[int] = []
        if listener is not None:
            # nginx's own way of inheriting listening sockets (as on its binary upgrade).
            env["NGINX"] = f"{listener.fileno()};"
            fds.append(listener.fileno())
        self.nginx = await trio.lowlevel.open_process(
            [binary, "-c", str(conf), "-p", str(self.directory), "-e", "error.log"],
            env=env,
            pass_fds=fds,
        )
        host, _, port = self.listen.rpartition(":")
        await wait_healthy(host, int(port), self.prefix, "nginx", self.nginx)

    def nginx_workers(self) -> set[int]:
        """The process ids of nginx's workers (the master's children, from /proc)."""
        assert self.nginx is not None
        pid = self.nginx.pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except OSError:
            return set()
        return {int(p) for p in text.split()}

    async def reload_nginx(self, *, wait: bool = True) -> None:
        """Rewrite the config and reload it; with `wait`, return once every old
        worker has exited.

        nginx's reload is graceful: new workers take the new config at once,
        and old ones finish the requests they hold, then exit (WebSocket
        connections they hold are closed after NGINX_SHUTDOWN seconds).
        """
        assert self.nginx is not None
        old = self.nginx_workers()
        self.write_config()
        self.nginx.send_signal(signal.SIGHUP)
        if not wait:
            return
        # nginx's workers are its children, not ours: nothing to await but
        # their absence from /proc, asked a bounded number of times.
        for _ in range(int((NGINX_SHUTDOWN + 5) / POLL)):
            if not old & self.nginx_workers():
                return
            await trio.sleep(POLL)
        raise RuntimeError("nginx's old workers did not exit after the reload")

    async def stop_nginx(self) -> None:
        """SIGQUIT (nginx's graceful stop); wait for it to exit."""
        process = self.nginx
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGQUIT)
        with trio.move_on_after(5):
            await process.wait()
            return
        process.kill()
        await process.wait()

    # -- the rolling restart ---------------------------------------------------

    async def restart(self, backend: Backend, *, drain: bool = True) -> None:
        """Restart one backend: out of nginx (`drain`), SIGTERM, start, back in.

        With `drain`, nginx stops sending it requests before it is stopped, so
        nothing races its shutdown; without, only the backend's own graceful
        stop and nginx's `proxy_next_upstream` stand between its stop and a
        502 (see docs/deployment.md).
        """
        if drain:
            backend.up = False
            await self.reload_nginx()
        await self.stop_backend(backend)
        await self.start_backend(backend)
        if drain:
            backend.up = True
            await self.reload_nginx()

    async def rolling_restart(self, *, drain: bool = True) -> None:
        """Restart every backend, one at a time (each serves again before the next)."""
        for backend in self.backends:
            await self.restart(backend, drain=drain)


def free_port() -> int:
    """A port nothing listens on now (the backends must keep theirs across restarts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def deployed(
    directory: Path,
    *,
    app: str = DEFAULT_APP,
    backends: int = 2,
    workers: int = 2,
    listener: socket.socket | None = None,
    listen: str = "127.0.0.1:8000",
    prefix: str = "/rpc",
    path: Sequence[Path] = (),
) -> AsyncIterator[Deployment]:
    """Run `backends` backends and nginx in `directory` for the block; stop them all after.

    `listener`: a bound, listening socket nginx takes over (its address wins over `listen`).
    """
    if listener is not None:
        host, port = listener.getsockname()[:2]
        listen = f"{host}:{port}"
    deployment = Deployment(
        app,
        directory,
        [
            Backend(f"b{k}", free_port(), directory / f"b{k}.log", workers)
            for k in range(1, backends + 1)
        ],
        prefix=prefix,
        listen=listen,
        path=path,
    )
    try:
        async with trio.open_nursery() as nursery:
            for backend in deployment.backends:
                nursery.start_soon(deployment.start_backend, backend)
        await deployment.start_nginx(listener)
        yield deployment
    finally:
        with trio.CancelScope(shield=True):
            await deployment.stop_nginx()
            async with trio.open_nursery() as nursery:
                for backend in deployment.backends:
                    nursery.start_soon(deployment.stop_backend, backend)
            for process in [deployment.nginx, *(b.process for b in deployment.backends)]:
                if process is not None and process.returncode is None:
                    process.kill()
                    await process.wait()


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--app", default=DEFAULT_APP, help=f"module:attr (default {DEFAULT_APP})")
    parser.add_argument("--backends", type=int, default=2, help="how many (default 2)")
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes per backend (default 2)"
    )
    parser.add_argument("--listen", default="127.0.0.1:8000", help="nginx's HOST:PORT")
    parser.add_argument("--prefix", default="/rpc", help="the backends' --prefix (default /rpc)")
    parser.add_argument(
        "--dir",
        type=Path,
        help="nginx's files, the logs and the sockets go here, kept at exit "
        "(default: a new temporary directory, removed at exit)",
    )
    args = parser.parse_args(argv)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        return await _run(args, args.dir.resolve())
    directory = Path(tempfile.mkdtemp(prefix="tether-deploy-"))
    try:
        return await _run(args, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _run(args: argparse.Namespace, directory: Path) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with deployed(
            directory,
            app=args.app,
            backends=args.backends,
            workers=args.workers,
            listen=args.listen,
            prefix=args.prefix,
            path=[HERE.parents[1]],
        ) as deployment:
            print(f"serving {deployment.url} (nginx and logs in {directory})", flush=True)
            print("Ctrl-C stops; `kill -HUP` this process for a rolling restart", flush=True)
            async for signum in signals:
                if signum != signal.SIGHUP:
                    break
                print("rolling restart...", flush=True)
                await deployment.rolling_restart()
                print("rolling restart done", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(trio.run(main))
    except RuntimeError as exc:  # nginx missing, a backend that would not start...
        sys.exit(f"run.py: {exc}")
