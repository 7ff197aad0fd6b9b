"""`serve`: RPC and IPC sessions over WebSocket on trio-websocket's server."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Collection

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
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve RPC (`manager`) and/or IPC (`ipc`) over WebSocket until cancelled.

    Each connection is one session: an RPC session when the client's `hello`
    asks for RPC, an IPC session when it asks for IPC. Use with
    `nursery.start`, which returns the URL to connect to::

        url = await nursery.start(websocket.serve, manager)
        async with websocket.connect(url, interfaces=[RobotWorldRead]) as backend:
            ...

    Cancelling it closes every connection with 1001 ("the server is shutting
    down") and cancels every call still running.

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
        task_status: Reports the URL, `ws://host:port/`, once listening.

    Raises:
        TypeError: neither `manager` nor `ipc` is given, or `allowed_origins`
            or `allowed_hosts` is one str instead of a collection of them.
        ValueError: a limit or time is not positive, or an origin or host
            name is malformed.
        OSError: the address cannot be bound.
    """
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
    endpoint = Endpoint(manager, ipc, settings)
    handler = functools.partial(_handle_request, endpoint)
    async with trio.open_nursery() as nursery:
        handlers: trio.Nursery = await nursery.start(_own_connections, endpoint)
        # One task pings every connection (none per connection).
        await nursery.start(endpoint.ping_connections)
        listeners = await trio.open_tcp_listeners(port, host=host)
        server = _Server(
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
        task_status.started(f"ws://{shown}:{server.port}/")
        try:
            await trio.sleep_forever()
        finally:
            # Cancelled: the listeners close with this nursery; the sessions
            # end now, each telling its client why (1001).
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

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
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
            request = await _read_request(connection, stream)
        if request is None:
            await stream.aclose()
            return
        try:
            await self._handler(request)
        finally:
            with trio.move_on_after(self._disconnect_timeout):
                await connection.aclose()


async def _read_request(
    connection: trio_websocket.WebSocketConnection, stream: trio.abc.Stream
) -> trio_websocket.WebSocketRequest | None:
    """Read the upgrade request, as trio-websocket's reader task would; None if none came."""
    wsproto = connection._wsproto
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
        try:
            wsproto.receive_data(bytes(data))
        except RemoteProtocolError as err:
            # A malformed request: wsproto's 400, as trio-websocket answers it.
            if err.event_hint:
                with contextlib.suppress(trio_websocket.ConnectionClosed):
                    await connection._send(err.event_hint)
            return None


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
            await endpoint.wait_closing()
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
            ws, endpoint.settings.max_message_size, "WebSocket", endpoint, own_reading=True
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
