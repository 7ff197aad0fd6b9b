"""The HTTP transport's frontend: RPC calls as POSTs, IPC sessions as POSTs plus SSE.

Requests go through a small pool of keep-alive HTTP/1.1 connections
(`_h11pool`), chosen over httpx by measurement (docs/performance.md). Every
failure of the connection surfaces as a tether `TransportError`.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from .. import contexts
from ..runtime import (
    DEFAULT_MAX_PENDING_NOTIFICATIONS,
    DEFAULT_SLOW_FRONTEND_TIMEOUT,
    PROTOCOL_VERSION,
    ClientOptions,
    ConnectError,
    ConnectionClosed,
    FrontendIpc,
    IncompatibleVersion,
    InvalidRequest,
    IpcInterface,
    MessageStream,
    PayloadTooLarge,
    RpcBackend,
    RpcInterface,
    TetherError,
    open_ipc_connection,
)
from ..runtime._client import check_backend_interfaces
from ..runtime._codec import dumps, loads
from ..runtime._protocol import Call, Error, ErrorInfo, InterfaceInfo, Result, encode
from ._h11pool import ConnectionPool, Response, StreamingResponse
from ._http_server import DEFAULT_MAX_BODY_SIZE, STATUS_CODES

__all__ = ["HttpBackend", "connect", "connect_ipc"]

_log = logging.getLogger("tether.client")

_PROTOCOL = (b"x-protocol-version", b"%d" % PROTOCOL_VERSION)
_JSON = (b"content-type", b"application/json")
#: Seconds a leaving IPC frontend spends telling the backend so.
_GOODBYE_TIMEOUT = 1.0


def _split_url(url: str) -> tuple[str, int, str]:
    """Host, port and path prefix of a backend URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(
            f"tether's HTTP transport speaks http:// URLs, got {url!r}: for TLS, put a "
            "terminating proxy in front of the backend"
        )
    if not parts.hostname:
        raise ValueError(f"the URL {url!r} names no host")
    return parts.hostname, parts.port or 80, parts.path.rstrip("/")


def _header_value(name: str, value: str) -> bytes:
    if "\r" in value or "\n" in value or "\0" in value:
        raise InvalidRequest(f"{name} cannot carry line breaks or NUL characters: {value!r}")
    return value.encode()


def error_info_from_response(response: Response, activity_id: str | None) -> ErrorInfo:
    """The error a non-200 response stands for, even when it is not tether's own body."""
    try:
        raw = loads(response.body)["error"]
        details = raw.get("details") or {}
        return ErrorInfo(
            str(raw["code"]),
            int(raw.get("status", response.status)),
            str(raw.get("name") or ""),
            str(raw.get("message") or ""),
            details if isinstance(details, dict) else {},
            raw.get("activity_id") or activity_id,
        )
    except (TetherError, KeyError, TypeError, ValueError, AttributeError):
        # Not tether's error body (a proxy's page, say): say what came.
        text = response.body[:200].decode("utf-8", "replace")
        code = STATUS_CODES.get(
            response.status, "internal" if response.status >= 500 else "bad-request"
        )
        facts: dict[str, Any] = {"http_status": response.status}
        retry = response.header(b"retry-after")
        if retry is not None and retry.isdigit():
            facts["retry_after"] = int(retry)
        return ErrorInfo(
            code,
            response.status,
            "HTTPError",
            f"the server answered HTTP {response.status}: {text}",
            facts,
            activity_id,
        )


class HttpBackend(RpcBackend):
    """An HTTP backend's RPC endpoints, as the frontend calls them.

    Made by `connect`; each call is one `POST {prefix}/{interface}/{version}/
    {operation}` on a pooled keep-alive connection. Cancelling a call closes
    its connection, which the server sees as a disconnect and cancels the impl.
    """

    __slots__ = (
        "_closed",
        "_interfaces",
        "_options",
        "_pool",
        "_prefix",
        "_targets",
        "max_message_size",
        "url",
    )

    def __init__(
        self,
        pool: ConnectionPool,
        url: str,
        prefix: str,
        options: ClientOptions,
        max_message_size: int,
    ) -> None:
        self._pool = pool
        self.url = url
        self._prefix = prefix
        self._options = options
        self.max_message_size = max_message_size
        self._interfaces: dict[str, InterfaceInfo] = {}
        self._targets: dict[tuple[str, str, str], bytes] = {}
        self._closed = False

    @property
    def options(self) -> ClientOptions:
        return self._options

    @property
    def interfaces(self) -> Mapping[str, InterfaceInfo]:
        return self._interfaces

    async def describe(self) -> dict[str, Any]:
        """Ask the backend what it serves (`GET {prefix}/`).

        Raises:
            ConnectError: the backend cannot be reached or did not answer as a
                tether backend.
            IncompatibleVersion: it speaks another protocol version.
        """
        try:
            response = await self._pool.request(b"GET", (self._prefix + "/").encode(), [])
        except ConnectionClosed as exc:
            raise ConnectError(
                f"{self.url} closed the connection while describing: {exc}"
            ) from None
        if response.status != 200:
            raise ConnectError(
                f"{self.url} answered HTTP {response.status} to describe: is it a tether backend, "
                "and is the prefix right?"
            )
        try:
            described = loads(response.body)
            interfaces = {
                name: InterfaceInfo(str(entry["version"]), tuple(entry["operations"]))
                for name, entry in described["interfaces"].items()
            }
            protocol = described["protocol"]
        except (TetherError, KeyError, TypeError, AttributeError):
            raise ConnectError(f"{self.url} did not describe itself as a tether backend") from None
        if protocol != PROTOCOL_VERSION:
            raise IncompatibleVersion(
                f"backend speaks tether protocol {protocol}, this frontend speaks "
                f"{PROTOCOL_VERSION}: upgrade the older side"
            )
        self._interfaces = interfaces
        return dict(described)

    def _target(self, iface: str, ver: str, op: str) -> bytes:
        key = (iface, ver, op)
        target = self._targets.get(key)
        if target is None:
            path = "/".join(urllib.parse.quote(part, safe="") for part in key)
            target = f"{self._prefix}/{path}".encode()
            if len(self._targets) < 4096:
                self._targets[key] = target
        return target

    async def request(self, call: Call) -> Result | Error:
        if self._closed:
            raise ConnectionClosed(f"the HTTP connection to {self.url} is closed", reason="closed")
        body = dumps(call.args)
        if len(body) > self.max_message_size:
            raise PayloadTooLarge(
                f"the call encodes to {len(body)} bytes, over this connection's limit of "
                f"{self.max_message_size}: send less per call"
            )
        ctx = call.ctx
        activity_id = ctx.activity_id or contexts.new_activity_id()
        headers = [
            _JSON,
            _PROTOCOL,
            (b"x-correlation-id", _header_value("the ActivityId", activity_id)),
            (b"traceparent", contexts.traceparent_for(activity_id).encode()),
        ]
        if ctx.session_id is not None:
            headers.append((b"x-session-id", _header_value("session_id", ctx.session_id)))
        if ctx.application_id is not None:
            headers.append(
                (b"x-application-id", _header_value("application_id", ctx.application_id))
            )
        if ctx.application_version is not None:
            headers.append(
                (
                    b"x-application-version",
                    _header_value("application_version", ctx.application_version),
                )
            )
        if ctx.authorization is not None:
            headers.append((b"authorization", _header_value("authorization", ctx.authorization)))
        if call.timeout_ms is not None:
            headers.append((b"x-timeout-ms", b"%d" % call.timeout_ms))
        response = await self._pool.request(
            b"POST", self._target(call.iface, call.ver, call.op), headers, body
        )
        if response.status == 200:
            return Result(call.id, loads(response.body))
        return Error(call.id, error_info_from_response(response, activity_id))

    async def aclose(self) -> None:
        """Close every connection; calls still running fail with ConnectionClosed."""
        self._closed = True
        await self._pool.aclose()


@asynccontextmanager
async def connect(
    url: str,
    *,
    interfaces: Iterable[type[RpcInterface]],
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
    session_id: str | None = None,
    max_message_size: int = DEFAULT_MAX_BODY_SIZE,
    max_connections: int = 100,
) -> AsyncIterator[HttpBackend]:
    """Connect to an HTTP backend for the block.

    Describes the backend's endpoints on entry and checks every interface in
    `interfaces` against them; leaving the block closes the connections (calls
    still running fail with `ConnectionClosed`, and the server cancels them).

    Example::

        url = "http://127.0.0.1:8000/rpc"
        async with http.connect(url, interfaces=[RobotWorldRead]) as backend:
            robots = backend.get_client(RobotWorldRead)
            await robots.count_robots(IModelProps("m1"))

    Args:
        url: The backend's URL, prefix included (what `serve` reports).
        interfaces: The interfaces this frontend will call.
        application_id: Sent with every call (unless the current context has one).
        application_version: Likewise.
        authorization: The `Authorization` header every call carries; when None,
            the current context's authorization is forwarded.
        session_id: The session the calls belong to; a fresh one by default.
        max_message_size: Largest request body and reply accepted, in bytes.
        max_connections: Keep-alive connections kept to the backend at most.

    Raises:
        ConnectError: the backend cannot be reached, or is not a tether backend.
        IncompatibleVersion: an interface's version is incompatible.
        NotFound: the backend does not serve one of `interfaces`.
        ValueError: `url` is not an http:// URL.
    """
    host, port, prefix = _split_url(url)
    wanted = list(interfaces)
    options = ClientOptions(
        application_id=application_id,
        application_version=application_version,
        authorization=authorization,
        session_id=session_id,
    )
    pool = ConnectionPool(
        host, port, max_connections=max_connections, max_response_size=max_message_size
    )
    backend = HttpBackend(pool, url, prefix, options, max_message_size)
    try:
        await backend.describe()
        check_backend_interfaces(backend.interfaces, wanted)
        yield backend
    finally:
        with trio.CancelScope(shield=True):
            await backend.aclose()


# ---------------------------------------------------------------------------
# IPC


class _ClientStream(MessageStream):
    """The frontend's end of an IPC session over HTTP.

    The first message (`hello`) opens the session with `POST {prefix}/ipc`,
    whose answer is the first message received (`welcome`, or the refusal).
    Later messages are POSTs on the session; messages from the backend come
    from the session's event stream, opened after the handshake.
    """

    def __init__(self, pool: ConnectionPool, url: str, prefix: str, max_message_size: int) -> None:
        self.max_message_size = max_message_size
        self._pool = pool
        self._url = url
        self._prefix = prefix
        self._session: str | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._target = b""
        self._received: deque[bytes] = deque()
        self._events: StreamingResponse | None = None
        self._exit = AsyncExitStack()
        self._buffer = b""
        self._reason: str | None = None
        self._told_backend = False
        self._receive_scope: trio.CancelScope | None = None

    def _closed(self) -> ConnectionClosed:
        reason = self._reason or "closed"
        return ConnectionClosed(f"IPC session with {self._url} closed: {reason}", reason=reason)

    async def send_message(self, data: bytes) -> None:
        if self._reason is not None:
            raise self._closed()
        if len(data) > self.max_message_size:
            raise PayloadTooLarge(
                f"message of {len(data)} bytes is over the session's limit of "
                f"{self.max_message_size}"
            )
        if self._session is None:
            await self._open(data)
            return
        response = await self._pool.request(b"POST", self._target, self._headers, data)
        if response.status == 202:
            return
        if response.status == 413:
            raise PayloadTooLarge(error_info_from_response(response, None).message)
        # 404: the session ended (its reason comes on the event stream).
        self._reason = self._reason or "the backend ended the session"
        raise self._closed()

    async def _open(self, hello: bytes) -> None:
        try:
            response = await self._pool.request(
                b"POST", f"{self._prefix}/ipc".encode(), [_JSON, _PROTOCOL], hello
            )
        except ConnectionClosed as exc:
            raise ConnectError(
                f"{self._url} closed the connection during the handshake: {exc}"
            ) from None
        if response.status != 200:
            info = error_info_from_response(response, None)
            self._received.append(encode(Error(None, info)))
            self._reason = "the backend refused the session"
            return
        try:
            opened = loads(response.body)
            self._session = str(opened["session_id"])
            token = str(opened["token"])
            welcome = opened["welcome"]
        except (TetherError, KeyError, TypeError):
            raise ConnectError(f"{self._url} did not open an IPC session as tether does") from None
        quoted = urllib.parse.quote(self._session, safe="")
        self._target = f"{self._prefix}/ipc/{quoted}".encode()
        self._headers = [(b"x-session-token", token.encode())]
        self._received.append(dumps(welcome))

    async def receive_message(self) -> bytes:
        if self._received:
            return self._received.popleft()
        if self._reason is not None:
            raise self._closed()
        with trio.CancelScope() as scope:
            self._receive_scope = scope
            try:
                data = await self._next_event()
            except ConnectionClosed as exc:
                if self._reason is None:
                    self._reason = exc.reason or "the event stream broke"
                raise self._closed() from None
            finally:
                self._receive_scope = None
        if scope.cancelled_caught:
            raise self._closed()
        return data

    async def _next_event(self) -> bytes:
        if self._events is None:
            if self._session is None:
                raise ConnectionClosed("no IPC session is open", reason="not open")
            self._events = await self._exit.enter_async_context(
                self._pool.stream(b"GET", self._target + b"/events", self._headers)
            )
            if self._events.status != 200:
                self._reason = "the backend ended the session"
                raise self._closed()
        buffered = True
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                buffered = False
                chunk = await self._events.receive_some()
                if not chunk:
                    self._reason = self._reason or "the backend closed the event stream"
                    raise self._closed()
                self._buffer += chunk.replace(b"\r\n", b"\n")
                if len(self._buffer) > self.max_message_size + 1024:
                    self._reason = "an event from the backend is over the size limit"
                    raise self._closed()
                continue
            block, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            event = b"message"
            data: list[bytes] = []
            for line in block.split(b"\n"):
                field, _, value = line.partition(b":")
                value = value.removeprefix(b" ")
                if field == b"data":
                    data.append(value)
                elif field == b"event":
                    event = value
            if not data:
                continue  # a comment (keep-alive) or an id alone
            payload = b"\n".join(data)
            if event == b"close":
                try:
                    self._reason = str(loads(payload)["reason"])
                except (TetherError, KeyError, TypeError):
                    self._reason = "the backend closed the session"
                self._told_backend = True
                raise self._closed()
            if buffered:
                # A checkpoint, as every receive is: the listeners of the
                # events before this one get to run first.
                await trio.lowlevel.checkpoint()
            return payload

    async def aclose(self, reason: str | None = None) -> None:
        if self._reason is None:
            self._reason = reason or "closed"
        if self._receive_scope is not None:
            self._receive_scope.cancel()
        with trio.CancelScope(shield=True):
            if self._session is not None and not self._told_backend and not self._pool.closed:
                self._told_backend = True
                with contextlib.suppress(TetherError), trio.move_on_after(_GOODBYE_TIMEOUT):
                    await self._pool.request(b"DELETE", self._target, self._headers)
            await self._exit.aclose()
            await self._pool.aclose()


@asynccontextmanager
async def connect_ipc(
    url: str,
    *,
    channels: Iterable[type[IpcInterface]] = (),
    application_id: str | None = None,
    application_version: str | None = None,
    max_message_size: int = DEFAULT_MAX_BODY_SIZE,
    max_pending_notifications: int = DEFAULT_MAX_PENDING_NOTIFICATIONS,
    slow_listener_timeout: float = DEFAULT_SLOW_FRONTEND_TIMEOUT,
) -> AsyncIterator[FrontendIpc]:
    """Open an IPC session with an HTTP backend for the block.

    The session is opened with `POST {prefix}/ipc`; messages to the backend are
    POSTs on it, and the backend's messages (replies, notifications, its calls
    to this frontend) arrive in order on one Server-Sent Events stream.

    Args:
        url: The backend's URL, prefix included (what `serve` reports).
        channels: The channels this frontend will call; each is checked before
            the block starts.
        application_id: Who the frontend is; the backend's contexts carry it.
        application_version: That application's version.
        max_message_size: Largest message either way, in bytes.
        max_pending_notifications: Notifications that may wait for this
            frontend's listeners before it stops reading.
        slow_listener_timeout: Seconds the listeners may leave that queue full
            before the session is closed as "frontend too slow".

    Raises:
        ConnectError: the backend cannot be reached.
        NotFound: the backend serves no IPC (or is not a tether backend), or
            does not serve one of `channels`.
        IncompatibleVersion: a channel's version is incompatible.
        ValueError: `url` is not an http:// URL.
    """
    host, port, prefix = _split_url(url)
    pool = ConnectionPool(host, port, max_connections=8, max_response_size=max_message_size)
    stream = _ClientStream(pool, url, prefix, max_message_size)
    try:
        async with open_ipc_connection(
            stream,
            channels=channels,
            application_id=application_id,
            application_version=application_version,
            max_pending_notifications=max_pending_notifications,
            slow_listener_timeout=slow_listener_timeout,
        ) as frontend:
            yield frontend
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()
