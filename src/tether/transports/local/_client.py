"""The local client: `connect` (RPC) and `connect_ipc` (IPC), one socket each."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio

from ...runtime import (
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_NOTIFICATIONS,
    DEFAULT_SLOW_FRONTEND_TIMEOUT,
    DEFAULT_STREAM_WINDOW,
    ClientOptions,
    ConnectError,
    FrontendIpc,
    IpcInterface,
    RpcConnection,
    RpcInterface,
    StreamWindow,
    open_ipc_connection,
    open_rpc_connection,
)
from ...runtime._interceptors import Interceptor
from ...runtime._retry import DEFAULT_RETRY, RetryPolicy
from ...runtime._streams import check_stream_window
from ...runtime._util import check_positive_int, check_seconds
from ._paths import check_platform, check_socket_path
from ._socket import DEFAULT_MAX_MESSAGE_SIZE, MAX_FRAME, SocketStream

__all__ = ["connect", "connect_ipc", "ipc_session", "open_stream", "rpc_session"]

#: Seconds between tries while the server's backlog is full.
_BACKLOG_RETRY = 0.01


@asynccontextmanager
async def open_stream(
    path: str | os.PathLike[str],
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    connect_timeout: float = 10.0,
    lost: Callable[[], Awaitable[str | None]] | None = None,
) -> AsyncIterator[SocketStream]:
    """A `SocketStream` connected to the server at `path`, closed on leaving.

    Args:
        path: The server's socket.
        max_message_size: Largest message, in bytes, either way.
        connect_timeout: Seconds to wait while the server's backlog is full.
        lost: See `SocketStream`.

    Raises:
        ConnectError: nothing serves at `path`, or this user may not connect to it.
    """
    check_platform()
    where = check_socket_path(path)
    check_positive_int("max_message_size", max_message_size)
    if max_message_size > MAX_FRAME:
        raise ValueError(f"max_message_size {max_message_size} is over the frame limit {MAX_FRAME}")
    check_seconds("connect_timeout", connect_timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        with trio.move_on_after(connect_timeout) as waited:
            await _connect(sock, where)
        if waited.cancelled_caught:
            raise ConnectError(
                f"the server at {where} did not accept within {connect_timeout:g} s "
                "(its backlog is full)"
            )
    except BaseException:
        sock.close()
        raise
    stream = SocketStream(sock, max_message_size, name=f"local socket {where}", lost=lost)
    try:
        yield stream
    finally:
        stream.close_now("the client left")


async def _connect(sock: socket.socket, where: str) -> None:
    while True:
        try:
            sock.connect(where)
        except BlockingIOError:
            # A Unix socket's connect does not complete later as TCP's does:
            # the server's backlog is full. Try again shortly.
            await trio.sleep(_BACKLOG_RETRY)
            continue
        except FileNotFoundError:
            raise ConnectError(
                f"no server at {where}: the socket does not exist (is the backend running?)"
            ) from None
        except ConnectionRefusedError:
            raise ConnectError(
                f"nothing is listening on {where}: a server that stopped left it"
            ) from None
        except PermissionError:
            raise ConnectError(f"may not connect to {where}: it belongs to another user") from None
        except OSError as exc:
            raise ConnectError(f"could not connect to {where}: {exc}") from None
        await trio.lowlevel.checkpoint()
        return


@asynccontextmanager
async def connect(
    path: str | os.PathLike[str],
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
    """Connect to a tether backend over its local socket, for the block.

    Example::

        async with local.connect(path, interfaces=[RobotWorldRead]) as backend:
            robots = backend.get_client(RobotWorldRead)
            await robots.count_robots(IModelProps("m1"))

    Every call carries its full context, as over any transport; many calls
    share the one socket. Leaving the block closes it; calls still waiting
    fail with ConnectionClosed.

    Args:
        path: The server's socket (what `local.serve` reported).
        interfaces: The interfaces this frontend will call; each is checked
            against what the backend serves before the block starts.
        application_id: Sent with every call (unless the current context has one).
        application_version: Likewise.
        authorization: Sent with every call; when None, calls forward the
            current context's.
        session_id: The session the calls belong to; a fresh one by default.
        max_message_size: Largest message, in bytes, either way.
        max_in_flight: Calls this connection has waiting at once; more wait
            for room.
        connect_timeout: Seconds to get through a full backlog.
        stream_window: What this frontend takes of a stream's results before
            the backend must wait, per stream (256 items, 4 MiB by default).
        retry: How calls are retried (`tether.RetryPolicy`; by default 10
            tries over about 11 s, backing off from 0.1 s to 2 s, never past
            the caller's deadline): a 503 or 429 refusal is retried for every
            operation, waiting at least its `Retry-After`. A lost connection is not made
            again: calls then fail at once, `CallNotSent` if they were not
            sent yet, `CallMayHaveRun` if they were. None: no retries.
        interceptors: Run around every call made through this connection
            (`tether.Interceptor`; first outermost, inside the process-wide
            ones), wrapping its retries: one outcome per call as the caller sees it.

    Raises:
        ConnectError: nothing serves at `path`, or it is not this user's.
        IncompatibleVersion: an interface's version is incompatible.
        NotFound: the backend does not serve one of `interfaces`.
        ValueError: `stream_window` is not a `tether.StreamWindow`.
    """
    async with rpc_session(
        open_stream(path, max_message_size=max_message_size, connect_timeout=connect_timeout),
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
    path: str | os.PathLike[str],
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
    """Open an IPC session with a backend over its local socket, for the block.

    Example::

        async with local.connect_ipc(path, channels=[EditorIpc]) as frontend_ipc:
            editor = frontend_ipc.proxy(EditorIpc)
            placement = await editor.move_element("0x20", 1.5)

    The socket is the session: when it closes, for any reason, the session
    ends on both sides, and `FrontendIpc.closed_reason` says why.

    Args:
        path: The server's socket.
        channels: The channels this frontend will call; each is checked before
            the block starts.
        application_id: Who the frontend is; the backend's contexts carry it.
        application_version: That application's version.
        authorization: The credential, sent in the `hello` for the backend's
            `BackendIpc(authorize=...)` hook.
        max_message_size: Largest message, in bytes, either way.
        max_pending_notifications, max_pending_bytes, slow_listener_timeout:
            The frontend's bounds on notifications waiting for its listeners,
            as for `websocket.connect_ipc`.
        stream_window: How much of each stream this frontend takes before
            its sender must wait (`tether.StreamWindow`; 256 items, 4 MiB by
            default): the result items of its stream calls, and the argument
            items of the backend's stream calls to channels it serves.
        interceptors: Run around every invoke and notification this frontend
            sends (`CallInfo.side` "client") and receives ("server"), inside the
            process-wide ones; first outermost.
        connect_timeout: Seconds to get through a full backlog.

    Raises:
        ConnectError: nothing serves at `path`, or it is not this user's.
        Unauthorized: the backend's `authorize` hook refused the session.
        Unavailable: the backend is full, or this process has its
            `max_sessions_per_client` open.
        NotFound: the backend does not serve one of `channels`.
        IncompatibleVersion: a channel's version is incompatible.
        ValueError: `stream_window` is not a `tether.StreamWindow`.
    """
    async with ipc_session(
        open_stream(path, max_message_size=max_message_size, connect_timeout=connect_timeout),
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


@asynccontextmanager
async def rpc_session(
    streams: AbstractAsyncContextManager[SocketStream],
    *,
    interfaces: Iterable[type[RpcInterface]],
    application_id: str | None,
    application_version: str | None,
    authorization: str | None,
    session_id: str | None,
    max_in_flight: int,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    interceptors: Iterable[Interceptor] = (),
) -> AsyncIterator[RpcConnection]:
    """An RPC connection over the stream `streams` opens (`connect`, and `spawn`'s).

    `retry` is `connect`'s (`tether.RetryPolicy`, None for no retries).
    """
    options = ClientOptions(
        application_id=application_id,
        application_version=application_version,
        authorization=authorization,
        session_id=session_id,
        stream_window=stream_window,
        retry=retry,
        interceptors=interceptors,
    )
    check_positive_int("max_in_flight", max_in_flight)  # before connecting, not after
    async with (
        streams as stream,
        open_rpc_connection(
            stream, interfaces=interfaces, options=options, max_in_flight=max_in_flight
        ) as connection,
    ):
        yield connection


@asynccontextmanager
async def ipc_session(
    streams: AbstractAsyncContextManager[SocketStream],
    *,
    channels: Iterable[type[IpcInterface]],
    application_id: str | None,
    application_version: str | None,
    authorization: str | None,
    max_pending_notifications: int,
    max_pending_bytes: int,
    slow_listener_timeout: float,
    stream_window: StreamWindow,
    interceptors: Iterable[Interceptor] = (),
) -> AsyncIterator[FrontendIpc]:
    """An IPC session over the stream `streams` opens (`connect_ipc`, and `spawn`'s)."""
    check_stream_window(stream_window)  # before connecting, not after
    async with (
        streams as stream,
        open_ipc_connection(
            stream,
            channels=channels,
            application_id=application_id,
            application_version=application_version,
            authorization=authorization,
            max_pending_notifications=max_pending_notifications,
            max_pending_bytes=max_pending_bytes,
            slow_listener_timeout=slow_listener_timeout,
            stream_window=stream_window,
            interceptors=interceptors,
        ) as frontend,
    ):
        yield frontend
