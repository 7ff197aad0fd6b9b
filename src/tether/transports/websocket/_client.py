"""The WebSocket client: `connect` (RPC) and `connect_ipc` (IPC), one socket each,
for either server.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData
from wsproto.utilities import RemoteProtocolError

from ...runtime import (
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_NOTIFICATIONS,
    DEFAULT_SLOW_FRONTEND_TIMEOUT,
    DEFAULT_STREAM_WINDOW,
    ClientOptions,
    ConnectError,
    FrontendIpc,
    IpcInterface,
    ReconnectingBackend,
    RetryPolicy,
    RpcConnection,
    RpcInterface,
    StreamWindow,
    open_ipc_connection,
    open_rpc_connection,
)
from ...runtime._interceptors import Interceptor, peer_of
from ...runtime._reconnect import open_reconnecting_backend
from ...runtime._retry import DEFAULT_RETRY, check_retry
from ...runtime._streams import check_stream_window
from ...runtime._util import (
    check_positive_int,
    check_seconds,
    open_service_nursery,
    started_in_place,
)
from .._tls import client_context, open_tls_stream, tls_connect_error
from ._endpoint import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
)
from ._streams import IDLE_CHECK, TrioWebSocketStream

__all__ = ["connect", "connect_ipc"]

# ---------------------------------------------------------------------------
# Client


def _parse_url(url: str) -> tuple[str, int, str, bool]:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str like 'ws://127.0.0.1:8000/', got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(
            f"expected a ws:// or wss:// URL like 'ws://127.0.0.1:8000/rpc/ws', got {url!r}"
        )
    secure = parts.scheme == "wss"
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError:
        raise ValueError(f"the port in {url!r} is not a number from 0 to 65535") from None
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return parts.hostname, port, resource, secure


def _resume_url(url: str, session_id: str) -> str:
    """`url` with `tether_session=<session_id>` added to its query.

    A frontend resuming an IPC session connects to this URL, so that a reverse
    proxy can send it to the server holding the session (whose routing token
    starts the id): nginx reads it as `$arg_tether_session`.
    """
    parts = urlsplit(url)
    added = urlencode({"tether_session": session_id})
    query = f"{parts.query}&{added}" if parts.query else added
    return urlunsplit(parts._replace(query=query))


def _header_list(
    headers: Mapping[str, str] | None, authorization: str | None
) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for key, value in (headers or {}).items():
        if any(c in f"{key}{value}" for c in "\r\n\0"):
            raise ValueError(f"header {key!r} holds a line break or NUL")
        out.append((key.encode("latin-1"), value.encode()))
    if authorization is not None:
        if any(c in authorization for c in "\r\n\0"):
            raise ValueError("authorization holds a line break or NUL")
        out.append((b"authorization", authorization.encode()))
    return out


def _rejected(url: str, exc: trio_websocket.ConnectionRejected) -> ConnectError:
    status = exc.status_code
    detail = ""
    error: dict[str, Any] | None = None
    if exc.body:
        try:
            parsed = orjson.loads(exc.body)
        except orjson.JSONDecodeError:
            parsed = None
        if type(parsed) is dict and type(parsed.get("error")) is dict:
            error = parsed["error"]
            detail = str(error.get("message", ""))
        else:
            detail = exc.body[:200].decode("utf-8", "replace")
    message = f"the server at {url} refused the WebSocket handshake with HTTP {status}"
    if detail:
        message += f": {detail}"
    return ConnectError(
        message,
        reason=detail or None,
        status_code=status,
        details={"error": error} if error else None,
    )


@asynccontextmanager
async def _open_stream(
    url: str,
    *,
    headers: list[tuple[bytes, bytes]],
    max_message_size: int,
    connect_timeout: float,
    ping_interval: float | None,
    ping_timeout: float,
    ssl_context: ssl.SSLContext | None,
) -> AsyncIterator[TrioWebSocketStream]:
    host, port, resource, secure = _parse_url(url)
    check_seconds("connect_timeout", connect_timeout)
    check_seconds("ping_interval", ping_interval, optional=True)
    check_seconds("ping_timeout", ping_timeout)
    ssl_context = client_context(secure, ssl_context)
    host_header = host if port in (80, 443) else f"{host}:{port}"
    try:
        async with open_service_nursery() as nursery:
            tasks: trio.Nursery = await nursery.start(_connection_tasks)
            try:
                tcp: trio.abc.Stream | None = None
                try:
                    with trio.fail_after(connect_timeout):
                        if secure:
                            assert ssl_context is not None
                            # The TLS handshake done here, so that its failure
                            # says why (ConnectError), not the upgrade's.
                            tcp = await open_tls_stream(host, port, ssl_context, url)
                        else:
                            tcp = await trio.open_tcp_stream(host, port)
                        ws = await _handshake(
                            tcp, host_header, resource, headers, max_message_size, url
                        )
                        if secure:
                            # The SSL stream does its own reading: trio-websocket's
                            # reader task reads it from here on.
                            tasks.start_soon(ws._reader_task)
                except BaseException as exc:
                    if tcp is not None:
                        await trio.aclose_forcefully(tcp)
                    if isinstance(exc, trio.TooSlowError):
                        raise ConnectError(
                            f"no WebSocket handshake from {url} within {connect_timeout:g} s"
                        ) from None
                    if isinstance(exc, OSError):
                        raise ConnectError(f"could not connect to {url}: {exc}") from None
                    raise
                stream = TrioWebSocketStream(
                    ws, max_message_size, f"WebSocket to {url}", own_reading=not secure
                )
                # Our hello says `"binary": true`; the server's welcome says whether it does.
                stream.expect_welcome()
                nursery.start_soon(stream.notice_cancellation)
                try:
                    stream.start_writer_in(tasks)
                    if ping_interval is not None:
                        tasks.start_soon(stream.keep_alive, ping_interval, ping_timeout)
                    # Also how late a pong may be read while idle: well within ping_timeout.
                    every = (
                        IDLE_CHECK
                        if ping_interval is None
                        else min(IDLE_CHECK, ping_interval / 2, ping_timeout / 4)
                    )
                    tasks.start_soon(stream.answer_pings_while_idle, every)
                    yield stream
                finally:
                    with trio.CancelScope(shield=True):
                        await stream.aclose()
                        # trio-websocket leaves the socket to its owner when the
                        # server closed first; this is its owner.
                        await trio.aclose_forcefully(tcp)
            finally:
                tasks.cancel_scope.cancel()
                nursery.cancel_scope.cancel()
    except trio_websocket.ConnectionRejected as exc:
        raise _rejected(url, exc) from None
    except trio_websocket.HandshakeError as exc:
        raise ConnectError(f"the WebSocket handshake with {url} failed: {exc!r}") from None


#: Bytes asked of the socket in one read.
_READ_SIZE = 64 * 1024


async def _handshake(
    tcp: trio.abc.Stream,
    host: str,
    resource: str,
    headers: list[tuple[bytes, bytes]],
    max_message_size: int,
    url: str | None = None,
) -> trio_websocket.WebSocketConnection:
    """The opening handshake, read in this task: a connection with no reader task.

    As `trio_websocket.wrap_client_stream` does it with its reader task, which
    would then stay to read every message and hand it over through a channel;
    here the stream reads its own socket (`own_reading`).

    Raises:
        trio_websocket.ConnectionRejected: the server refused the upgrade.
        trio_websocket.HandshakeError: the server hung up or answered with
            something other than a WebSocket handshake.
        ConnectError: a TLS server refused this client's certificate (under
            TLS 1.3 that comes after the client's side of the TLS handshake).
    """
    ws = trio_websocket.WebSocketConnection(
        tcp,
        WSConnection(ConnectionType.CLIENT),
        host=host,
        path=resource,
        client_extra_headers=headers,
        message_queue_size=4,
        max_message_size=max_message_size,
        receive_buffer_size=_READ_SIZE,
    )
    request = ws._initial_request
    assert request is not None
    ws._initial_request = None
    try:
        await ws._send(request)
    except trio_websocket.ConnectionClosed:
        raise trio_websocket.HandshakeError("the server hung up before the handshake") from None
    wsproto = ws._wsproto
    while True:
        for event in wsproto.events():
            kind = type(event)
            if kind is AcceptConnection:
                await ws._handle_accept_connection_event(event)  # type: ignore[arg-type]
                return ws
            if kind is RejectConnection:  # raises ConnectionRejected unless a body follows
                await ws._handle_reject_connection_event(event)  # type: ignore[arg-type]
            elif kind is RejectData:  # raises ConnectionRejected once the body is whole
                await ws._handle_reject_data_event(event)  # type: ignore[arg-type]
        try:
            data = await tcp.receive_some(_READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            refused = tls_connect_error(exc, url or host)
            if refused is not None:
                raise refused from None
            data = b""
        if not data:
            raise trio_websocket.HandshakeError("the server hung up during the handshake")
        try:
            wsproto.receive_data(bytes(data))
        except RemoteProtocolError as err:
            raise trio_websocket.HandshakeError(f"not a WebSocket handshake: {err}") from None


async def _connection_tasks(
    *, task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED
) -> None:
    """A nursery for a connection's own tasks (its reader, writer, keepalive).

    Out of reach of the caller's cancellation: the close that follows it needs
    them (the writer sends what is queued, the reader reads the server's close
    frame). `_open_stream` ends it, by cancelling its scope, once closed.
    """
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as tasks:
            if not started_in_place(task_status, tasks):
                return  # the connect was cancelled meanwhile: nothing to own
            await trio.sleep_forever()


@asynccontextmanager
async def connect(
    url: str,
    *,
    interfaces: Iterable[type[RpcInterface]],
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
    session_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_in_flight: int = 1024,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float = DEFAULT_PING_TIMEOUT,
    connect_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    interceptors: Iterable[Interceptor] = (),
) -> AsyncIterator[ReconnectingBackend]:
    """Connect to a tether backend over WebSocket, for the block.

    Example::

        url = "ws://127.0.0.1:8000/rpc/ws"
        async with websocket.connect(url, interfaces=[RobotWorldRead]) as backend:
            robots = backend.get_client(RobotWorldRead)
            await robots.count_robots(IModelProps("m1"))

    Every call carries its full context, as over any transport; many calls
    share the one socket. Leaving the block closes it; calls still waiting
    fail with ConnectionClosed.

    A socket lost from the other side (a backend restart, a network blip) is
    made again by itself, with the backoff of `retry`: `state` goes
    RECONNECTING, calls made meanwhile wait for the new socket (within their
    deadline), the handshake and version check run again, and `state` is
    CONNECTED once more. Calls that were on the lost socket fail from it
    (`CallNotSent`, `CallMayHaveRun`) and are retried as `retry` says. The
    connection ends (CLOSED) when a reconnect finds an incompatible backend
    (calls raise `IncompatibleVersion`), one no longer serving an interface
    (`NotFound`), one that refuses this frontend (401, 403...), or when the
    tries of one outage are spent (`ConnectError`, saying how many over how
    long and the last failure).

    Args:
        url: The backend's WebSocket URL: `websocket.serve`'s, or
            `ws://host:port{prefix}/ws` on the HTTP transport's server.
        interfaces: The interfaces this frontend will call; each is checked
            against what the backend serves before the block starts.
        application_id: Sent with every call (unless the current context has one).
        application_version: Likewise.
        authorization: Sent as the handshake's `Authorization` header, and with
            every call; when None, calls forward the current context's.
        session_id: The session the calls belong to; a fresh one by default.
        headers: More handshake headers (an `Origin`, a cookie...).
        max_message_size: Largest message, in bytes, either way.
        max_in_flight: Calls this connection has waiting at once; more wait for
            room (keep it at or under the server's limit).
        ping_interval: Seconds between pings to the server; None: no pings.
        ping_timeout: Seconds the server has to answer before the connection
            is closed as dead (1011) and its calls fail.
        connect_timeout: Seconds to open the socket and finish the handshake.
        ssl_context: For `wss://` URLs; the system's default when None.
        stream_window: What this frontend takes of a stream's results before
            the backend must wait, per stream (256 items, 4 MiB by default).
        retry: How failed calls are retried, and how a lost socket is made
            again: `attempts` tries per outage, the n-th after `backoff(n)`
            (by default 10 tries over about 11 s). None: neither (a lost
            socket ends the connection).
        interceptors: Run around every call made through this connection
            (`tether.Interceptor`; first outermost, inside the process-wide
            ones), wrapping its retries: one outcome per call as the caller sees it.

    Returns:
        The backend (`ReconnectingBackend`): `get_client`, `state`,
        `wait_state_change`.

    Raises:
        ConnectError: the server could not be reached, or refused the
            handshake (`status_code` says how: 401, 403, 503...). The first
            connection is not tried again: it fails at once.
        IncompatibleVersion: an interface's version is incompatible.
        NotFound: the backend does not serve one of `interfaces`.
        ValueError: `stream_window` is not a `tether.StreamWindow`.
    """
    options = ClientOptions(
        application_id=application_id,
        application_version=application_version,
        authorization=authorization,
        session_id=session_id,
        stream_window=stream_window,
        retry=retry,
        interceptors=interceptors,
        peer=peer_of(url),
    )
    check_positive_int("max_in_flight", max_in_flight)  # before connecting, not after
    header_list = _header_list(headers, authorization)
    _parse_url(url)  # a bad URL is refused here, not by the first dial
    wanted = list(interfaces)

    @asynccontextmanager
    async def dial() -> AsyncIterator[RpcConnection]:
        async with (
            _open_stream(
                url,
                headers=header_list,
                max_message_size=max_message_size,
                connect_timeout=connect_timeout,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                ssl_context=ssl_context,
            ) as stream,
            open_rpc_connection(
                stream, interfaces=wanted, options=options, max_in_flight=max_in_flight
            ) as connection,
        ):
            yield connection

    async with open_reconnecting_backend(
        dial, options, url, reconnect=retry is not None
    ) as backend:
        yield backend


@asynccontextmanager
async def connect_ipc(
    url: str,
    *,
    channels: Iterable[type[IpcInterface]] = (),
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
    headers: Mapping[str, str] | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_pending_notifications: int = DEFAULT_MAX_PENDING_NOTIFICATIONS,
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    slow_listener_timeout: float = DEFAULT_SLOW_FRONTEND_TIMEOUT,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    interceptors: Iterable[Interceptor] = (),
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float = DEFAULT_PING_TIMEOUT,
    connect_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    retry: RetryPolicy | None = DEFAULT_RETRY,
) -> AsyncIterator[FrontendIpc]:
    """Open an IPC session with a backend over WebSocket, for the block.

    Example::

        async with websocket.connect_ipc(url, channels=[EditorIpc]) as frontend_ipc:
            editor = frontend_ipc.proxy(EditorIpc)
            placement = await editor.move_element("0x20", 1.5)

    The session survives a dropped socket: the frontend connects again by
    itself (with `retry`'s backoff) and resumes it, nothing lost or delivered
    twice either way, while the backend keeps it (`resume_grace`, 20 s by
    default); meanwhile `FrontendIpc.state` is RECONNECTING, and calls wait.
    When either side closes the session on purpose, or the backend refuses to
    resume it (expired), or the tries are spent, it ends on both sides, and
    `FrontendIpc.closed_reason` says why (docs/ipc.md, "Resuming a session").

    Args:
        url: As for `connect`.
        channels: The channels this frontend will call; each is checked before
            the block starts.
        application_id: Who the frontend is; the backend's contexts carry it.
        application_version: That application's version.
        authorization: The credential: sent in the IPC `hello` (for the
            backend's `BackendIpc(authorize=...)` hook) and as the handshake's
            `Authorization` header (for the server's own `authorize`).
        headers: More handshake headers.
        max_message_size: Largest message, in bytes, either way.
        max_pending_notifications: Notifications from the backend that may
            wait for this frontend's listeners before it stops reading.
        max_pending_bytes: The same bound in encoded bytes (a single larger
            notification still passes, alone).
        slow_listener_timeout: Seconds the listeners may leave that queue full
            before the session is closed as "frontend too slow".
        stream_window: How much of each stream this frontend takes before
            its sender must wait (`tether.StreamWindow`; 256 items, 4 MiB by
            default): the result items of its stream calls, and the argument
            items of the backend's stream calls to channels it serves.
        interceptors: Run around every invoke and notification this frontend
            sends (`CallInfo.side` "client") and receives ("server"), inside the
            process-wide ones; first outermost.
        ping_interval, ping_timeout, connect_timeout, ssl_context: As for `connect`.
        retry: The reconnect backoff, and tries per outage (`attempts`; about
            11 s by default); None: no resuming, the session ends with its
            first socket.

    Raises:
        ConnectError: the server could not be reached, or refused the handshake.
        Unauthorized: the backend's `authorize` hook refused the session.
        Unavailable: the backend is full (503), or this client has its
            `max_sessions_per_client` open (429).
        NotFound: the backend does not serve one of `channels`.
        IncompatibleVersion: a channel's version is incompatible.
        ValueError: `stream_window` is not a `tether.StreamWindow`.
    """
    check_stream_window(stream_window)  # before connecting, not after
    if retry is not None:
        retry = check_retry(retry)

    def open_socket(
        session_id: str | None = None,
    ) -> AbstractAsyncContextManager[TrioWebSocketStream]:
        return _open_stream(
            url if session_id is None else _resume_url(url, session_id),
            headers=_header_list(headers, authorization),
            max_message_size=max_message_size,
            connect_timeout=connect_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            ssl_context=ssl_context,
        )

    async with (
        open_socket() as stream,
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
            reconnect=open_socket if retry is not None else None,
            retry=retry,
            handshake_timeout=connect_timeout,
        ) as frontend,
    ):
        yield frontend
