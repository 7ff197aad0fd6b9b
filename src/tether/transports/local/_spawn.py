"""`spawn`: start a backend process paired with this frontend; talk to it over a local socket."""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager

import trio

from ...runtime import (
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_NOTIFICATIONS,
    DEFAULT_SLOW_FRONTEND_TIMEOUT,
    DEFAULT_STREAM_WINDOW,
    ConnectError,
    FrontendIpc,
    IpcInterface,
    RpcConnection,
    RpcInterface,
    StreamWindow,
)
from ...runtime._interceptors import Interceptor
from ...runtime._retry import DEFAULT_RETRY, RetryPolicy
from ...runtime._util import check_seconds, open_service_nursery
from ._client import ipc_session, open_stream, rpc_session
from ._lifeline import (
    LIFELINE_ENV,
    MAX_LINE,
    SOCKET_ENV,
    LineSplitter,
    decode_line,
    make_record,
)
from ._paths import SOCKET_NAME, check_platform, private_directory
from ._socket import DEFAULT_MAX_MESSAGE_SIZE, SocketStream

__all__ = ["BackendStartError", "PairedBackend", "spawn"]

_log = logging.getLogger("tether.local")
#: Where the backend's stderr lines go, one record each.
_stderr_log = logging.getLogger("tether.local.stderr")

#: Lines of the backend's stderr kept for errors (`PairedBackend.stderr_tail`).
STDERR_TAIL_LINES = 20
#: Longest stderr line kept or logged, in bytes; the rest of it is cut.
_MAX_STDERR_LINE = 4096
#: Seconds to wait, once the backend has exited, for the end of its stderr and
#: lifeline (a grandchild may hold them open).
_DRAIN_TIMEOUT = 1.0
#: Seconds a connection that lost its backend waits to learn the exit status.
#: A process killed closes its sockets and exits in one step, so this is short.
_EXIT_WAIT = 0.5
#: Seconds to wait for a process to die after SIGKILL before giving up on it.
_KILL_WAIT = 5.0


class BackendStartError(ConnectError):
    """The spawned backend exited, hung, or could not be started before it was ready.

    Attributes:
        returncode: The backend's exit status (negative: the signal that ended
            it), or None when it could not be started.
        stderr_tail: The last lines the backend wrote to stderr (at most 20).
    """

    def __init__(self, message: str, *, returncode: int | None, stderr_tail: str) -> None:
        super().__init__(message, details={"returncode": returncode})
        self.returncode = returncode
        self.stderr_tail = stderr_tail


def exit_status(returncode: int) -> str:
    """`"status 3"`, or `"status -9 (SIGKILL)"` for a process a signal ended."""
    if returncode < 0:
        try:
            return f"status {returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            pass
    return f"status {returncode}"


class PairedBackend:
    """A backend process started by `spawn`, for the block: connect to it here.

    Attributes:
        path: The socket it serves on, in a private directory.
        pid: Its process id.
    """

    def __init__(self, process: trio.Process, path: str, lifeline: trio.SocketStream) -> None:
        self.path = path
        self.pid = process.pid
        self._process = process
        self._lifeline = lifeline
        self._tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._streams: set[SocketStream] = set()
        self._ready = trio.Event()
        self._ready_path: str | None = None
        self._exited = trio.Event()
        self._lifeline_closed = trio.Event()
        self._stderr_closed = trio.Event()
        self._stopping = False
        self._stopped = False
        self._malformed = 0

    def __repr__(self) -> str:
        state = (
            "running" if self.returncode is None else f"exited with {exit_status(self.returncode)}"
        )
        return f"<PairedBackend pid={self.pid} {state} path={self.path!r}>"

    @property
    def returncode(self) -> int | None:
        """The exit status once the backend has exited (negative: by that signal), else None."""
        return self._process.returncode

    @property
    def stderr_tail(self) -> str:
        """The last lines (at most 20) the backend wrote to its stderr."""
        return "\n".join(self._tail)

    async def wait(self) -> int:
        """Wait for the backend to exit, and return its exit status."""
        await self._exited.wait()
        returncode = self._process.returncode
        assert returncode is not None
        return returncode

    def _exit_reason(self) -> str | None:
        returncode = self._process.returncode
        if returncode is None:
            return None
        return f"the backend process exited with {exit_status(returncode)}"

    async def _lost(self) -> str | None:
        # The stream's peer hung up without a close frame: the backend died
        # (or is dying). Say how, when it has exited within the bound.
        with trio.move_on_after(_EXIT_WAIT):
            await self._exited.wait()
        return self._exit_reason()

    @asynccontextmanager
    async def _stream(
        self, max_message_size: int, connect_timeout: float
    ) -> AsyncIterator[SocketStream]:
        if self._stopping:
            raise ConnectError("the backend was stopped: its spawn block has ended")
        if (reason := self._exit_reason()) is not None:
            raise ConnectError(f"cannot connect: {reason}", reason=reason)
        async with contextlib.AsyncExitStack() as stack:
            try:
                stream = await stack.enter_async_context(
                    open_stream(
                        self.path,
                        max_message_size=max_message_size,
                        connect_timeout=connect_timeout,
                        lost=self._lost,
                    )
                )
            except ConnectError:
                # Nothing listens: most likely the backend is exiting.
                with trio.move_on_after(_EXIT_WAIT):
                    await self._exited.wait()
                if (reason := self._exit_reason()) is not None:
                    raise ConnectError(f"cannot connect: {reason}", reason=reason) from None
                raise
            self._streams.add(stream)
            stack.callback(self._streams.discard, stream)
            yield stream

    @asynccontextmanager
    async def connect(
        self,
        *,
        interfaces: Iterable[type[RpcInterface]],
        application_id: str | None = None,
        application_version: str | None = None,
        authorization: str | None = None,
        session_id: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_in_flight: int = 1024,
        connect_timeout: float = 10.0,
        stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        interceptors: Iterable[Interceptor] = (),
    ) -> AsyncIterator[RpcConnection]:
        """Connect to the backend for RPC, for the block; as `local.connect`.

        Call it as often as needed, at once or one after the other. If the
        backend dies, calls waiting and later ones fail with
        `ConnectionClosed` whose reason is its exit status ("the backend
        process exited with status -9 (SIGKILL)"). Leaving `spawn`'s block
        closes the connection. `retry` is as `local.connect`'s (a call sent
        before the backend died fails with `CallMayHaveRun`, one not sent yet
        with `CallNotSent`; the connection is not made again).

        Raises:
            ConnectError: the backend has exited (the reason says how), or the
                spawn block has ended.
            IncompatibleVersion: an interface's version is incompatible.
            NotFound: the backend does not serve one of `interfaces`.
        """
        async with rpc_session(
            self._stream(max_message_size, connect_timeout),
            interfaces=interfaces,
            application_id=application_id,
            application_version=application_version,
            authorization=authorization,
            session_id=session_id,
            max_in_flight=max_in_flight,
            stream_window=stream_window,
            retry=retry,
            interceptors=interceptors,
        ) as connection:
            yield connection

    @asynccontextmanager
    async def connect_ipc(
        self,
        *,
        channels: Iterable[type[IpcInterface]] = (),
        application_id: str | None = None,
        application_version: str | None = None,
        authorization: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_pending_notifications: int = DEFAULT_MAX_PENDING_NOTIFICATIONS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        slow_listener_timeout: float = DEFAULT_SLOW_FRONTEND_TIMEOUT,
        stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
        interceptors: Iterable[Interceptor] = (),
        connect_timeout: float = 10.0,
    ) -> AsyncIterator[FrontendIpc]:
        """Open an IPC session with the backend, for the block; as `local.connect_ipc`.

        Sessions may be opened several times. If the backend dies, the session
        ends with its exit status as `closed_reason`, and calls waiting fail
        with `ConnectionClosed` saying the same. Leaving `spawn`'s block
        closes the session.

        Raises:
            ConnectError: the backend has exited (the reason says how), or the
                spawn block has ended.
            Unauthorized: the backend's `authorize` hook refused the session.
            NotFound: the backend does not serve one of `channels`.
            IncompatibleVersion: a channel's version is incompatible.
            ValueError: `stream_window` is not a `tether.StreamWindow`.
        """
        async with ipc_session(
            self._stream(max_message_size, connect_timeout),
            channels=channels,
            application_id=application_id,
            application_version=application_version,
            authorization=authorization,
            max_pending_notifications=max_pending_notifications,
            max_pending_bytes=max_pending_bytes,
            slow_listener_timeout=slow_listener_timeout,
            stream_window=stream_window,
            interceptors=interceptors,
        ) as frontend:
            yield frontend

    # -- the tasks that watch the process ---------------------------------------

    async def watch_exit(self) -> None:
        try:
            await self._process.wait()
        finally:
            self._exited.set()
        if not self._stopping and self._ready.is_set():
            _log.warning(
                "the backend process (pid %d) exited with %s while its frontend still ran",
                self.pid,
                exit_status(self._process.returncode or 0),
            )

    async def read_lifeline(self) -> None:
        splitter = LineSplitter(MAX_LINE)
        try:
            while data := await self._lifeline.receive_some(65536):
                for line in splitter.feed(data):
                    self._on_line(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._lifeline_closed.set()
            if splitter.cut or self._malformed:
                _log.warning(
                    "the backend (pid %d) sent %d lifeline line(s) that were not "
                    "JSON objects or were over %d bytes; they were skipped",
                    self.pid,
                    splitter.cut + self._malformed,
                    MAX_LINE,
                )

    def _on_line(self, line: bytes) -> None:
        message = decode_line(line)
        if message is None:
            self._malformed += 1
            return
        kind = message["t"]
        if kind == "log":
            record = make_record(message, self.pid)
            if record is None:
                self._malformed += 1
            else:
                _hand_to_logging(record)
        elif kind == "ready" and not self._ready.is_set():
            path = message.get("path")
            self._ready_path = path if isinstance(path, str) else None
            self._ready.set()

    async def read_stderr(self) -> None:
        stderr = self._process.stderr
        assert stderr is not None
        splitter = LineSplitter(_MAX_STDERR_LINE)
        try:
            while data := await stderr.receive_some(65536):
                for line in splitter.feed(data):
                    self._on_stderr(line)
            if rest := splitter.rest():
                self._on_stderr(rest)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._stderr_closed.set()

    def _on_stderr(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        self._tail.append(text)
        record = logging.makeLogRecord(
            {
                "name": _stderr_log.name,
                "levelno": logging.WARNING,
                "levelname": "WARNING",
                "msg": text,
                "args": None,
                "process": self.pid,
                "backend_pid": self.pid,
            }
        )
        _hand_to_logging(record)

    # -- starting and stopping --------------------------------------------------

    async def wait_ready(self, command: str, ready_timeout: float, kill_timeout: float) -> None:
        """Wait for `ready`; on anything else first, stop the backend and raise."""
        with trio.move_on_after(ready_timeout):
            await _first_of(self._ready, self._exited, self._lifeline_closed)
        if self._ready.is_set() and self._ready_path == self.path:
            return
        if self._ready.is_set():
            problem = f"served on {self._ready_path!r} instead of {self.path!r}"
        elif self._exited.is_set() or self._lifeline_closed.is_set():
            with trio.move_on_after(_EXIT_WAIT):
                await self._exited.wait()
            returncode = self._process.returncode
            how = (
                "closed its lifeline"
                if returncode is None
                else f"exited with {exit_status(returncode)}"
            )
            problem = f"{how} before it was ready (does it call local.serve_paired?)"
        else:
            problem = (
                f"was not ready within {ready_timeout:g} s (raise ready_timeout if it "
                "needs longer to start)"
            )
        await self.terminate(kill_timeout)
        await self.drain()
        tail = self.stderr_tail
        said = f"; its stderr ended with:\n{tail}" if tail else "; it wrote nothing to stderr"
        raise BackendStartError(
            f"the backend {command!r} (pid {self.pid}) {problem}{said}",
            returncode=self._process.returncode,
            stderr_tail=tail,
        )

    async def stop(self, stop_timeout: float, kill_timeout: float) -> None:
        """Close its connections and its lifeline; SIGTERM, then SIGKILL, if it stays."""
        self._stopping = True
        for stream in list(self._streams):
            stream.close_now("the frontend stopped the backend")
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._lifeline.send_eof()
        with trio.move_on_after(stop_timeout):
            await self._exited.wait()
        if not self._exited.is_set():
            _log.warning(
                "the backend process (pid %d) did not exit within %g s of its lifeline "
                "closing: sending SIGTERM",
                self.pid,
                stop_timeout,
            )
        await self.terminate(kill_timeout)
        await self.drain()

    async def terminate(self, kill_timeout: float) -> None:
        """SIGTERM, then SIGKILL after `kill_timeout`, unless it has exited."""
        self._stopping = True
        if self._exited.is_set():
            return
        with contextlib.suppress(ProcessLookupError):
            self._process.terminate()
        with trio.move_on_after(kill_timeout):
            await self._exited.wait()
        if self._exited.is_set():
            return
        _log.warning(
            "the backend process (pid %d) did not exit within %g s of SIGTERM: sending SIGKILL",
            self.pid,
            kill_timeout,
        )
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        with trio.move_on_after(_KILL_WAIT):
            await self._exited.wait()
        if not self._exited.is_set():
            _log.error(
                "the backend process (pid %d) survived SIGKILL for %g s", self.pid, _KILL_WAIT
            )

    async def drain(self) -> None:
        """Read the last of its log records and stderr lines (bounded)."""
        with trio.move_on_after(_DRAIN_TIMEOUT):
            await self._lifeline_closed.wait()
            await self._stderr_closed.wait()


def _hand_to_logging(record: logging.LogRecord) -> None:
    """Log a forwarded record as if it were logged here, by the logger of its name."""
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


async def _first_of(*events: trio.Event) -> None:
    """Wait until one of `events` is set."""
    async with trio.open_nursery() as nursery:

        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait, event)


@asynccontextmanager
async def spawn(
    command: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    ready_timeout: float = 10.0,
    stop_timeout: float = 5.0,
    kill_timeout: float = 2.0,
) -> AsyncIterator[PairedBackend]:
    """Start a backend process paired with this frontend, for the block.

    Example::

        command = [sys.executable, "-m", "my_app.backend"]
        async with local.spawn(command) as backend:
            async with backend.connect_ipc(channels=[EditorIpc]) as frontend_ipc:
                ...

    The backend's main calls `local.serve_paired`. This makes a private
    directory (mode 0700, a random name) and starts `command` (no shell) with
    the socket path to serve on in `TETHER_LOCAL_SOCKET` and one end of a
    socket pair, the lifeline, in `TETHER_LOCAL_LIFELINE`; its stdin is
    /dev/null, its stdout this process's, its stderr read here (each line
    logged as a warning by `tether.local.stderr`, the last 20 kept); it runs
    in a session of its own, so a Ctrl-C in the terminal reaches the frontend
    only, which then stops it in order. The block starts when the backend
    says it is ready.

    Its log records come over the lifeline and are handed to this process's
    logging under their own logger names, with their `activity_id`,
    `session_id`, `application_id` and `operation`, and `process` and
    `backend_pid` set to its pid.

    Leaving the block closes the connections opened through it, then the
    lifeline: the backend sees end-of-file and exits; if it has not within
    `stop_timeout`, it gets SIGTERM, and `kill_timeout` later SIGKILL. So the
    block ends at most `stop_timeout + kill_timeout` (and a second for its
    last log lines) after it is left, even when cancelled. If this process
    dies, even by SIGKILL, the backend sees end-of-file at once and exits.

    Args:
        command: The program and its arguments, e.g. `[sys.executable, "-m",
            "my_app.backend"]`.
        env: The backend's environment (the two variables are added); this
            process's by default.
        cwd: The backend's working directory; this process's by default.
        ready_timeout: Seconds the backend has to start serving.
        stop_timeout: Seconds the backend has to exit by itself once the
            lifeline is closed, before SIGTERM.
        kill_timeout: Seconds after SIGTERM before SIGKILL.

    Raises:
        BackendStartError: the backend could not be started, exited, or was
            not ready within `ready_timeout` (it is stopped first); it
            carries the exit status and the tail of its stderr.
        TypeError: `command` is a string (give a list of arguments).
        ValueError: a time is not a positive number of seconds.
        NotImplementedError: the platform has no Unix domain sockets.
    """
    check_platform()
    if isinstance(command, (str, bytes)) or not command:
        raise TypeError(
            f"command must be a non-empty list of arguments (no shell is used), got {command!r}"
        )
    argv = [os.fspath(part) for part in command]
    check_seconds("ready_timeout", ready_timeout)
    check_seconds("stop_timeout", stop_timeout)
    check_seconds("kill_timeout", kill_timeout)
    directory = private_directory()
    path = os.path.join(directory, SOCKET_NAME)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        child_env = dict(os.environ if env is None else env)
        child_env[SOCKET_ENV] = path
        child_env[LIFELINE_ENV] = str(theirs.fileno())
        try:
            process = await trio.lowlevel.open_process(
                argv,
                env=child_env,
                cwd=cwd,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise BackendStartError(
                f"could not start the backend {argv[0]!r}: {exc}", returncode=None, stderr_tail=""
            ) from None
        finally:
            # Only the child holds its end now, so its exit is our end-of-file.
            theirs.close()
        lifeline = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        backend = PairedBackend(process, path, lifeline)
        try:
            async with open_service_nursery() as nursery:
                # The readers re-log the backend's records here: from an empty
                # context, so that a record with no ActivityId of its own is
                # not given the one that was current when `spawn` was entered.
                clean = contextvars.Context()
                for task in (backend.watch_exit, backend.read_lifeline, backend.read_stderr):
                    clean.run(nursery.start_soon, task)
                await backend.wait_ready(argv[0], ready_timeout, kill_timeout)
                try:
                    yield backend
                finally:
                    with trio.CancelScope(shield=True):
                        await backend.stop(stop_timeout, kill_timeout)
                    nursery.cancel_scope.cancel()
        finally:
            if process.returncode is None:  # cancelled before wait_ready stopped it
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with trio.CancelScope(shield=True), trio.move_on_after(_KILL_WAIT):
                    await process.wait()
            with trio.CancelScope(shield=True):
                await lifeline.aclose()
                if process.stderr is not None:
                    await process.stderr.aclose()
    finally:
        ours.close()
        _remove(directory)


def _remove(directory: str) -> None:
    """Remove the private directory, and what a killed backend left in it.

    That is its socket, and the staging directory (`.tether-*`) of a backend
    killed while it was binding.
    """
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.name.startswith(".tether-") and entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(entry.path, SOCKET_NAME))
                with contextlib.suppress(OSError):
                    os.rmdir(entry.path)
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(directory, SOCKET_NAME))
    with contextlib.suppress(OSError):
        os.rmdir(directory)
