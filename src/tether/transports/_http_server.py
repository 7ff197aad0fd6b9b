"""The HTTP transport's server: an ASGI app served by hypercorn's Trio worker.

Routes under `prefix` (DESIGN.md section 4):

* `POST {prefix}/{interface}/{version}/{operation}`: one RPC call; the body is
  the JSON array of its arguments, the headers carry its context;
* `GET {prefix}/`: what this backend serves; `GET {prefix}/health`: liveness;
  `GET {prefix}/openapi.json`: the OpenAPI 3.1 document of the interfaces;
* `POST {prefix}/ipc`: open an IPC session (hello -> welcome, session id and
  token); `POST {prefix}/ipc/{session}`: one message from the frontend;
  `GET {prefix}/ipc/{session}/events`: the backend's messages, as Server-Sent
  Events; `DELETE {prefix}/ipc/{session}`: the frontend leaves.

Each RPC request runs its impl in the request's own task, under the request's
context and deadline; a second task watches for the client's disconnect and
cancels the impl when it comes. IPC sessions run the same engine as every other
transport (`serve_ipc_session`) over a stream whose one direction is the POSTs
and whose other is the event stream; they live in a nursery that the ASGI
lifespan owns, so they end when the server does.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import math
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import trio

from .. import contexts
from ..runtime import (
    PROTOCOL_VERSION,
    BackendIpc,
    ConnectionClosed,
    Dispatcher,
    IncompatibleVersion,
    InvalidRequest,
    MessageStream,
    NotFound,
    PayloadTooLarge,
    RpcManager,
    TetherError,
    Unavailable,
    serve_ipc_session,
)
from ..runtime._codec import dumps, loads
from ..runtime._dispatch import (
    PreparedCall,
    encode_reply,
    error_info,
    too_large_reply,
)
from ..runtime._protocol import (
    Call,
    CallContext,
    Error,
    ErrorInfo,
    Result,
    decode,
    error_info_to_json,
)
from ._openapi import openapi_document
from ._websocket import AsgiWebSocketStream, Handshake, WebSocketSettings
from ._websocket import Endpoint as WsEndpoint
from ._websocket import Refusal as WsRefusal

__all__ = [
    "DEFAULT_IPC_GRACE_PERIOD",
    "DEFAULT_KEEP_ALIVE_TIMEOUT",
    "DEFAULT_MAX_BODY_SIZE",
    "STATUS_CODES",
    "HttpApp",
    "serve",
]

_log = logging.getLogger("tether.http")
#: Seconds a cancelled `serve` gives WebSocket connections to close properly.
_WS_CLOSE_GRACE = 1.0

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: Largest request body (and reply) by default, in bytes (16 MiB).
DEFAULT_MAX_BODY_SIZE = 16 * 1024 * 1024
#: Seconds an IPC session outlives its event stream, so a frontend can reconnect.
DEFAULT_IPC_GRACE_PERIOD = 5.0
#: Seconds `serve` keeps an idle connection open: longer than any client keeps
#: one (httpx: 5 s, tether: 4 s), so the server never closes a connection that
#: a client is about to reuse.
DEFAULT_KEEP_ALIVE_TIMEOUT = 75.0
#: Requests per connection before hypercorn asks the client to reconnect; its
#: default of 1,000 makes a long-lived client reconnect needlessly.
_KEEP_ALIVE_MAX_REQUESTS = 1_000_000
#: Seconds between comment lines on an idle event stream (keeps proxies from
#: cutting it, and shows a dead client).
_EVENTS_KEEPALIVE = 15.0
#: The largest X-Timeout-Ms honoured (JSON's largest safe integer, some 285,000
#: years); larger values are cut to it.
_MAX_TIMEOUT_MS = 2**53 - 1
#: Messages of a session's event stream kept for a reconnecting client.
_REPLAY = 1024
#: Seconds the backend may take to answer an IPC hello.
_HANDSHAKE_TIMEOUT = 10.0
#: Messages from the frontend a session buffers before its POSTs wait.
_INBOUND_BUFFER = 64

_JSON = (b"content-type", b"application/json")
#: The error code of each status tether answers with (DESIGN.md section 5).
STATUS_CODES = {
    400: "bad-request",
    401: "unauthorized",
    403: "incompatible-version",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    422: "application",
    429: "too-many-requests",
    503: "unavailable",
    504: "deadline-exceeded",
}
_CORS_HEADERS = (
    b"content-type, authorization, x-correlation-id, x-session-id, x-application-id, "
    b"x-application-version, x-protocol-version, x-timeout-ms, traceparent, x-session-token, "
    b"last-event-id"
)
_EXPOSED = b"x-correlation-id, retry-after, x-session-id, x-session-token"


class _ClientLeft(Exception):
    """The client disconnected before its request was read: nobody to answer."""


class _Refused(Exception):
    """A request the app answers with an error before any impl runs."""

    def __init__(
        self,
        error: TetherError,
        *,
        status: int | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.status = status
        self.headers = headers or []


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    value = _raw_header(headers, name)
    return None if value is None else value.decode("utf-8", "replace")


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
        cors_origins: Origins (`https://app.example`) whose browser pages may
            call this backend; none by default (no CORS headers at all).
        ipc_grace_period: Seconds an IPC session waits for its event stream,
            before the first one and after one closes, before it ends.
        websocket: How `{prefix}/ws` (RPC and IPC sessions over WebSocket)
            treats its clients: limits, keepalive, Origin allow-list,
            handshake authorization. Defaults when None.

    Raises:
        ValueError: `prefix` does not start with "/" or a limit is not positive.
    """

    def __init__(
        self,
        manager: RpcManager | None = None,
        *,
        ipc: BackendIpc | None = None,
        prefix: str = "/rpc",
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        max_in_flight: int = 1024,
        cors_origins: Iterable[str] = (),
        ipc_grace_period: float = DEFAULT_IPC_GRACE_PERIOD,
        websocket: WebSocketSettings | None = None,
    ) -> None:
        prefix = prefix.rstrip("/")
        if prefix and not prefix.startswith("/"):
            raise ValueError(f"prefix must start with '/', got {prefix!r}")
        if max_body_size < 1 or max_in_flight < 1:
            raise ValueError("max_body_size and max_in_flight must be at least 1")
        if ipc is not None and not isinstance(ipc, BackendIpc):
            raise TypeError(f"ipc must be a tether.BackendIpc, got {ipc!r}")
        self.manager = manager if manager is not None else RpcManager()
        self.ipc = ipc
        self.prefix = prefix
        self.max_body_size = max_body_size
        self.max_in_flight = max_in_flight
        self.cors_origins = frozenset(origin.rstrip("/") for origin in cors_origins)
        self.ipc_grace_period = ipc_grace_period
        self._dispatcher = Dispatcher(self.manager)
        self.websocket = websocket if websocket is not None else WebSocketSettings()
        # An app given no manager serves IPC only on WebSocket too: an RPC
        # hello there is refused, not welcomed to an empty backend.
        ws_manager = self.manager if manager is not None or ipc is None else None
        self._ws = WsEndpoint(ws_manager, ipc, self.websocket)
        self._in_flight = 0
        self._sessions: dict[str, _HttpIpcSession] = {}
        self._nursery: trio.Nursery | None = None
        self._shutting_down = False
        # Watcher tasks are spawned from this empty context, not the request's.
        self._clean = contextvars.Context()

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
        client = scope.get("client")
        remote = f"{client[0]}:{client[1]}" if client else None
        refusal: WsRefusal | None
        if path != f"{self.prefix}/ws":
            refusal = WsRefusal(
                404, NotFound(f"no WebSocket endpoint at {path}: it is {self.prefix}/ws")
            )
        else:
            handshake = Handshake.from_raw(path, scope["headers"], remote)
            refusal = await self._ws.check(handshake)
        if refusal is not None:
            _log.info(
                "refused a WebSocket handshake from %s: %s %s",
                remote,
                refusal.status,
                refusal.error.message,
            )
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
        await send({"type": "websocket.accept"})
        stream = AsgiWebSocketStream(receive, send, self.websocket.max_message_size, self._ws)
        try:
            await self._ws.run(stream)
        finally:
            await stream.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":  # pragma: no cover - ASGI says it is
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
                    self._ws = WsEndpoint(self._ws.manager, self._ws.ipc, self.websocket)
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
                self.begin_shutdown()
                # Sessions were told to close; give them a moment to say so.
                nursery.cancel_scope.deadline = trio.current_time() + 1.0
        finally:
            self._nursery = None
        await send({"type": "lifespan.shutdown.complete"})

    def begin_shutdown(self) -> None:
        """Stop taking new work: health answers 503, IPC sessions close.

        `serve` calls it when its shutdown trigger fires; the ASGI lifespan
        calls it at shutdown. RPC requests already running go on.
        """
        self._shutting_down = True
        # WebSocket sessions close with 1001 "the server is shutting down".
        self._ws.begin_shutdown()
        for session in list(self._sessions.values()):
            session.stream.close_from_backend("the server is shutting down")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        cors = self._cors_headers(headers)
        prefix = self.prefix
        if path != prefix and not path.startswith(prefix + "/"):
            await self._send_error(send, NotFound(f"nothing is served at {path}"), None, cors)
            return
        parts = path[len(prefix) + 1 :].split("/") if path != prefix else [""]
        try:
            if method == "OPTIONS":
                await self._preflight(send, headers, cors)
            elif len(parts) == 3 and parts[0] != "ipc":
                if method != "POST":
                    raise _not_allowed(method, "POST")
                await self._rpc(receive, send, headers, parts, cors)
            elif parts[0] == "ipc":
                await self._ipc_route(receive, send, headers, method, parts, scope, cors)
            elif len(parts) == 1 and parts[0] in ("", "health", "openapi.json"):
                if method not in ("GET", "HEAD"):
                    raise _not_allowed(method, "GET")
                await self._get(send, parts[0], cors, head=method == "HEAD")
            else:
                raise _Refused(
                    NotFound(
                        f"nothing is served at {path}: RPC calls are POST "
                        f"{prefix}/<interface>/<version>/<operation>"
                    )
                )
        except _ClientLeft:
            return
        except TetherError as exc:
            # From reading an IPC route's body (413): _rpc answers its own.
            await self._send_error(send, exc, None, cors)
        except _Refused as refused:
            await self._send_error(send, refused.error, refused.status, [*cors, *refused.headers])

    # -- RPC -------------------------------------------------------------------

    async def _rpc(
        self,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        parts: list[str],
        cors: list[tuple[bytes, bytes]],
    ) -> None:
        activity_id = session_id = application_id = application_version = None
        authorization = timeout = protocol = traceparent = None
        content_length = None
        for key, raw in headers:
            # One pass over the headers, and a decode only for those we use.
            if key == b"x-correlation-id":
                activity_id = raw.decode("utf-8", "replace")
            elif key == b"content-length":
                content_length = raw
            elif key == b"x-session-id":
                session_id = raw.decode("utf-8", "replace")
            elif key == b"x-application-id":
                application_id = raw.decode("utf-8", "replace")
            elif key == b"x-application-version":
                application_version = raw.decode("utf-8", "replace")
            elif key == b"authorization":
                authorization = raw.decode("utf-8", "replace")
            elif key == b"x-timeout-ms":
                timeout = raw
            elif key == b"x-protocol-version":
                protocol = raw
            elif key == b"traceparent":
                traceparent = raw.decode("utf-8", "replace")
        if not activity_id:
            if traceparent is not None:
                activity_id = contexts.activity_id_from_traceparent(traceparent)
            if not activity_id:
                activity_id = contexts.new_activity_id()
        elif len(activity_id) > 200:
            activity_id = contexts.new_activity_id()
            exc: TetherError = InvalidRequest(
                "X-Correlation-ID is longer than 200 characters",
                details={"field": "X-Correlation-ID"},
            )
            await self._send_error(send, exc, None, cors, activity_id)
            return
        echo = [*cors, (b"x-correlation-id", activity_id.encode())]
        try:
            if protocol is not None and protocol.strip() != b"%d" % PROTOCOL_VERSION:
                raise IncompatibleVersion(
                    f"this backend speaks tether protocol {PROTOCOL_VERSION}, the request says "
                    f"X-Protocol-Version: {protocol.decode('latin-1')}: upgrade the older side"
                )
            timeout_ms = None
            if timeout is not None:
                try:
                    timeout_ms = int(timeout)
                except ValueError:
                    timeout_ms = -1
                if timeout_ms < 0:
                    raise InvalidRequest(
                        f"X-Timeout-Ms must be a whole number of milliseconds >= 0, got "
                        f"{timeout.decode('latin-1')!r}",
                        details={"field": "X-Timeout-Ms"},
                    )
                # Beyond any real deadline, and too large to become a float.
                timeout_ms = min(timeout_ms, _MAX_TIMEOUT_MS)
            body = await self._read_body(receive, content_length)
            args = loads(body)
            if not isinstance(args, list):
                raise InvalidRequest(
                    f"the body must be a JSON array of the operation's arguments, got "
                    f"{type(args).__name__}",
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
                    activity_id, session_id, application_id, application_version, authorization
                ),
                timeout_ms,
            )
            prepared = self._dispatcher.prepare(call)
        except TetherError as exc:
            await self._send_error(send, exc, None, echo, activity_id)
            return
        self._in_flight += 1
        try:
            reply = await self._run_call(prepared, receive)
        finally:
            self._in_flight -= 1
        if reply is None:
            return  # the client left: nobody to answer
        data = encode_reply(reply)
        if len(data) > self.max_body_size:
            data = too_large_reply(None, len(data), self.max_body_size)
            reply = Error(None, ErrorInfo("payload-too-large", 413, "PayloadTooLarge", ""))
        if type(reply) is Error:
            info = reply.error
            await self._send_error_info(send, info, echo, data)
            return
        # The encoded reply is {"t":"result","id":0,"value":...}: the body is
        # the value alone, cut out of it without a second encode.
        value = data[data.index(b'"value":') + 8 : -1]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [_JSON, *echo],
            }
        )
        await send({"type": "http.response.body", "body": value})

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
        watch = _DisconnectWatch(receive)
        with trio.CancelScope() as call_scope:
            watch.call_scope = call_scope
            try:
                return await self._dispatcher.run_in(
                    prepared, call_scope, self._clean.run, nursery.start_soon, watch.run
                )
            finally:
                watch.scope.cancel()
        if watch.disconnected:
            return None
        return self._dispatcher.interrupted(prepared)

    async def _read_body(self, receive: Receive, content_length: bytes | None) -> bytes:
        limit = self.max_body_size
        if content_length is not None:
            try:
                length = int(content_length)
            except ValueError:
                length = 0
            if length > limit:
                raise PayloadTooLarge(
                    f"the request body is {length} bytes, over this backend's limit of {limit}: "
                    "send less per call"
                )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientLeft
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(
                        f"the request body is over this backend's limit of {limit} bytes: "
                        "send less per call"
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

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
                "headers": [_JSON, (b"cache-control", b"no-store"), *extra, *cors],
            }
        )
        await send({"type": "http.response.body", "body": b"" if head else data})

    def describe(self) -> dict[str, Any]:
        """What `GET {prefix}/` answers: the protocol, interfaces and IPC channels."""
        interfaces = {
            name: {"version": info.version, "operations": list(info.operations)}
            for name, info in self.manager.describe().items()
        }
        described: dict[str, Any] = {"protocol": PROTOCOL_VERSION, "interfaces": interfaces}
        if self.ipc is not None:
            described["ipc"] = {"channels": dict(self.ipc.channels)}
        return described

    # -- CORS ------------------------------------------------------------------

    def _cors_headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        if not self.cors_origins:
            return []
        origin = _header(headers, b"origin")
        if origin is None or origin.rstrip("/") not in self.cors_origins:
            return []
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-expose-headers", _EXPOSED),
            (b"vary", b"origin"),
        ]

    async def _preflight(
        self, send: Send, headers: list[tuple[bytes, bytes]], cors: list[tuple[bytes, bytes]]
    ) -> None:
        if not cors:
            if self.cors_origins and _header(headers, b"origin") is not None:
                raise _Refused(InvalidRequest("this origin may not call this backend"), status=403)
            raise _not_allowed("OPTIONS", "GET, POST, DELETE")
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    *cors,
                    (b"access-control-allow-methods", b"GET, POST, DELETE"),
                    (b"access-control-allow-headers", _CORS_HEADERS),
                    (b"access-control-max-age", b"600"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    # -- errors ----------------------------------------------------------------

    async def _send_error(
        self,
        send: Send,
        exc: TetherError,
        status: int | None,
        headers: list[tuple[bytes, bytes]],
        activity_id: str | None = None,
    ) -> None:
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
        await self._send_error_info(send, info, headers, None)

    async def _send_error_info(
        self,
        send: Send,
        info: ErrorInfo,
        headers: list[tuple[bytes, bytes]],
        encoded: bytes | None,
    ) -> None:
        extra = list(headers)
        retry = info.details.get("retry_after")
        if info.status in (429, 503):
            seconds = math.ceil(retry) if isinstance(retry, (int, float)) else 1
            extra.append((b"retry-after", str(max(seconds, 0)).encode()))
        elif info.status == 401:
            extra.append((b"www-authenticate", b"Bearer"))
        body = _error_body(info, encoded)
        await send(
            {"type": "http.response.start", "status": info.status, "headers": [_JSON, *extra]}
        )
        await send({"type": "http.response.body", "body": body})

    # -- IPC -------------------------------------------------------------------

    async def _ipc_route(
        self,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        method: str,
        parts: list[str],
        scope: Scope,
        cors: list[tuple[bytes, bytes]],
    ) -> None:
        if self.ipc is None:
            raise _Refused(NotFound("this backend serves no IPC"))
        if len(parts) == 1:
            if method != "POST":
                raise _not_allowed(method, "POST")
            await self._ipc_open(receive, send, headers, cors)
            return
        session = self._authorized_session(parts[1], headers, scope)
        if len(parts) == 2:
            if method == "POST":
                body = await self._read_body(receive, _raw_header(headers, b"content-length"))
                await session.stream.from_frontend(body)
                await _send_empty(send, 202, cors)
            elif method == "DELETE":
                session.stream.close_from_frontend("the frontend left")
                await _send_empty(send, 204, cors)
            else:
                raise _not_allowed(method, "POST, DELETE")
        elif len(parts) == 3 and parts[2] == "events":
            if method != "GET":
                raise _not_allowed(method, "GET")
            last = _header(headers, b"last-event-id")
            await session.stream.stream_events(receive, send, last, cors)
        else:
            raise _Refused(NotFound(f"nothing is served at {scope['path']}"))

    def _authorized_session(
        self, session_id: str, headers: list[tuple[bytes, bytes]], scope: Scope
    ) -> _HttpIpcSession:
        token = _header(headers, b"x-session-token")
        if token is None:
            for pair in scope.get("query_string", b"").decode("latin-1").split("&"):
                key, _, value = pair.partition("=")
                if key == "token":
                    token = value
        session = self._sessions.get(session_id)
        # One answer for an unknown session and a wrong token, compared in
        # constant time: a request learns nothing about other sessions.
        expected = session.token if session is not None else "-" * 43
        if not hmac.compare_digest((token or "").encode(), expected.encode()) or session is None:
            raise _Refused(NotFound("no IPC session with that id and token"))
        return session

    async def _ipc_open(
        self,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        cors: list[tuple[bytes, bytes]],
    ) -> None:
        ipc = self.ipc
        assert ipc is not None
        nursery = self._nursery
        if self._shutting_down:
            raise _Refused(
                Unavailable("this backend is shutting down: retry shortly", retry_after=1)
            )
        if nursery is None:
            raise _Refused(
                Unavailable(
                    "IPC sessions need the ASGI lifespan protocol: serve this app with "
                    "tether.transports.http.serve() or hypercorn's trio worker",
                    retry_after=1,
                )
            )
        hello = await self._read_body(receive, _raw_header(headers, b"content-length"))
        stream = _ServerStream(self.max_body_size, self.ipc_grace_period)
        stream.inbound.append(hello)
        token = secrets.token_urlsafe(32)
        started = trio.Event()
        first: list[bytes] = []

        async def run_session() -> None:
            session_id: str | None = None
            try:
                with stream.scope:
                    async with trio.open_nursery() as inner:
                        inner.start_soon(stream.expire_without_events)
                        await serve_ipc_session(ipc, stream)
                        inner.cancel_scope.cancel()
            except Exception:
                # One session's failure must not end the lifespan's nursery,
                # and with it every other session.
                _log.exception("IPC session over HTTP failed")
                stream.close_from_backend("the backend failed")
            finally:
                stream.ended = True
                session_id = stream.session_id
                if session_id is not None:
                    self._sessions.pop(session_id, None)
                if not started.is_set():
                    started.set()

        def on_first(data: bytes) -> None:
            first.append(data)
            started.set()

        stream.on_first = on_first
        nursery.start_soon(run_session)
        with trio.move_on_after(_HANDSHAKE_TIMEOUT):
            await started.wait()
        if not started.is_set():
            # The backend did not answer the hello (a hung hook): give up on it.
            stream.close_from_frontend("the handshake timed out")
            stream.scope.cancel()
            raise _Refused(
                Unavailable("the backend did not open the session in time", retry_after=1)
            )
        if not first:
            raise _Refused(Unavailable("the IPC session ended before it opened", retry_after=1))
        # The engine's own first message: `welcome`, or the `error` refusing it.
        message = decode(first[0])
        if isinstance(message, Error):
            await self._send_error_info(send, message.error, cors, first[0])
            return
        reply = loads(first[0])
        session_id = str(reply.get("session_id"))
        if stream.ended:
            raise _Refused(Unavailable("the IPC session ended before it opened", retry_after=1))
        stream.session_id = session_id
        self._sessions[session_id] = _HttpIpcSession(session_id, token, stream)
        body = dumps(
            {
                "session_id": session_id,
                "token": token,
                "events": f"{self.prefix}/ipc/{session_id}/events",
                "welcome": reply,
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    _JSON,
                    (b"x-session-id", session_id.encode()),
                    (b"x-session-token", token.encode()),
                    *cors,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _HttpIpcSession:
    __slots__ = ("session_id", "stream", "token")

    def __init__(self, session_id: str, token: str, stream: _ServerStream) -> None:
        self.session_id = session_id
        self.token = token
        self.stream = stream


class _ServerStream(MessageStream):
    """The backend's end of an IPC session over HTTP.

    Messages from the frontend arrive as POSTs (`from_frontend`); messages to
    the frontend wait in `outbound` until the event stream takes them. Each
    sent message gets a sequence number and stays in a short replay buffer, so
    a client that reconnects with `Last-Event-ID` misses nothing.
    """

    def __init__(self, max_message_size: int, grace: float) -> None:
        self.max_message_size = max_message_size
        self.grace = grace
        self.inbound: deque[bytes] = deque()
        self.inbound_lot = trio.lowlevel.ParkingLot()
        self.room_lot = trio.lowlevel.ParkingLot()
        self.ended = False
        self.scope = trio.CancelScope()
        self.outbound: deque[tuple[int, bytes]] = deque()
        self.outbound_lot = trio.lowlevel.ParkingLot()
        self.replay: deque[tuple[int, bytes]] = deque(maxlen=_REPLAY)
        self.sequence = 0
        self.closed_reason: str | None = None
        self.frontend_left = False
        self.events_open = False
        self.events_changed = trio.lowlevel.ParkingLot()
        self.sent_upto = 0
        self.session_id: str | None = None
        self.on_first: Callable[[bytes], object] | None = None

    # -- MessageStream (the backend's side) ------------------------------------

    async def send_message(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.closed_reason is not None:
            raise self._closed()
        on_first = self.on_first
        if on_first is not None:
            # The handshake's answer goes in the POST {prefix}/ipc response. It
            # is not held to the message limit: a refusal must reach the client
            # even when the limit is smaller than its message.
            self.on_first = None
            on_first(data)
            return
        if len(data) > self.max_message_size:
            raise PayloadTooLarge(
                f"message of {len(data)} bytes is over the session's limit of "
                f"{self.max_message_size}"
            )
        while len(self.outbound) >= _REPLAY:
            # The event stream is not keeping up: wait, as any stream does.
            await self.outbound_lot.park()
            if self.closed_reason is not None:
                raise self._closed()
        self.sequence += 1
        self.outbound.append((self.sequence, data))
        self.outbound_lot.unpark_all()

    async def receive_message(self) -> bytes:
        while not self.inbound:
            if self.closed_reason is not None:
                raise self._closed()
            await self.inbound_lot.park()
        await trio.lowlevel.checkpoint()
        data = self.inbound.popleft()
        # A POST may be waiting for room.
        self.room_lot.unpark()
        return data

    async def aclose(self, reason: str | None = None) -> None:
        self.close_from_backend(reason or "closed")
        await trio.lowlevel.checkpoint()

    def _closed(self) -> ConnectionClosed:
        reason = self.closed_reason or "closed"
        return ConnectionClosed(f"IPC session over HTTP closed: {reason}", reason=reason)

    # -- the HTTP side ---------------------------------------------------------

    def close_from_backend(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
        self._wake()

    def close_from_frontend(self, reason: str) -> None:
        self.frontend_left = True
        self.close_from_backend(reason)

    def _wake(self) -> None:
        self.inbound_lot.unpark_all()
        self.room_lot.unpark_all()
        self.outbound_lot.unpark_all()
        self.events_changed.unpark_all()

    async def from_frontend(self, data: bytes) -> None:
        if self.closed_reason is not None:
            raise _Refused(NotFound("no IPC session with that id and token"))
        while len(self.inbound) >= _INBOUND_BUFFER:
            await self.room_lot.park()
            if self.closed_reason is not None:
                raise _Refused(NotFound("no IPC session with that id and token"))
        self.inbound.append(data)
        self.inbound_lot.unpark_all()

    async def expire_without_events(self) -> None:
        """End the session when no event stream is open for `grace` seconds."""
        while True:
            if not self.events_open:
                with trio.move_on_after(self.grace):
                    while not self.events_open:
                        await self.events_changed.park()
                if not self.events_open:
                    self.close_from_frontend("the frontend's event stream did not come back")
                    return
            await self.events_changed.park()

    async def stream_events(
        self,
        receive: Receive,
        send: Send,
        last_event_id: str | None,
        cors: list[tuple[bytes, bytes]],
    ) -> None:
        if self.events_open:
            raise _Refused(
                InvalidRequest("this session's event stream is already open"), status=409
            )
        replay: list[tuple[int, bytes]] = []
        if last_event_id is not None:
            try:
                seen = int(last_event_id)
            except ValueError:
                raise _Refused(InvalidRequest("Last-Event-ID must be an event id")) from None
            replay = [item for item in self.replay if item[0] > seen]
            if seen < self.sent_upto and (not replay or replay[0][0] != seen + 1):
                # Sent on the stream that broke and no longer kept: the
                # frontend would miss them, so the session cannot go on.
                self.close_from_backend("events were lost while the frontend was away")
        self.events_open = True
        self.events_changed.unpark_all()
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream"),
                        (b"cache-control", b"no-store"),
                        (b"x-accel-buffering", b"no"),
                        *cors,
                    ],
                }
            )
            # A comment first, so that clients see the stream open at once
            # (curl and some proxies hold the head until body bytes come).
            opening = b"".join([b": open\n\n", *(_event(*item) for item in replay)])
            await send({"type": "http.response.body", "body": opening, "more_body": True})
            async with trio.open_nursery() as nursery:
                watch = _DisconnectWatch(receive)
                watch.call_scope = nursery.cancel_scope
                nursery.start_soon(watch.run)
                await self._pump(send)
                nursery.cancel_scope.cancel()
        finally:
            self.events_open = False
            self.events_changed.unpark_all()

    async def _pump(self, send: Send) -> None:
        outbound = self.outbound
        while True:
            if outbound:
                batch: list[bytes] = []
                while outbound:
                    sequence, data = outbound.popleft()
                    self.replay.append((sequence, data))
                    self.sent_upto = sequence
                    batch.append(_event(sequence, data))
                self.outbound_lot.unpark_all()
                await send(
                    {"type": "http.response.body", "body": b"".join(batch), "more_body": True}
                )
                continue
            if self.closed_reason is not None:
                close = dumps({"reason": self.closed_reason})
                await send(
                    {"type": "http.response.body", "body": b"event: close\ndata: %s\n\n" % close}
                )
                return
            with trio.move_on_after(_EVENTS_KEEPALIVE) as idle:
                await self.outbound_lot.park()
            if idle.cancelled_caught:
                await send(
                    {"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True}
                )


def _event(sequence: int, data: bytes) -> bytes:
    """One Server-Sent Event carrying one encoded message (orjson never writes a newline)."""
    return b"id: %d\ndata: %s\n\n" % (sequence, data)


class _DisconnectWatch:
    """Cancels a call when its client disconnects; stops when told to."""

    __slots__ = ("call_scope", "disconnected", "receive", "scope")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.scope = trio.CancelScope()
        self.call_scope: trio.CancelScope | None = None
        self.disconnected = False

    async def run(self) -> None:
        with self.scope:
            try:
                while (await self.receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # the server tore the request down: nothing to watch
                return
            self.disconnected = True
            if self.call_scope is not None:
                self.call_scope.cancel()


async def _send_empty(send: Send, status: int, cors: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": list(cors)})
    await send({"type": "http.response.body", "body": b""})


def _raw_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _not_allowed(method: str, allow: str) -> _Refused:
    error = InvalidRequest(
        f"{method} is not allowed here; use {allow}", details={"allow": allow, "method": method}
    )
    return _Refused(error, status=405, headers=[(b"allow", allow.encode())])


def _error_body(info: ErrorInfo, encoded: bytes | None) -> bytes:
    if encoded is not None:
        # An encoded `error` message: {"t":"error","id":..,"error":{...}}.
        start = encoded.find(b'"error":')
        if start >= 0:
            return b'{"error":' + encoded[start + 8 :]
    return dumps({"error": error_info_to_json(info)})


async def serve(
    manager: RpcManager | None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ipc: BackendIpc | None = None,
    prefix: str = "/rpc",
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    max_in_flight: int = 1024,
    cors_origins: Iterable[str] = (),
    ipc_grace_period: float = DEFAULT_IPC_GRACE_PERIOD,
    websocket: WebSocketSettings | None = None,
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT,
    graceful_timeout: float = 5.0,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `manager` (and `ipc`) over HTTP with hypercorn's Trio worker.

    Runs until cancelled, or until `shutdown_trigger` returns: then it stops
    accepting, closes IPC sessions ("the server is shutting down"), and lets
    requests in flight finish for up to `graceful_timeout` seconds.

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
        cors_origins: Origins allowed to call from a browser; none by default.
        ipc_grace_period: Seconds an IPC session outlives its event stream.
        websocket: The settings of `{prefix}/ws`, the WebSocket endpoint on
            the same port (`ws://127.0.0.1:<port>{prefix}/ws`).
        keep_alive_timeout: Seconds an idle connection stays open; keep it
            longer than your clients keep idle connections.
        graceful_timeout: Seconds in-flight requests get at shutdown.
        shutdown_trigger: Awaited in the background; when it returns, the
            server shuts down gracefully.
        task_status: `nursery.start` gets the URL to connect to:
            `http://127.0.0.1:<port>{prefix}`.
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    app = HttpApp(
        manager,
        ipc=ipc,
        prefix=prefix,
        max_body_size=max_body_size,
        max_in_flight=max_in_flight,
        cors_origins=cors_origins,
        ipc_grace_period=ipc_grace_period,
        websocket=websocket,
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

    class _Started:
        def started(self, binds: list[str] | None = None) -> None:
            assert binds
            task_status.started(f"{binds[0]}{app.prefix}")

    async def trigger() -> None:
        if shutdown_trigger is None:
            await trio.sleep_forever()
        else:
            await shutdown_trigger()
        app.begin_shutdown()

    # hypercorn runs shielded from our cancellation: being cancelled first
    # tells the WebSocket and IPC clients why (1001, "the server is shutting
    # down") and gives their connections a moment to close; then it stops.
    hypercorn_scope = trio.CancelScope(shield=True)
    ended = trio.Event()

    async def run_hypercorn() -> None:
        try:
            with hypercorn_scope:
                await hypercorn_serve(
                    app,  # type: ignore[arg-type]  # hypercorn's TypedDict events vs mappings
                    config,
                    shutdown_trigger=trigger,
                    task_status=_Started(),
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
