"""`serve_paired`: the backend side of `local.spawn`, a process as long-lived as its frontend."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import stat
import threading
from collections.abc import AsyncIterator

import trio

from ...runtime import BackendIpc, RpcManager
from ._lifeline import LIFELINE_ENV, SOCKET_ENV, LogForwarder
from ._paths import check_platform, check_socket_path
from ._server import serve
from ._socket import DEFAULT_MAX_MESSAGE_SIZE

__all__ = ["NotPaired", "serve_paired"]

_log = logging.getLogger("tether.local")

#: Seconds a stopping backend waits for the frontend to read its last log records.
FLUSH_TIMEOUT = 1.0


class NotPaired(RuntimeError):
    """`serve_paired` ran in a process that `local.spawn` did not start.

    Its environment lacks `TETHER_LOCAL_SOCKET` or `TETHER_LOCAL_LIFELINE`, or
    they do not name a path and an open Unix socket.
    """


async def serve_paired(
    manager: RpcManager | None = None,
    *,
    ipc: BackendIpc | None = None,
    log_level: int | None = logging.INFO,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_in_flight: int = 1024,
    max_connections: int = 1024,
    handshake_timeout: float = 10.0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve as the backend of the frontend that spawned this process, while it lives.

    The backend's main, run by `local.spawn` in its frontend::

        async def main() -> None:
            await local.serve_paired(manager, ipc=backend_ipc)

        trio.run(main)

    Serves RPC and/or IPC like `local.serve`, on the path the frontend chose,
    tells the frontend it is ready, and returns when the frontend closes the
    lifeline (leaving its `spawn` block, or exiting in any way, even by
    SIGKILL) or when this process gets SIGTERM or SIGINT: connections are
    closed with "the server is shutting down", calls still running are
    cancelled, and the socket and its directory are removed. The process
    should then exit (return from `main`).

    While it serves, every log record of `log_level` and above goes to the
    frontend, which hands it to its own logging with the request context's
    fields (`activity_id` and the others) as they were here: the forwarding
    handler is added to the root logger, whose level is set to `log_level`
    (both are put back on return). Do not give the root logger another
    handler (records would also go there); a logger with a level of its own
    keeps it.

    Args:
        manager: The RPC impls to serve, or None to serve IPC only.
        ipc: The IPC backend to serve, if any.
        log_level: The level from which records go to the frontend; None
            leaves logging alone and forwards nothing.
        max_message_size, max_in_flight, max_connections, handshake_timeout:
            As for `local.serve`.
        task_status: Reports the socket's path once listening.

    Raises:
        NotPaired: this process was not started by `local.spawn`.
        TypeError: neither `manager` nor `ipc` is given.
        ValueError: a limit or time is not positive.
        OSError: the socket cannot be made.
    """
    check_platform()
    if manager is None and ipc is None:
        raise TypeError("local.serve_paired needs an RpcManager, an ipc=BackendIpc, or both")
    path, lifeline = _take_pairing()
    forwarder = LogForwarder(lifeline)
    root = logging.getLogger()
    saved_level = root.level
    if log_level is not None:
        forwarder.setLevel(log_level)
        root.setLevel(log_level)
        root.addHandler(forwarder)
    serving = functools.partial(
        serve,
        manager,
        path,
        ipc=ipc,
        max_message_size=max_message_size,
        max_in_flight=max_in_flight,
        max_connections=max_connections,
        handshake_timeout=handshake_timeout,
    )
    try:
        # The signals are caught from before `ready`: the frontend may send
        # SIGTERM the moment it has read it.
        with _stop_signals() as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forwarder.run)
                bound = await nursery.start(serving)
                forwarder.send({"t": "ready", "path": bound, "pid": os.getpid()})
                task_status.started(bound)
                why = await _wait_for_the_end(lifeline, signals)
                _log.info("stopping: %s", why)
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            # The records of the shutdown itself (sessions' on_close hooks).
            await forwarder.flush_for(FLUSH_TIMEOUT)
        if log_level is not None:
            root.removeHandler(forwarder)
            root.setLevel(saved_level)
        forwarder.close()
        lifeline.close()
        # `serve` removed the socket; the directory is the frontend's, but a
        # frontend killed by SIGKILL cannot remove it: whoever is last does.
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(path))


def _take_pairing() -> tuple[str, socket.socket]:
    """The path to serve on and the lifeline, from the environment `local.spawn` set.

    The variables are removed from the environment, and the lifeline made not
    inheritable, so that the backend's own child processes do not take them
    for theirs.
    """
    missing = [name for name in (SOCKET_ENV, LIFELINE_ENV) if not os.environ.get(name)]
    if missing:
        raise NotPaired(
            f"{' and '.join(missing)} not set: this backend runs as the child of a "
            "frontend's local.spawn; start the frontend, or serve on a path of your "
            "choosing with local.serve"
        )
    path, number = os.environ[SOCKET_ENV], os.environ[LIFELINE_ENV]
    try:
        check_socket_path(path)
    except (TypeError, ValueError) as exc:
        raise NotPaired(f"{SOCKET_ENV} is not a socket path: {exc}") from None
    try:
        fd = int(number)
    except ValueError:
        raise NotPaired(f"{LIFELINE_ENV}={number!r} is not a file descriptor number") from None
    try:
        mode = os.fstat(fd).st_mode
    except (OSError, OverflowError):
        raise NotPaired(
            f"{LIFELINE_ENV}={fd} is not an open file descriptor: the frontend passes "
            "the lifeline with pass_fds (local.spawn does)"
        ) from None
    if not stat.S_ISSOCK(mode):
        raise NotPaired(f"{LIFELINE_ENV}={fd} is not a socket")
    lifeline = socket.socket(fileno=fd)
    if lifeline.family != socket.AF_UNIX or lifeline.type != socket.SOCK_STREAM:
        lifeline.detach()
        raise NotPaired(f"{LIFELINE_ENV}={fd} is not a Unix stream socket")
    lifeline.set_inheritable(False)
    lifeline.setblocking(False)
    del os.environ[SOCKET_ENV], os.environ[LIFELINE_ENV]
    return path, lifeline


def _stop_signals() -> contextlib.AbstractContextManager[AsyncIterator[int] | None]:
    """A receiver of SIGTERM and SIGINT, or None outside the main thread.

    Signal handlers belong to the main thread; a backend run in another
    thread (a test) ends by its lifeline alone.
    """
    if threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext(None)
    return trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT)


async def _wait_for_the_end(lifeline: socket.socket, signals: AsyncIterator[int] | None) -> str:
    """Wait for end-of-file on the lifeline, or a signal; say which came."""
    why = ""
    async with trio.open_nursery() as nursery:

        async def on_eof() -> None:
            nonlocal why
            await _wait_eof(lifeline)
            why = "the frontend closed the lifeline"
            nursery.cancel_scope.cancel()

        nursery.start_soon(on_eof)
        if signals is not None:
            async for number in signals:
                why = f"got {signal.Signals(number).name}"
                nursery.cancel_scope.cancel()
                break
    return why


async def _wait_eof(sock: socket.socket) -> None:
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            return  # reset: gone as surely as by end-of-file
        if not data:
            return
        # The frontend sends nothing today; what a newer one sends is ignored.
