"""The HTTP transport's server: an ASGI app served by hypercorn's Trio worker.

Routes under `prefix` (DESIGN.md section 4):

* `POST {prefix}/{interface}/{version}/{operation}`: one RPC call; the body is
  the JSON array of its arguments, the headers carry its context; a cacheable
  operation also takes `GET` with the arguments in the query (`_cache`);
* `GET {prefix}/`: what this backend serves; `GET {prefix}/health`: liveness;
  `GET {prefix}/openapi.json`: the OpenAPI 3.1 document of the interfaces;
* `POST {prefix}/ipc`: open an IPC session (hello -> welcome, session id and
  token); `POST {prefix}/ipc/{session}`: one message from the frontend;
  `GET {prefix}/ipc/{session}/events`: the backend's messages, as Server-Sent
  Events; `DELETE {prefix}/ipc/{session}`: the frontend leaves.

Every route first refuses a request from a page or to a `Host` the backend does
not serve (`SitePolicy`), and every POST whose body is not JSON, before
anything reads it or runs; `OPTIONS` and a 405 name the same methods per route.

Each RPC request runs its impl in the request's own task, under the request's
context and deadline; a second task watches for the client's disconnect and
cancels the impl when it comes. IPC sessions run the same engine as every other
transport (`serve_ipc_session`) over a stream whose one direction is the POSTs
and whose other is the event stream; they live in a nursery that the ASGI
lifespan owns, so they end when the server does.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Collection, Mapping
from typing import Any

import trio

from ...runtime import (
    PROTOCOL_VERSION,
    BackendIpc,
    Dispatcher,
    InvalidRequest,
    NotFound,
    Operation,
    RpcManager,
    TetherError,
    Unavailable,
)
from ...runtime._codec import dumps, loads
from ...runtime._dispatch import (
    PreparedCall,
    access_clock,
    error_info,
)
from ...runtime._protocol import (
    Call,
    CallContext,
    Error,
    ErrorInfo,
    Result,
    unpack_frame,
)
from ...runtime._util import check_route, check_seconds
from .._web import SitePolicy, origin_list
from ..websocket._endpoint import Endpoint as WsEndpoint
from ..websocket._endpoint import Handshake, WebSocketSettings, log_refusal
from ..websocket._endpoint import Refusal as WsRefusal
from ..websocket._streams import AsgiWebSocketStream
from ._access import HttpAccess
from ._asgi import (
    ClientLeft,
    DisconnectWatch,
    Receive,
    Refused,
    Scope,
    Send,
    error_body,
    not_allowed,
    read_body,
    remote_address,
    require_json_or_frame,
    require_stream_body,
    send_error_info,
    takes_frame,
)
from ._cache import NO_STORE, CachedAnswer, get_args
from ._call_headers import read_call_headers
from ._cors import cors_headers, send_options
from ._framing import Splitter, media_form, two_way_refusal
from ._ipc_server import (
    DEFAULT_IPC_GRACE_PERIOD,
    DEFAULT_IPC_PING_INTERVAL,
    DEFAULT_IPC_PING_TIMEOUT,
    IpcRoutes,
)
from ._long_running import DEFAULT_MAX_OPERATIONS, DEFAULT_READY_WITHIN, LongRunningOperations
from ._openapi import openapi_document
from ._openapi_streams import stream_kinds
from ._routes import (
    OPERATION,
    RPC,
    RPC_CACHEABLE,
    Route,
    not_found,
    route_for,
)
from ._static import StaticFiles, check_static
from ._stream_server import (
    BodyReader,
    error_start,
    read_arguments,
    run_argument_stream,
    send_drained,
    send_reply,
    serve_result_stream,
)
from ._wire import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_SIZE, JSON, STATUS_CODES

__all__ = ["HttpApp"]

_log = logging.getLogger("tether.http")
#: Accepted (Host, local address) pairs remembered, so that a client's
#: requests are not judged again one by one.
_HOSTS_REMEMBERED = 256
_NOT_ON_TRIO = (
    "tether's HttpApp runs on Trio, and this server runs another event loop: serve it with "
    "hypercorn's Trio worker (hypercorn app:asgi --worker-class trio)"
)


def _on_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


class HttpApp:
    """The ASGI application of a tether backend: RPC and, optionally, IPC over HTTP.

    Serve it with `serve()`, or with hypercorn's command line (Trio worker)::

        # app.py
        asgi = HttpApp(manager, ipc=backend_ipc)

        $ hypercorn app:asgi --worker-class trio --keep-alive 75

    Args:
        manager: The impls to serve (None: no RPC routes answer but describe).
        ipc: The IPC backend to serve under `{prefix}/ipc`, if any.
        prefix: Where the routes live: `/rpc` serves `POST /rpc/Iface/1.0.0/op`.
        max_body_size: Largest request body and reply, in bytes; larger ones
            are refused with 413 (payload-too-large).
        max_in_flight: RPC requests the app runs at once; more are refused with
            429 and `Retry-After`.
        cors_origins: Origins (`https://app.example`, or `"*"` for any) whose
            browser pages may call this backend besides its own; none by
            default. A request from any other page is refused (403).
        ipc_grace_period: Seconds an IPC session waits for its event stream,
            before the first one and after one closes, before it ends.
        ipc_ping_interval: Seconds between pings on an IPC session's event
            stream; None sends none (for clients that cannot answer, such as
            curl: a silent connection then goes unnoticed).
        ipc_ping_timeout: Seconds a frontend has to answer a ping (POST the
            pong) before its session ends.
        websocket: How `{prefix}/ws` (RPC and IPC sessions over WebSocket)
            treats its clients: limits, keepalive, Origin allow-list,
            handshake authorization. Defaults when None.
        allowed_hosts: The `Host` names this backend answers to (without
            port; `"*"` for any). None: loopback names when the request came
            to a loopback address, any name otherwise. Others get 400.
        body_timeout: Seconds a request's whole body may take to arrive once
            its headers have; a slower one gets 408 and its connection closes.
        ready_within: Seconds a call of a long-running operation may take
            before the answer is `202 Accepted` and a status location to poll
            (docs/http.md), unless its `@tether.long_running(ready_within=)`
            says otherwise.
        max_operations: Long-running operations held at once (running, or
            done and not yet collected); more are refused with 503.
        route: This server's routing token (1-32 characters of `a-z`, `0-9`
            and `-`): every IPC session id (`"<route>.<uuid4>"`) and long-
            running operation id starts with it, so that a reverse proxy can
            send a session's or an operation's later requests to the server
            that holds it (docs/deployment.md). None (the default): no prefix.
        static: Directories to serve as static files (GET, HEAD), by URL mount:
            `{"/": "site", "/client": "clients/typescript/dist"}` (docs/http.md).

    Raises:
        ValueError: `prefix` does not start with "/", a limit, timeout or ping
            setting is not positive, an origin or host name is malformed, or
            `route` is not a routing token, or a `static` mount is malformed,
            inside `prefix` or not an existing directory.
    """

    def __init__(
        self,
        manager: RpcManager | None = None,
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
        route: str | None = None,
        static: Mapping[str, str | os.PathLike[str]] | None = None,
    ) -> None:
        check_route(route)
        prefix = prefix.rstrip("/")
        if prefix and not prefix.startswith("/"):
            raise ValueError(f"prefix must start with '/', got {prefix!r}")
        if max_body_size < 1 or max_in_flight < 1 or max_operations < 1:
            raise ValueError("max_body_size, max_in_flight and max_operations must be at least 1")
        check_seconds("ready_within", ready_within)
        check_seconds("body_timeout", body_timeout, finite=False)
        if ipc is not None and not isinstance(ipc, BackendIpc):
            raise TypeError(f"ipc must be a tether.BackendIpc, got {ipc!r}")
        check_seconds("ipc_ping_interval", ipc_ping_interval, optional=True)
        check_seconds("ipc_ping_timeout", ipc_ping_timeout)
        self.manager = manager if manager is not None else RpcManager()
        self.ipc = ipc
        self.prefix = prefix
        self.static = check_static(static, prefix)
        self._static = StaticFiles(self.static) if self.static else None
        self.max_body_size = max_body_size
        self.max_in_flight = max_in_flight
        self.body_timeout = float(body_timeout)
        origin_list(cors_origins, "cors_origins")  # errors name the argument given
        # Which pages and Host names may reach every route, /ws included.
        self.site = SitePolicy(allowed_origins=cors_origins, allowed_hosts=allowed_hosts)
        self.cors_origins = self.site.allowed_origins
        self.ipc_grace_period = ipc_grace_period
        self.ipc_ping_interval = ipc_ping_interval
        self.ipc_ping_timeout = ipc_ping_timeout
        self._ipc = None
        if ipc is not None:
            self._ipc = IpcRoutes(
                ipc,
                prefix,
                max_body_size,
                ipc_grace_period,
                self.body_timeout,
                ipc_ping_interval,
                ipc_ping_timeout,
                session_route=route,
            )
        self._dispatcher = Dispatcher(self.manager)
        self.websocket = websocket if websocket is not None else WebSocketSettings()
        # An app given no manager serves IPC only on WebSocket too: an RPC
        # hello there is refused, not welcomed to an empty backend.
        ws_manager = self.manager if manager is not None or ipc is None else None
        self.route = route
        self._ws = WsEndpoint(ws_manager, ipc, self.websocket, self.site, route=route)
        self._in_flight = 0
        self._nursery: trio.Nursery | None = None
        self._shutting_down = False
        # Watcher tasks are spawned from this empty context, not the request's.
        self._clean = contextvars.Context()
        self._hosts: dict[tuple[bytes | None, str | None], str | None] = {}
        self.ready_within = float(ready_within)
        self.max_operations = max_operations
        self._operations = LongRunningOperations(
            self._dispatcher, prefix, self.ready_within, max_operations, self._clean, route
        )

    # -- ASGI ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`{prefix}/ws`: one RPC or IPC session per connection."""
        if (await receive())["type"] != "websocket.connect":
            return  # pragma: no cover - ASGI says the first event is connect
        path = scope["path"]
        remote = remote_address(scope)
        endpoint = self._ws  # this connection's, even if the app is served again meanwhile
        refusal: WsRefusal | None
        handshake: Handshake | None = None
        if path != f"{self.prefix}/ws":
            refusal = WsRefusal(
                404, NotFound(f"no WebSocket endpoint at {path}: it is {self.prefix}/ws")
            )
        else:
            handshake = Handshake.from_raw(path, scope["headers"], remote)
            server = scope.get("server")
            refusal = await endpoint.check(handshake, local=server[0] if server else None)
        if refusal is not None:
            log_refusal(refusal, path, remote)
            if "websocket.http.response" in scope.get("extensions", {}):
                await send(
                    {
                        "type": "websocket.http.response.start",
                        "status": refusal.status,
                        "headers": refusal.response_headers(),
                    }
                )
                await send({"type": "websocket.http.response.body", "body": refusal.body()})
            else:  # pragma: no cover - hypercorn has the extension
                await send({"type": "websocket.close", "code": 1008})
            return
        try:
            await send({"type": "websocket.accept"})
            stream = AsgiWebSocketStream(receive, send, self.websocket.max_message_size, endpoint)
            try:
                await endpoint.run(stream, handshake)
            finally:
                # Sends the close the session asked for, if it could not yet.
                await stream.aclose()
        finally:
            endpoint.release()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":  # pragma: no cover - ASGI says it is
            return
        if not _on_trio():
            # hypercorn's default worker is asyncio's: refuse to start, in one
            # line that says what to add, rather than answer every request 500.
            await send({"type": "lifespan.startup.failed", "message": _NOT_ON_TRIO})
            return
        if self._nursery is not None:
            await send(
                {
                    "type": "lifespan.startup.failed",
                    "message": "this HttpApp is already being served: make one per server",
                }
            )
            return
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._shutting_down = False
                if self._ws.shutting_down:  # served again after a shutdown
                    self._ws = WsEndpoint(
                        self._ws.manager, self._ws.ipc, self.websocket, self.site, route=self.route
                    )
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
                self.begin_shutdown()
                # Sessions were told to close; give them a moment to say so.
                nursery.cancel_scope.deadline = trio.current_time() + 1.0
        finally:
            self._nursery = None
        await send({"type": "lifespan.shutdown.complete"})

    def begin_shutdown(self, ws_grace: float | None = None) -> None:
        """Stop taking new work: health answers 503, IPC sessions close.

        `serve` calls it when its shutdown trigger fires; the ASGI lifespan
        calls it at shutdown. RPC requests already running go on.

        Args:
            ws_grace: Seconds `{prefix}/ws` sessions get to drain (new calls
                refused with 503, those running finish, then close 1001);
                None: they close with 1001 now, their calls cancelled.
        """
        self._shutting_down = True
        # WebSocket sessions close with 1001 "the server is shutting down".
        if ws_grace is not None and self._nursery is not None:
            self._ws.begin_shutdown(graceful=True)
            self._nursery.start_soon(self._ws.drain, ws_grace)
        else:
            self._ws.begin_shutdown()
        if self._ipc is not None:
            self._ipc.close_all("the server is shutting down")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = access_clock()
        if not started:  # the access log is off
            await self._answer(scope, receive, send, None)
            return
        access = HttpAccess(send, started, scope)
        try:
            await self._answer(scope, receive, access.send, access)
        finally:
            access.log()

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, access: HttpAccess | None
    ) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        host = origin = None
        for key, value in headers:
            if key == b"host":
                host = value
            elif key == b"origin":
                # Sent twice (never by a browser): both, which no origin matches.
                origin = value if origin is None else origin + b", " + value
        parts = self._parts(path)
        route = None if parts is None else self._route(parts)
        operation = None
        if route is RPC:
            assert parts is not None
            operation = self._operation(parts)
            cacheable = operation is not None and operation.policy.cache is not None
            # A GET of an unknown operation is answered 404 by the call, as a POST.
            if cacheable or (operation is None and method in ("GET", "HEAD")):
                route = RPC_CACHEABLE
            if access is not None:
                access.rpc_path = parts
        cors: list[tuple[bytes, bytes]] = []
        try:
            # The site first: a request from a page or a name this backend does
            # not serve is refused before anything else looks at it.
            host_text = self._check_host(host, scope)
            if origin is not None:
                origin_text = origin.decode("latin-1")
                forbidden = self.site.refuse_origin(origin_text, host_text)
                if forbidden is not None:
                    raise Refused(forbidden)
                cors = self._cors_headers(origin_text)
            if route is None:
                static = self._static if parts is None else None
                if static is not None and await static.answer(path, method, headers, send, cors):
                    return
                raise Refused(self._not_found(path, parts))
            assert parts is not None
            if method not in route.methods:
                raise not_allowed(method, route.allow)
            if method == "OPTIONS":
                await send_options(send, route, cors)
            elif route.kind == "rpc":
                get = None if method == "POST" else (scope["query_string"], method == "HEAD")
                await self._rpc(receive, send, headers, parts, cors, access, operation, get)
            elif route is OPERATION:
                await self._operations.route(
                    send, headers, method, parts[1], cors, self.max_body_size
                )
            elif route.kind == "ipc":
                assert self._ipc is not None
                if access is not None and len(parts) > 1:
                    access.session_id = parts[1]
                await self._ipc.route(
                    receive,
                    send,
                    headers,
                    method,
                    parts,
                    scope,
                    cors,
                    self._nursery,
                    shutting_down=self._shutting_down,
                )
            else:
                await self._get(send, parts[0], cors, head=method == "HEAD")
        except ClientLeft:
            return
        except TetherError as exc:
            # From reading an IPC route's body (413): _rpc answers its own.
            await self._send_error(send, exc, None, cors)
        except Refused as refused:
            headers = [*cors, *refused.headers]
            if method in ("GET", "HEAD"):
                headers.append(NO_STORE)  # a 404 or 405 may be cached by default
            await self._send_error(send, refused.error, refused.status, headers)

    def _check_host(self, host: bytes | None, scope: Scope) -> str | None:
        """The request's `Host`, once the site policy has accepted it.

        Raises:
            Refused: 400, a Host this backend does not answer to.
        """
        server = scope.get("server")
        local = server[0] if server else None
        key = (host, local)
        hosts = self._hosts
        if key in hosts:
            return hosts[key]
        text = None if host is None else host.decode("latin-1")
        refusal = self.site.refuse_host(text, local)
        if refusal is not None:
            raise Refused(refusal)
        if len(hosts) < _HOSTS_REMEMBERED:
            hosts[key] = text
        return text

    def _parts(self, path: str) -> list[str] | None:
        """The path's segments after the prefix; None when it is not under the prefix."""
        prefix = self.prefix
        if path == prefix:
            return [""]
        if not path.startswith(prefix + "/"):
            return None
        return path[len(prefix) + 1 :].split("/")

    def _route(self, parts: list[str]) -> Route | None:
        """Which route `parts` names, if any."""
        return route_for(parts, ipc=self._ipc is not None)

    def _not_found(self, path: str, parts: list[str] | None) -> NotFound:
        return not_found(path, parts, self.prefix, ipc=self._ipc is not None)

    # -- RPC -------------------------------------------------------------------

    async def _rpc(
        self,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        parts: list[str],
        cors: list[tuple[bytes, bytes]],
        access: HttpAccess | None,
        operation: Operation | None,
        get: tuple[bytes, bool] | None,
    ) -> None:
        """One call: a POST, or (`get`: its query and whether it is a HEAD) a
        GET of a cacheable operation."""
        request = read_call_headers(headers)
        if get is not None:
            policy = None if operation is None else operation.policy.cache
            send = CachedAnswer(send, headers, policy, head=get[1]).send
        activity_id = request.activity_id
        if access is not None:
            access.activity_id = activity_id
        bad_header = request.refusal()
        if bad_header is not None:
            await self._send_error(send, bad_header, None, cors, activity_id)
            return
        echo = [*cors, (b"x-correlation-id", activity_id.encode())]
        if operation is not None and operation.stream_result and operation.stream_param is not None:
            refusal = NotFound(
                two_way_refusal(operation.qualname, self.prefix),
                details={
                    "interface": parts[0],
                    "operation": parts[2],
                    "transports": ["memory", "websocket", "local"],
                },
            )
            await self._send_error(send, refusal, None, echo, activity_id)
            return
        # A client stream: the body is the arguments, then the items.
        splitter: Splitter | None = None
        ended = True
        try:
            framed = False
            if get is not None:
                args: Any = [] if operation is None else get_args(get[0], headers, operation)
            elif operation is not None and operation.stream_param is not None:
                splitter = Splitter(require_stream_body(request.content_type), self.max_body_size)
                ended = False
            else:
                framed = require_json_or_frame(request.content_type)
            timeout_ms = request.checked_timeout_ms()
            body: bytes | bytearray
            if splitter is not None:
                body, ended = await read_arguments(receive, splitter, self.body_timeout)
                # A records body's arguments may be a frame (bytes among them).
                framed = body[:1] == b"\x00"
            elif get is None:
                body = await read_body(
                    receive, request.content_length, self.max_body_size, self.body_timeout
                )
            if get is None:
                args = unpack_frame(body).get("args") if framed else loads(body)
            if not isinstance(args, list):
                raise InvalidRequest(
                    f"the body must be a JSON array of the operation's arguments, got "
                    f"{type(args).__name__}"
                    if not framed
                    else 'the frame\'s envelope must be an object {"args": [...]} holding the '
                    f"operation's arguments, its args are {type(args).__name__}",
                    details={"field": "body"},
                )
            if self._in_flight >= self.max_in_flight:
                raise Unavailable(
                    f"this backend already runs {self.max_in_flight} requests: retry shortly",
                    retry_after=1,
                    overloaded=True,
                )
            if self._shutting_down:
                raise Unavailable("this backend is shutting down: retry shortly", retry_after=1)
            call = Call(
                0,
                parts[0],
                parts[1],
                parts[2],
                args,
                CallContext(
                    activity_id,
                    request.session_id,
                    request.application_id,
                    request.application_version,
                    request.authorization,
                    request.metadata,
                    request.traceparent,
                ),
                timeout_ms,
            )
            prepared = self._dispatcher.prepare(call)
        except TetherError as exc:
            drain = None if ended else receive
            await self._send_error(send, exc, None, echo, activity_id, drain)
            return
        except Refused as refused:
            headers = [*echo, *refused.headers]
            # A body that stalled (408) is not waited for again.
            drain = None if ended or refused.status == 408 else receive
            await self._send_error(send, refused.error, refused.status, headers, activity_id, drain)
            return
        if access is not None:
            access.dispatched = True  # the dispatcher writes the call's line
        self._in_flight += 1
        manager = self.manager
        # Counted as the other engines count them (RpcManager.statistics).
        is_stream = splitter is not None or prepared.operation.stream_result
        if is_stream:
            manager.count_stream(1)
        try:
            if prepared.operation.stream_result:
                records = bool(media_form(request.accept))
                await serve_result_stream(
                    self._run_call, prepared, receive, send, echo, records, self.max_body_size
                )
                return
            if prepared.operation.policy.long_running is not None and self._nursery is not None:
                # Served with the lifespan (hypercorn, serve): it may outlive the request.
                try:
                    reply = await self._operations.call(
                        prepared, request.authorization, receive, send, echo, self._nursery
                    )
                except Unavailable as full:  # before anything ran
                    await self._send_error(send, full, None, echo, activity_id)
                    return
            elif splitter is not None:
                reader = BodyReader(receive, splitter, ended)
                window = self.manager.stream_window
                reply = await run_argument_stream(self._dispatcher, window, prepared, reader)
                ended = reader.ended
            else:
                reply = await self._run_call(prepared, receive)
        finally:
            self._in_flight -= 1
            if is_stream:
                manager.count_stream(-1)
        if reply is None:
            return  # the client left: nobody to answer
        await send_reply(
            send,
            reply,
            echo,
            self.max_body_size,
            None if ended else receive,
            frame=get is None and takes_frame(request.accept),  # a GET answers JSON
        )

    def _operation(self, parts: list[str]) -> Operation | None:
        """The operation a call's path names, if this backend serves one by that name."""
        registration = self.manager.lookup(parts[0])
        return None if registration is None else registration.operations.get(parts[2])

    async def _run_call(self, prepared: PreparedCall, receive: Receive) -> Result | Error | None:
        """Run a prepared call here, under its context and deadline.

        The call is cancelled when the client disconnects. Watching for that
        takes a task, which is started only if the impl yields to the
        scheduler: an impl that finishes without yielding cannot be cancelled
        anyway, and most calls are that quick. The watcher lives in the app's
        nursery (the lifespan's) and is told to stop, not awaited, when the
        call ends; an app served without the lifespan watches in a nursery of
        the request's own.

        Returns:
            The reply; None when the client left (nobody waits for it).
        """
        nursery = self._nursery
        if nursery is None:
            async with trio.open_nursery() as own:
                reply = await self._run_watched(prepared, receive, own)
                own.cancel_scope.cancel()
            return reply
        return await self._run_watched(prepared, receive, nursery)

    async def _run_watched(
        self, prepared: PreparedCall, receive: Receive, nursery: trio.Nursery
    ) -> Result | Error | None:
        watch = DisconnectWatch(receive)
        with trio.CancelScope() as call_scope:
            watch.call_scope = call_scope
            try:
                return await self._dispatcher.run_in(
                    prepared, call_scope, self._clean.run, nursery.start_soon, watch.run
                )
            finally:
                watch.scope.cancel()
        # Asked even when the client left: it writes the call's access line.
        reply = self._dispatcher.interrupted(prepared)
        return None if watch.disconnected else reply

    # -- GET routes ------------------------------------------------------------

    async def _get(
        self, send: Send, what: str, cors: list[tuple[bytes, bytes]], *, head: bool
    ) -> None:
        status = 200
        extra: list[tuple[bytes, bytes]] = []
        if what == "health":
            if self._shutting_down:
                status = 503
                extra.append((b"retry-after", b"1"))
                body: Any = {"status": "shutting-down"}
            else:
                body = {"status": "ok"}
        elif what == "openapi.json":
            body = openapi_document(self.manager, prefix=self.prefix)
        else:
            body = self.describe()
        data = dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [JSON, (b"cache-control", b"no-store"), *extra, *cors],
            }
        )
        await send({"type": "http.response.body", "body": b"" if head else data})

    def describe(self) -> dict[str, Any]:
        """What `GET {prefix}/` answers: the protocol, interfaces and IPC channels.

        An interface with stream operations lists them under `streams`:
        operation -> `server`, `client` or `two-way`.
        """
        interfaces: dict[str, Any] = {}
        for name, info in self.manager.describe().items():
            entry = info.to_json()
            registration = self.manager.lookup(name)
            if registration is not None and (streams := stream_kinds(registration.operations)):
                entry["streams"] = streams
            interfaces[name] = entry
        described: dict[str, Any] = {"protocol": PROTOCOL_VERSION, "interfaces": interfaces}
        if self.ipc is not None:
            described["ipc"] = {"channels": dict(self.ipc.channels)}
        return described

    # -- CORS ----------------------------------------------------------------

    def _cors_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        """The CORS headers for a page of `origin`, already allowed: none for its own pages."""
        return cors_headers(self.site, origin)

    # -- errors ----------------------------------------------------------------

    async def _send_error(
        self,
        send: Send,
        exc: TetherError,
        status: int | None,
        headers: list[tuple[bytes, bytes]],
        activity_id: str | None = None,
        drain: Receive | None = None,
    ) -> None:
        """Answer with an error; `drain`: the receive of a body not read to its end."""
        info = error_info(exc, activity_id or exc.activity_id, development_mode=False)
        if status is not None:
            info = ErrorInfo(
                STATUS_CODES.get(status, info.code),
                status,
                info.name,
                info.message,
                info.details,
                info.activity_id,
            )
        if drain is None:
            await send_error_info(send, info, headers, None)
            return
        await send_drained(send, drain, error_start(info, headers), error_body(info, None))
