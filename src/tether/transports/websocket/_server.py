"""`serve`: RPC and IPC sessions over WebSocket on trio-websocket's server."""

from __future__ import annotations

import contextlib
import functools
import logging
import ssl
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request
from wsproto.utilities import RemoteProtocolError

from ...runtime import BackendIpc, RpcManager, TetherError
from ...runtime._resume import (
    DEFAULT_REPLAY_BYTES,
    DEFAULT_REPLAY_MESSAGES,
    DEFAULT_RESUME_GRACE,
)
from ...runtime._util import check_seconds
from .._tls import check_ssl_context, server_handshake
from ._endpoint import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    Authorize,
    Endpoint,
    Handshake,
    Refusal,
    WebSocketSettings,
    log_refusal,
)
from ._streams import CLOSE_TIMEOUT, TrioWebSocketStream

__all__ = ["serve"]

# ---------------------------------------------------------------------------
# trio-websocket server


_log = logging.getLogger("tether.websocket")


async def serve(
    manager: RpcManager | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ipc: BackendIpc | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_in_flight: int = 1024,
    max_connections: int = 1024,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float = DEFAULT_PING_TIMEOUT,
    allowed_origins: Collection[str] | None = None,
    allowed_hosts: Collection[str] | None = None,
    authorize: Authorize | None = None,
    handshake_timeout: float = 10.0,
    resume_grace: float | None = DEFAULT_RESUME_GRACE,
    replay_messages: int = DEFAULT_REPLAY_MESSAGES,
    replay_bytes: int = DEFAULT_REPLAY_BYTES,
    graceful_timeout: float = 5.0,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    route: str | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve RPC (`manager`) and/or IPC (`ipc`) over WebSocket until cancelled.

    Each connection is one session: an RPC session when the client's `hello`
    asks for RPC, an IPC session when it asks for IPC. Use with
    `nursery.start`, which returns the URL to connect to::

        url = await nursery.start(websocket.serve, manager)
        async with websocket.connect(url, interfaces=[RobotWorldRead]) as backend:
            ...

    A plain `GET /health` (not an upgrade) is answered `200` with
    `{"status": "ok"}`, and `503` with `{"status": "shutting-down"}` while
    the server shuts down, for load balancers and orchestrators.

    When `shutdown_trigger` returns, the server shuts down gracefully, and
    returns once done: it refuses new connections (`503` and `Retry-After`
    at the handshake), answers each call or IPC invoke read from then on with
    `Unavailable` (503, which tether's clients retry), lets the calls and
    invokes already running finish for up to `graceful_timeout` seconds,
    closing each connection with 1001 ("the server is shutting down") as soon
    as it has nothing running, then cancels what still runs and closes the
    rest the same way. Cancelling it shuts down at once: every connection is
    closed with 1001 and every call still running is cancelled.

    Args:
        manager: The RPC impls to serve, or None to serve IPC only.
        host: The address to bind; loopback by default.
        port: The port; 0 picks a free one.
        ipc: The IPC backend to serve, if any.
        max_message_size, max_in_flight, max_connections, ping_interval,
        ping_timeout, allowed_origins, allowed_hosts, authorize,
        handshake_timeout, resume_grace, replay_messages, replay_bytes: See
            `WebSocketSettings`. By default, only pages
            of the server's own origin (and programs, which send no
            `Origin`) may connect, and on a loopback address only loopback
            `Host` names are answered.
        graceful_timeout: Seconds the calls and invokes running get to finish
            at a graceful shutdown.
        shutdown_trigger: Awaited in the background; when it returns, the
            server shuts down gracefully (`event.wait`, or a function that
            waits for SIGTERM).
        ssl_context: Serve `wss://` with this server-side context
            (`ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)` with
            `load_cert_chain(certfile, keyfile)`; for mutual TLS also
            `verify_mode = ssl.CERT_REQUIRED` and `load_verify_locations(cafile)`).
            The TLS handshake counts against `handshake_timeout`. None (the
            default): plain `ws://`.
        route: This server's routing token (1-32 characters of `a-z`, `0-9`
            and `-`): every IPC session id is then `"<route>.<uuid4>"`, and a
            frontend's resuming reconnects carry it in `?tether_session=`, for
            a reverse proxy to route them to this server (docs/deployment.md).
            None (the default): plain uuid4 ids.
        task_status: Reports the URL, `ws://host:port/` (`wss://` with
            `ssl_context`), once listening.

    Raises:
        TypeError: neither `manager` nor `ipc` is given, or `allowed_origins`
            or `allowed_hosts` is one str instead of a collection of them.
        ValueError: a limit or time is not positive, an origin or host
            name is malformed, or `route` is not a routing token.
        OSError: the address cannot be bound.
    """
    check_seconds("graceful_timeout", graceful_timeout)
    check_ssl_context(ssl_context)
    settings = WebSocketSettings(
        max_message_size=max_message_size,
        max_in_flight=max_in_flight,
        max_connections=max_connections,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        allowed_origins=allowed_origins,
        allowed_hosts=allowed_hosts,
        authorize=authorize,
        handshake_timeout=handshake_timeout,
        resume_grace=resume_grace,
        replay_messages=replay_messages,
        replay_bytes=replay_bytes,
    )
    endpoint = Endpoint(manager, ipc, settings, route=route)
    handler = functools.partial(_handle_request, endpoint)
    async with trio.open_nursery() as nursery:
        handlers: trio.Nursery = await nursery.start(_own_connections, endpoint)
        # One task pings every connection (none per connection).
        await nursery.start(endpoint.ping_connections)
        try:
            tcp_listeners = await trio.open_tcp_listeners(port, host=host)
        except BaseException:
            # Lets `_own_connections` (shielded) end: it waits for a shutdown.
            endpoint.begin_shutdown()
            raise
        listeners: list[trio.SocketListener | trio.SSLListener[trio.SocketStream]] = list(
            tcp_listeners
        )
        if ssl_context is not None:
            listeners = [
                trio.SSLListener(listener, ssl_context, https_compatible=True)
                for listener in tcp_listeners
            ]
        server = _Server(
            endpoint,
            handler,
            listeners,
            handler_nursery=handlers,
            message_queue_size=4,
            max_message_size=settings.max_message_size,
            receive_buffer_size=_READ_SIZE,
            connect_timeout=settings.handshake_timeout,
            disconnect_timeout=CLOSE_TIMEOUT,
        )
        await nursery.start(server.run)
        shown = f"[{host}]" if ":" in host else host
        scheme = "ws" if ssl_context is None else "wss"
        task_status.started(f"{scheme}://{shown}:{server.port}/")
        try:
            if shutdown_trigger is None:
                await trio.sleep_forever()
            await shutdown_trigger()
            _log.info(
                "shutting down gracefully: %d WebSocket connections get up to %g s to finish",
                endpoint.connections,
                graceful_timeout,
            )
            # The listener stays open while the sessions drain: handshakes are
            # refused (503) and /health says so, rather than connects refused.
            endpoint.begin_shutdown(graceful=True)
            await endpoint.drain(graceful_timeout)
            nursery.cancel_scope.cancel()
        finally:
            # Cancelled (or drained): the listeners close with this nursery;
            # the sessions left end now, each telling its client why (1001).
            endpoint.begin_shutdown()


#: Bytes asked of the socket in one read while the handshake comes.
_READ_SIZE = 64 * 1024


class _Server(trio_websocket.WebSocketServer):
    """trio-websocket's server, whose connections have no reader task of their own.

    trio-websocket starts a reader task with every connection, which hands
    each message to the session through a memory channel: a second task
    switch per message. Here the connection's own task reads the upgrade
    request, and once the connection is accepted, the session reads the
    socket itself (`TrioWebSocketStream(own_reading=True)`, `SocketReader`).
    """

    def __init__(self, endpoint: Endpoint, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._endpoint = endpoint

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        if isinstance(stream, trio.SSLStream):
            # The TLS handshake first, so that a refused client certificate is
            # answered with its alert. Then the SSL stream does its own
            # reading: trio-websocket's reader task reads it, as on the client
            # (and a plain GET /health gets wsproto's 400 there).
            if await server_handshake(stream, self._connect_timeout):
                await super()._handle_connection(stream)
            else:
                await trio.aclose_forcefully(stream)
            return
        # trio-websocket's, less the reader task: its reading of the request
        # is `_read_request`, in this task.
        connection = trio_websocket.WebSocketConnection(
            stream,
            WSConnection(ConnectionType.SERVER),
            message_queue_size=self._message_queue_size,
            max_message_size=self._max_message_size,
            receive_buffer_size=self._receive_buffer_size,
        )
        request = None
        with trio.move_on_after(self._connect_timeout):
            request = await _read_request(connection, stream, self._endpoint)
        if request is None:
            await stream.aclose()
            return
        try:
            await self._handler(request)
        finally:
            with trio.move_on_after(self._disconnect_timeout):
                await connection.aclose()


async def _read_request(
    connection: trio_websocket.WebSocketConnection, stream: trio.abc.Stream, endpoint: Endpoint
) -> trio_websocket.WebSocketRequest | None:
    """Read the upgrade request, as trio-websocket's reader task would; None if none came.

    A plain `GET /health` is answered here (`_answer_health`), and None returned.
    """
    wsproto = connection._wsproto
    head = b""  # the first bytes that came, for the request line of a plain GET /health
    while True:
        for event in wsproto.events():
            if type(event) is Request:
                return trio_websocket.WebSocketRequest(connection, event)
        try:
            data = await stream.receive_some(_READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        if not data:
            return None
        if len(head) < _MAX_HEAD:
            head += data
        try:
            wsproto.receive_data(bytes(data))
        except RemoteProtocolError as err:
            # wsproto refuses any request that is not an upgrade before a
            # handler could see it: a health check is recognised here, by
            # the request line of what it refused.
            if _is_health_check(head):
                await _answer_health(stream, endpoint)
                return None
            # A malformed request: wsproto's 400, as trio-websocket answers it.
            if err.event_hint:
                with contextlib.suppress(trio_websocket.ConnectionClosed):
                    await connection._send(err.event_hint)
            return None


#: Bytes of a request kept to read its request line.
_MAX_HEAD = 8 * 1024
#: Seconds a health check's client gets to take its answer.
_HEALTH_SEND_TIMEOUT = 5.0


def _is_health_check(head: bytes) -> bool:
    """Whether `head` starts with the request line `GET /health[?...] HTTP/1.x`."""
    line, _, _ = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or not parts[2].startswith(b"HTTP/1."):
        return False
    return parts[1].partition(b"?")[0] == b"/health"


async def _answer_health(stream: trio.abc.Stream, endpoint: Endpoint) -> None:
    """Answer a health check: 200 `{"status":"ok"}`, or 503 while shutting down."""
    if endpoint.shutting_down:
        status, body = b"503 Service Unavailable", b'{"status":"shutting-down"}'
        extra = b"retry-after: 1\r\n"
    else:
        status, body, extra = b"200 OK", b'{"status":"ok"}', b""
    answer = (
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"cache-control: no-store\r\nconnection: close\r\n%s\r\n%s"
    ) % (status, len(body), extra, body)
    with trio.move_on_after(_HEALTH_SEND_TIMEOUT):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(answer)


async def _own_connections(
    endpoint: Endpoint, *, task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED
) -> None:
    """The nursery of the connections, shielded from `serve`'s cancellation.

    So that a shutdown can close each connection properly (the close frame
    sent, the client's answer read by the connection's own reader task) before
    the connections' tasks are cancelled: at once when all have closed, or
    after `CLOSE_TIMEOUT`.
    """
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as handlers:
            task_status.started(handlers)
            # Not at the start of a graceful shutdown: once its sessions have
            # drained, or its grace is over.
            await endpoint.wait_cut()
            with trio.move_on_after(CLOSE_TIMEOUT):
                await endpoint.wait_idle()
            handlers.cancel_scope.cancel()


async def _handle_request(endpoint: Endpoint, request: trio_websocket.WebSocketRequest) -> None:
    try:
        await _serve_request(endpoint, request)
    except* Exception as failed:
        # trio-websocket runs every connection's handler in the server's own
        # nursery: whatever one connection raises (a bug, or input a library
        # did not expect) must end that connection, not the server and every
        # other connection with it.
        _log.error("closed a WebSocket connection that failed", exc_info=failed)
        refusal = Refusal(500, TetherError("the server failed while opening this connection"))
        # When it failed before the handshake was answered, answer it; after,
        # the session's own close went out already (and reject refuses).
        with contextlib.suppress(Exception):
            await request.reject(
                refusal.status, extra_headers=refusal.response_headers(), body=refusal.body()
            )


async def _serve_request(endpoint: Endpoint, request: trio_websocket.WebSocketRequest) -> None:
    try:
        where = _address(request.remote)
    except OSError:
        return  # reset as it sent the request (getpeername fails): nobody to answer
    # wsproto keeps Host out of the request's headers; the handshake has it,
    # as hypercorn's has.
    host: str = request._event.host
    raw = [(b"host", host.encode()), *request.headers]
    handshake = Handshake.from_raw(request.path, raw, where)
    local = request.local
    refusal = await endpoint.check(
        handshake, local=str(local.address) if isinstance(local, trio_websocket.Endpoint) else None
    )
    if refusal is not None:
        log_refusal(refusal, request.path, where)
        await request.reject(
            refusal.status, extra_headers=refusal.response_headers(), body=refusal.body()
        )
        return
    try:
        ws = await request.accept()
        stream = TrioWebSocketStream(
            ws,
            endpoint.settings.max_message_size,
            "WebSocket",
            endpoint,
            own_reading=type(ws._stream) is trio.SocketStream,
        )
        try:
            await endpoint.run(stream, handshake)
        finally:
            # Usually a no-op: the session closed the stream as it ended.
            await stream.aclose()
            await stream.hang_up()
    finally:
        endpoint.release()


def _address(where: trio_websocket.Endpoint | str) -> str:
    if isinstance(where, trio_websocket.Endpoint):
        return f"{where.address}:{where.port}"
    return str(where)
