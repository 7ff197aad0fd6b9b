"""`tether serve --workers N`: N processes serving HTTP on one shared socket.

hypercorn's own model (`hypercorn.run`): the parent binds the `--http` socket
once and starts N worker processes (multiprocessing's spawn context); each
inherits the socket, and the kernel spreads new connections over the
processes accepting on it. Each worker loads `module:attr` itself and runs
what a single-process `tether serve` runs (`serve_app`), with:

* the routing token `<route>-<i>` starting its IPC session ids, and
* a Unix socket of its own, `<socket-dir>/<route>-<i>.sock` (mode 0666), so
  that a reverse proxy can send every request of an IPC session to the one
  process that holds it (docs/deployment.md).

The parent prints the URLs once every worker serves (`--http`'s URL, `--ws`'s
if given, then `worker <i>: unix:<path>` for each), forwards SIGINT and
SIGTERM to the workers as SIGTERM (they ignore SIGINT, so a Ctrl-C sent to the
whole process group counts once; a second signal stops them at once), and
exits 0 once all have stopped cleanly. A worker that exits unasked is told on
stderr in one line; the others are stopped, and the exit code is 1 (a
supervisor restarts the command). `--ws` is served by worker 0 alone.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

import trio

from ._common import CliError as UsageError
from ._common import load_target
from ._serve import (
    bind_message,
    configure_logging,
    load_tls,
    parse_address,
    resolve_app,
    serve_app,
    serve_blocking,
)

__all__ = ["run_workers"]

#: Connections the kernel queues on a socket before a worker accepts them
#: (hypercorn's default backlog).
_BACKLOG = 100


@dataclasses.dataclass
class _Worker:
    """What worker `index` is given (pickled into its process)."""

    index: int
    args: argparse.Namespace
    route: str
    #: The shared `--http` socket, then the worker's own Unix socket.
    sockets: list[socket.socket]
    #: Where it says `("ready", urls)` or `("error", message, exit_code)`.
    report: Connection


def run_workers(args: argparse.Namespace, route: str) -> int:
    """Serve `args` with `args.workers` processes until stopped; the exit code.

    Raises:
        UsageError: `--http` or a worker's Unix socket cannot be bound, or a
            worker could not start (its message).
    """
    host, port = parse_address("--http", args.http)
    shared = _bind_tcp(host, port, args.http)
    made_dir = args.socket_dir is None
    try:
        if made_dir:
            socket_dir = tempfile.mkdtemp(prefix="tether-")
            # mkdtemp makes it 0700: a proxy running as another user (nginx's
            # workers) must reach the sockets in it.
            os.chmod(socket_dir, 0o755)
        else:
            socket_dir = os.path.abspath(args.socket_dir)
            try:
                os.makedirs(socket_dir, exist_ok=True)
            except OSError as exc:
                raise UsageError(
                    f"cannot use --socket-dir {args.socket_dir}: {exc.strerror or exc}"
                ) from None
        paths: list[str] = []
        try:
            own = []
            for index in range(args.workers):
                path = os.path.join(socket_dir, f"{route}-{index}.sock")
                own.append(_bind_unix(path))
                paths.append(path)
            return _Supervisor(args, route, shared, own, paths).run()
        finally:
            for path in paths:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            if made_dir:
                shutil.rmtree(socket_dir, ignore_errors=True)
    finally:
        shared.close()


def _bind_tcp(host: str, port: int, address: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise UsageError(bind_message("--http", address, exc)) from None
    return sock


def _bind_unix(path: str) -> socket.socket:
    if os.path.exists(path):
        # Left by a run that was killed, or in use by one that runs.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except OSError:
                pass
            else:
                raise UsageError(
                    f"another process listens on {path}: give another --socket-dir or --route"
                )
        with contextlib.suppress(OSError):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # Any local user's proxy (nginx runs as its own user) may connect.
        os.chmod(path, 0o666)
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on the Unix socket {path}: {exc.strerror or exc} "
            "(give a shorter or writable --socket-dir)"
        ) from None
    return sock


class _Supervisor:
    """The parent: start the workers, say where they serve, stop them, judge how they ended."""

    def __init__(
        self,
        args: argparse.Namespace,
        route: str,
        shared: socket.socket,
        own: list[socket.socket],
        paths: list[str],
    ) -> None:
        self.args = args
        self.route = route
        self.shared = shared
        self.own = own
        self.paths = paths
        self.processes: list[BaseProcess] = []
        #: Signals received (the first stops gracefully, a second at once).
        self.signals = 0
        #: Why the workers are being stopped other than by a signal.
        self.failure: tuple[str, int] | None = None

    def run(self) -> int:
        context = multiprocessing.get_context("spawn")
        readers: dict[Connection, int] = {}
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for index in range(self.args.workers):
                reader, writer = context.Pipe(duplex=False)
                args = copy.copy(self.args)
                if index:
                    args.ws = None  # worker 0 alone serves --ws
                worker = _Worker(
                    index, args, f"{self.route}-{index}", [self.shared, self.own[index]], writer
                )
                process = context.Process(
                    target=_worker_main, args=(worker,), name=f"tether-worker-{index}"
                )
                process.start()
                writer.close()
                self.processes.append(process)
                readers[reader] = index
                if self.signals:
                    self._forward()
            # The workers hold the sockets now: once they have all closed them,
            # connects are refused, rather than queued for nobody.
            self.shared.close()
            for sock in self.own:
                sock.close()
            return self._watch(readers)
        finally:
            for left in self.processes:
                if left.exitcode is None:
                    left.kill()
                    left.join()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        self._forward()

    def _forward(self) -> None:
        for process in self.processes:
            if process.exitcode is None and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def _stop(self, why: str, exit_code: int) -> None:
        if self.failure is None and not self.signals:
            self.failure = (why, exit_code)
            self._forward()

    def _watch(self, readers: dict[Connection, int]) -> int:
        urls: dict[int, list[str]] = {}
        sentinels = {process.sentinel: index for index, process in enumerate(self.processes)}
        codes: dict[int, int] = {}
        announced = False
        while sentinels:
            for ready in wait([*readers, *sentinels]):
                if isinstance(ready, Connection):
                    self._read(readers, ready, urls)
                    continue
                assert isinstance(ready, int)
                index = sentinels.pop(ready)
                process = self.processes[index]
                process.join()
                for reader, which in list(readers.items()):
                    if which == index:  # its last word first (a startup error)
                        self._read(readers, reader, urls)
                code = process.exitcode
                assert code is not None
                codes[index] = code
                if not announced:
                    self._stop(f"worker {index} exited before serving ({_how(code)})", 1)
                else:
                    self._stop(
                        f"worker {index} (pid {process.pid}) exited unexpectedly ({_how(code)}); "
                        "stopped the others",
                        1,
                    )
            if not announced and len(urls) == len(self.processes) and self.failure is None:
                announced = True
                for url in urls[0]:
                    print(url, flush=True)
                for index, path in enumerate(self.paths):
                    print(f"worker {index}: unix:{path}", flush=True)
        for reader in readers:
            reader.close()
        if self.failure is not None:
            why, exit_code = self.failure
            print(f"tether: {why}", file=sys.stderr, flush=True)
            return exit_code
        # Asked to stop: a worker stopped by the signal before it set its own
        # handler had nothing to drain.
        clean = all(code in (0, -signal.SIGTERM) for code in codes.values())
        return 0 if clean else 1

    def _read(
        self, readers: dict[Connection, int], reader: Connection, urls: dict[int, list[str]]
    ) -> None:
        index = readers[reader]
        try:
            message = reader.recv() if reader.poll() else None
        except (EOFError, OSError):
            message = None
        if message is None:
            del readers[reader]
            reader.close()
            return
        if message[0] == "ready":
            urls[index] = list(message[1])
        elif message[0] == "error":
            self._stop(str(message[1]), int(message[2]))
        del readers[reader]
        reader.close()


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# ---------------------------------------------------------------------------
# In the worker process


def _worker_main(worker: _Worker) -> None:
    """A worker process's body: serve until SIGTERM (or the parent is gone)."""
    # The parent says when to stop (it forwards SIGINT as SIGTERM): a Ctrl-C
    # sent to the whole process group must not count twice.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = _serve_worker(worker)
    except UsageError as exc:
        worker.report.send(("error", str(exc), exc.exit_code))
        code = exc.exit_code
    finally:
        worker.report.close()
    sys.exit(code)


def _serve_worker(worker: _Worker) -> int:
    args = worker.args
    configure_logging(args.log_level, args.log_format, args.access_log)
    tls = load_tls(args.certfile, args.keyfile, args.client_ca, args.require_client_cert)
    manager, ipc = resolve_app(load_target(args.target), args.target)
    parent = multiprocessing.parent_process()

    async def parent_gone() -> None:
        # Readable (at EOF) once the parent has exited, however it did.
        if parent is None:
            await trio.sleep_forever()
        else:
            await trio.lowlevel.wait_readable(parent.sentinel)

    def announce(urls: list[str]) -> None:
        worker.report.send(("ready", urls))

    return serve_blocking(
        functools.partial(
            serve_app,
            args,
            manager,
            ipc,
            tls,
            route=worker.route,
            sockets=worker.sockets,
            stop_signals=(signal.SIGTERM,),
            announce=announce,
            stop_when=parent_gone,
        )
    )
