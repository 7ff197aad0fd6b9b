"""`serve`: an `HttpApp` on hypercorn's Trio worker, in-process."""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

import trio

from ...runtime import BackendIpc, RpcManager
from ...runtime._util import check_positive_int, check_seconds
from .._tls import check_ssl_context
from ..websocket._endpoint import WebSocketSettings
from ._ipc_server import (
    DEFAULT_IPC_GRACE_PERIOD,
    DEFAULT_IPC_PING_INTERVAL,
    DEFAULT_IPC_PING_TIMEOUT,
)
from ._long_running import DEFAULT_MAX_OPERATIONS, DEFAULT_READY_WITHIN
from ._server import HttpApp
from ._wire import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_SIZE
from ._worker import run_worker

__all__ = ["DEFAULT_KEEP_ALIVE_TIMEOUT", "DEFAULT_SEND_TIMEOUT", "serve"]

#: Seconds a cancelled `serve` gives WebSocket connections to close properly.
_WS_CLOSE_GRACE = 1.0
#: Seconds a client may take nothing of what `serve` sends it before its
#: connection is closed (a client that never reads would hold its answer, its
#: task and its connection for as long as it kept the socket open).
DEFAULT_SEND_TIMEOUT = 30.0
#: Seconds `serve` keeps an idle connection open: longer than any client keeps
#: one (httpx: 5 s, tether: 4 s), so the server never closes a connection that
#: a client is about to reuse.
DEFAULT_KEEP_ALIVE_TIMEOUT = 75.0
#: Requests per connection before hypercorn asks the client to reconnect; its
#: default of 1,000 makes a long-lived client reconnect needlessly.
_KEEP_ALIVE_MAX_REQUESTS = 1_000_000


async def serve(
    manager: RpcManager | None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ipc: BackendIpc | None = None,
    prefix: str = "/rpc",
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    max_in_flight: int = 1024,
    cors_origins: Collection[str] = (),
    ipc_grace_period: float = DEFAULT_IPC_GRACE_PERIOD,
    ipc_ping_interval: float | None = DEFAULT_IPC_PING_INTERVAL,
    ipc_ping_timeout: float = DEFAULT_IPC_PING_TIMEOUT,
    websocket: WebSocketSettings | None = None,
    allowed_hosts: Collection[str] | None = None,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    ready_within: float = DEFAULT_READY_WITHIN,
    max_operations: int = DEFAULT_MAX_OPERATIONS,
    max_connections: int | None = None,
    send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT,
    graceful_timeout: float = 5.0,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    route: str | None = None,
    sockets: Sequence[socket.socket] | None = None,
    static: Mapping[str, str | os.PathLike[str]] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `manager` (and `ipc`) over HTTP with hypercorn's Trio worker.

    Runs until cancelled, or until `shutdown_trigger` returns: then it stops
    accepting, closes IPC sessions ("the server is shutting down"), and lets
    requests in flight finish for up to `graceful_timeout` seconds. Sessions
    on `{prefix}/ws` drain the same way: each call or invoke read from then on
    is refused with `Unavailable` (503, which tether's clients retry), those
    running finish, and each connection closes with 1001 ("the server is
    shutting down") once it has nothing running, or when the grace is over
    (what still runs is cancelled then). Cancelling `serve` stops at once.

    Example::

        async with trio.open_nursery() as nursery:
            url = await nursery.start(http.serve, manager, "127.0.0.1", 0)
            async with http.connect(url, interfaces=[RobotWorldRead]) as backend:
                ...

    Args:
        manager: The impls to serve (None to serve IPC only).
        host: The address to listen on; 127.0.0.1 by default.
        port: The port; 0 picks a free one.
        ipc: The IPC backend to serve too, under `{prefix}/ipc`.
        prefix: The path the routes live under.
        max_body_size: Largest request body and reply, in bytes (413 past it).
        max_in_flight: RPC requests run at once (429 past it).
        cors_origins: Origins whose browser pages may call besides the
            server's own (`"*"` for any); none by default (403 for others).
        ipc_grace_period: Seconds an IPC session outlives its event stream.
        ipc_ping_interval: Seconds between pings on an IPC session's event
            stream; None: no pings (for clients that cannot answer them).
        ipc_ping_timeout: Seconds a frontend has to answer a ping.
        websocket: The settings of `{prefix}/ws`, the WebSocket endpoint on
            the same port (`ws://127.0.0.1:<port>{prefix}/ws`).
        allowed_hosts: `Host` names served (400 for others); None: loopback
            names on a loopback `host`, any name otherwise.
        body_timeout: Seconds a request's whole body may take to arrive
            (408 and the connection closed past it).
        ready_within: Seconds a long-running operation's call may take before
            it is answered `202 Accepted` and a status location to poll
            (unless its policy says `ready_within`); 2 by default.
        max_operations: Long-running operations held at once (503 past it).
        max_connections: Connections open at once (None: no cap); past it, a
            new connection is answered 503 with `Retry-After` and closed.
        send_timeout: Seconds a client may take nothing of an answer (an RPC
            reply, the IPC event stream, a `/ws` frame) before its connection
            is closed; None: wait as long as it keeps the socket open.
        keep_alive_timeout: Seconds an idle connection stays open; keep it
            longer than your clients keep idle connections. It also bounds
            the time a request's headers may take to arrive.
        graceful_timeout: Seconds in-flight requests (and calls on `{prefix}/ws`)
            get at a graceful shutdown.
        shutdown_trigger: Awaited in the background; when it returns, the
            server shuts down gracefully.
        ssl_context: Serve HTTPS (and `wss://` on `{prefix}/ws`) with this
            server-side context: `ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)`
            with `load_cert_chain(certfile, keyfile)`; for mutual TLS also
            `verify_mode = ssl.CERT_REQUIRED` and `load_verify_locations(cafile)`.
            None (the default): plain HTTP. A client that fails the handshake
            (within 60 s) is closed; it costs no other connection anything.
        route: This server's routing token (1-32 characters of `a-z`, `0-9`
            and `-`): every IPC session id (over HTTP and on `{prefix}/ws`),
            and every long-running operation's id, starts `"<route>."`, for a
            reverse proxy to route a session's requests and an operation's
            polls to this server (docs/deployment.md). None: no prefix.
        sockets: Already bound sockets (TCP or Unix) to serve on instead of
            `host` and `port`: one inherited from a parent process (`tether
            serve --workers`, socket activation). Each is put in listening
            state and closed when `serve` ends.
        static: Directories served as static files (GET, HEAD) by URL mount,
            beside the routes: `{"/": "site", "/client": "clients/typescript/dist"}`
            serves `site/index.html` at `/` (docs/http.md, "Static files").
        task_status: `nursery.start` gets the URL to connect to:
            `http://127.0.0.1:<port>{prefix}` (`https://` with `ssl_context`);
            with `sockets`, the first one's (`http://unix:/path{prefix}` for
            a Unix socket).

    Raises:
        ValueError: A limit or timeout is not positive, an origin or host
            name is malformed, `route` is not a routing token, or a `static`
            mount is malformed, inside `prefix` or not an existing directory.
        TypeError: `ssl_context` is not an `ssl.SSLContext` or None.
    """
    from hypercorn.config import Config

    if max_connections is not None:
        check_positive_int("max_connections", max_connections)
    check_seconds("send_timeout", send_timeout, optional=True)
    check_ssl_context(ssl_context)
    app = HttpApp(
        manager,
        ipc=ipc,
        prefix=prefix,
        max_body_size=max_body_size,
        max_in_flight=max_in_flight,
        cors_origins=cors_origins,
        ipc_grace_period=ipc_grace_period,
        ipc_ping_interval=ipc_ping_interval,
        ipc_ping_timeout=ipc_ping_timeout,
        websocket=websocket,
        allowed_hosts=allowed_hosts,
        body_timeout=body_timeout,
        ready_within=ready_within,
        max_operations=max_operations,
        route=route,
        static=static,
    )
    config = Config()
    # The app refuses a message over its limit with 1009 and a reason; hypercorn
    # closes (with 1009 and no reason) only far past it, bounding its buffer.
    config.websocket_max_message_size = 2 * app.websocket.max_message_size
    config.websocket_ping_interval = None  # the app pings, and checks the pongs
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.keep_alive_timeout = keep_alive_timeout
    config.keep_alive_max_requests = _KEEP_ALIVE_MAX_REQUESTS
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("tether.http.hypercorn")

    def started(binds: list[str]) -> None:
        task_status.started(f"{binds[0]}{app.prefix}")

    async def trigger() -> None:
        if shutdown_trigger is None:
            await trio.sleep_forever()
        else:
            await shutdown_trigger()
        # hypercorn cancels every connection once `graceful_timeout` is over:
        # /ws sessions stop draining a moment before, to close properly (1001).
        app.begin_shutdown(ws_grace=graceful_timeout - min(_WS_CLOSE_GRACE, graceful_timeout / 2))

    # hypercorn runs shielded from our cancellation: being cancelled first
    # tells the WebSocket and IPC clients why (1001, "the server is shutting
    # down") and gives their connections a moment to close; then it stops.
    hypercorn_scope = trio.CancelScope(shield=True)
    ended = trio.Event()

    async def run_hypercorn() -> None:
        try:
            with hypercorn_scope:
                await run_worker(
                    app,
                    config,
                    max_connections=max_connections,
                    send_timeout=send_timeout,
                    shutdown_trigger=trigger,
                    started=started,
                    ssl_context=ssl_context,
                    sockets=sockets,
                )
        finally:
            ended.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_hypercorn)
        try:
            await ended.wait()
        finally:
            if not ended.is_set():
                app.begin_shutdown()
                with trio.CancelScope(shield=True) as grace:
                    grace.relative_deadline = _WS_CLOSE_GRACE
                    await app._ws.wait_idle()
                hypercorn_scope.cancel()
