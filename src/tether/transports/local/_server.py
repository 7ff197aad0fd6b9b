"""`serve`: RPC and IPC sessions over a Unix domain socket, one connection each."""

from __future__ import annotations

import logging
import os
import socket
import struct

import trio

from ...runtime import (
    BackendIpc,
    ConnectionClosed,
    RpcManager,
    serve_ipc_session,
    serve_rpc_session,
)
from ...runtime._protocol import asks_for_ipc
from ...runtime._util import check_positive_int, check_seconds, started_in_place
from ._paths import bind_private, check_platform, check_socket_path
from ._socket import CLOSE_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE, MAX_FRAME, SocketStream

__all__ = ["serve"]

_log = logging.getLogger("tether.local")

#: How a server closes its connections when it stops.
_SHUTDOWN = "the server is shutting down"
#: Connections the kernel holds for `accept` (the listen backlog).
_BACKLOG = 1024


async def serve(
    manager: RpcManager | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    ipc: BackendIpc | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_in_flight: int = 1024,
    max_connections: int = 1024,
    handshake_timeout: float = 10.0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve RPC (`manager`) and/or IPC (`ipc`) on a Unix domain socket until cancelled.

    Each connection is one session, RPC or IPC as its `hello` asks. Use with
    `nursery.start`, which returns the socket's path::

        path = await nursery.start(local.serve, manager)
        async with local.connect(path, interfaces=[RobotWorldRead]) as backend:
            ...

    The socket is made with mode 0600 (only this user may connect); by
    default it is `tether.sock` in a new directory of mode 0700 with a random
    name, under `$XDG_RUNTIME_DIR` or the temporary directory. Both are
    removed when the server stops. Cancelling it closes every connection
    with "the server is shutting down" and cancels every call still running.

    Args:
        manager: The RPC impls to serve, or None to serve IPC only.
        path: Where to make the socket, instead of a private directory. Its
            directory must exist; a stale socket there is replaced, anything
            else is refused.
        ipc: The IPC backend to serve, if any.
        max_message_size: Largest message, in bytes, either way (16 MiB); a
            larger one from a client closes its connection.
        max_in_flight: Calls one RPC session may have running at once; more
            are refused with `Unavailable`.
        max_connections: Connections open at once; more are closed at once
            with "the server is full".
        handshake_timeout: Seconds a new connection has to send its `hello`.
        task_status: Reports the socket's path once listening.

    Raises:
        TypeError: neither `manager` nor `ipc` is given.
        ValueError: a limit or time is not positive, or the path is too long.
        FileExistsError: something other than a socket is at `path`.
        OSError: the socket cannot be made (a server already listens there).
        NotImplementedError: the platform has no Unix domain sockets.
    """
    check_platform()
    if manager is None and ipc is None:
        raise TypeError("local.serve needs an RpcManager, an ipc=BackendIpc, or both")
    check_positive_int("max_message_size", max_message_size)
    if max_message_size > MAX_FRAME:
        raise ValueError(f"max_message_size {max_message_size} is over the frame limit {MAX_FRAME}")
    check_positive_int("max_in_flight", max_in_flight)
    check_positive_int("max_connections", max_connections)
    check_seconds("handshake_timeout", handshake_timeout)
    where = None if path is None else check_socket_path(path)
    server = _Server(
        manager, ipc, max_message_size, max_in_flight, max_connections, handshake_timeout
    )
    with bind_private(where, _BACKLOG) as (listener, bound):
        async with trio.open_nursery() as nursery:
            handlers: trio.Nursery = await nursery.start(server.own_connections)
            nursery.start_soon(server.accept_loop, listener, handlers)
            _log.info("serving on local socket %s", bound)
            task_status.started(bound)
            try:
                await trio.sleep_forever()
            finally:
                # Cancelled: stop accepting (with this nursery); each session's
                # reader wakes to the close and ends its session, which may
                # still deliver what had arrived (within CLOSE_TIMEOUT).
                server.begin_shutdown(_SHUTDOWN)


class _Server:
    def __init__(
        self,
        manager: RpcManager | None,
        ipc: BackendIpc | None,
        max_message_size: int,
        max_in_flight: int,
        max_connections: int,
        handshake_timeout: float,
    ) -> None:
        self.manager = manager
        self.ipc = ipc
        self.max_message_size = max_message_size
        self.max_in_flight = max_in_flight
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.streams: set[SocketStream] = set()
        self.closing = trio.Event()
        self.idle = trio.Event()

    async def own_connections(
        self, *, task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The nursery of the connections, shielded from `serve`'s cancellation.

        So that a shutdown can end each session properly (its close sent, what
        had arrived delivered) before the connections' tasks are cancelled: at
        once when all have ended, or after `CLOSE_TIMEOUT`.
        """
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as handlers:
                if not started_in_place(task_status, handlers):
                    return  # `serve` was cancelled meanwhile: nothing to own
                await self.closing.wait()
                if self.streams:
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await self.idle.wait()
                handlers.cancel_scope.cancel()

    def begin_shutdown(self, reason: str) -> None:
        self.closing.set()
        for stream in list(self.streams):
            stream.close_now(reason)

    async def accept_loop(self, listener: socket.socket, nursery: trio.Nursery) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(listener)
                continue
            except OSError as exc:
                # Out of descriptors, most likely: the connection waits in the
                # backlog; say so, and try again shortly rather than spin.
                _log.error("could not accept a local connection: %s", exc)
                await trio.sleep(0.1)
                continue
            stream = SocketStream(sock, self.max_message_size, name="local socket")
            if self.closing.is_set():
                stream.close_now(_SHUTDOWN)
                continue
            if len(self.streams) >= self.max_connections:
                stream.close_now(f"the server is full ({self.max_connections} connections)")
                continue
            self.streams.add(stream)
            nursery.start_soon(self.serve_connection, stream)

    async def serve_connection(self, stream: SocketStream) -> None:
        try:
            await self._session(stream)
        except Exception:
            # One connection's failure (a bug, or input nothing expected) ends
            # that connection, never the server and the others.
            _log.exception("closed a local connection that failed")
        finally:
            self.streams.discard(stream)
            stream.close_now("closed by the server")
            if self.closing.is_set() and not self.streams:
                self.idle.set()

    async def _session(self, stream: SocketStream) -> None:
        with trio.move_on_after(self.handshake_timeout) as waited:
            try:
                first = await stream.receive_message()
            except ConnectionClosed:
                return
        if waited.cancelled_caught:
            stream.close_now(f"no hello within {self.handshake_timeout:g} s of connecting")
            return
        stream.push_back(first)
        if self.ipc is not None and (self.manager is None or asks_for_ipc(first)):
            await serve_ipc_session(
                self.ipc, stream, transport="local", remote=_peer(stream.socket)
            )
        else:
            assert self.manager is not None
            await serve_rpc_session(self.manager, stream, max_in_flight=self.max_in_flight)


_CREDENTIALS = struct.Struct("3i")


def _peer(sock: socket.socket) -> str | None:
    """The client's process, `"pid=1234,uid=1000"`, where the platform says (Linux).

    One process counts as one client for `max_sessions_per_client`.
    """
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        pid, uid, _gid = _CREDENTIALS.unpack(
            sock.getsockopt(socket.SOL_SOCKET, option, _CREDENTIALS.size)
        )
    except OSError:
        return None
    return f"pid={pid},uid={uid}"
