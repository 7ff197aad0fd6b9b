"""The HTTP transport's frontend: RPC calls as POSTs, IPC sessions as POSTs plus SSE.

Requests go through a small pool of keep-alive HTTP/1.1 connections
(`http._pool`), chosen over httpx by measurement (docs/performance.md). Every
failure of the connection surfaces as a tether `TransportError`.
"""

from __future__ import annotations

import logging
import math
import re
import ssl
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import orjson
import trio

from ... import contexts
from ...contexts._metadata import encode_baggage
from ...runtime import (
    PROTOCOL_VERSION,
    CallMayHaveRun,
    CallNotSent,
    ClientOptions,
    ConnectError,
    ConnectionClosed,
    IncompatibleVersion,
    InvalidRequest,
    Operation,
    PayloadTooLarge,
    RpcBackend,
    RpcInterface,
    TetherError,
)
from ...runtime._binary import pack
from ...runtime._client import check_backend_interfaces
from ...runtime._codec import dumps, loads
from ...runtime._interceptors import Interceptor, peer_of
from ...runtime._protocol import (
    BinaryMessage,
    Call,
    Error,
    ErrorInfo,
    InterfaceInfo,
    Result,
    decode,
)
from ...runtime._retry import DEFAULT_RETRY, RetryPolicy
from ...runtime._state import ConnectionState, StateWatch
from ...runtime._streams import DEFAULT_STREAM_WINDOW, Exchange, StreamWindow
from ...runtime._util import check_seconds
from .._tls import client_context
from ._cache import get_target
from ._polling import follow_operation
from ._pool import ConnectionPool, Response
from ._stream_client import open_http_call
from ._wire import DEFAULT_MAX_BODY_SIZE, FRAME, JSON, PROTOCOL, STATUS_CODES

__all__ = [
    "DEFAULT_READ_TIMEOUT",
    "HttpBackend",
    "answer_grace",
    "connect",
    "error_info_from_response",
    "split_url",
    "url_context",
]

_log = logging.getLogger("tether.client")

#: Seconds a call without a deadline of its own may go without an answer (sent
#: as its X-Timeout-Ms), and the longest gap inside a response. As long as
#: common proxies wait for a silent response (nginx, cloud load balancers).
DEFAULT_READ_TIMEOUT = 60.0
#: The longest wait for a server's 504, past a deadline the client sent.
_MAX_ANSWER_GRACE = 5.0


def answer_grace(read_timeout: float) -> float:
    """Seconds a call waits past its `read_timeout` for the server's own answer (504).

    In proportion for short timeouts, at most `_MAX_ANSWER_GRACE`.
    """
    return min(read_timeout, _MAX_ANSWER_GRACE)


def split_url(url: str) -> tuple[str, int, str]:
    """Host, port and path prefix of a backend URL (`http://` or `https://`)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"tether's HTTP transport speaks http:// and https:// URLs, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"the URL {url!r} names no host")
    default = 443 if parts.scheme == "https" else 80
    return parts.hostname, parts.port or default, parts.path.rstrip("/")


def url_context(url: str, ssl_context: ssl.SSLContext | None) -> ssl.SSLContext | None:
    """The TLS context a client of `url` connects with: `ssl_context`, or the
    system's default for an `https://` URL; None for an `http://` one."""
    return client_context(urllib.parse.urlsplit(url).scheme == "https", ssl_context)


#: What an HTTP header value cannot hold (RFC 9110 section 5.5): control
#: characters (a tab inside is allowed), and spaces or tabs at either end.
_UNSENDABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|^[ \t]|[ \t]$")


def _header_value(name: str, value: str, *, secret: bool = False) -> bytes:
    """`value` as a header value, or InvalidRequest if HTTP cannot carry it.

    A `secret` value (a credential) is never repeated in the error: messages
    end up in logs and bug reports.
    """
    # The usual value first, without the regex: this runs for several headers
    # of every call. A printable str holds no control character (nor a tab),
    # so only a space at either end could make it unsendable.
    if value.isprintable() and (not value or (value[0] != " " and value[-1] != " ")):
        return value.encode()
    if _UNSENDABLE.search(value) is None:
        return value.encode()
    shown = "(a credential, not shown)" if secret else repr(value)
    raise InvalidRequest(
        f"{name} {shown} cannot be sent in an HTTP header: it holds a line break or another "
        "control character, or starts or ends with a space: check how it was made",
        details={"field": name},
    )


#: A result with bytes may come back as a frame: raw bytes, no base64.
ACCEPT = (b"accept", b"application/vnd.tether.frame, application/json")


def _result_value(body: bytes) -> Any:
    """A 200 response's value: the JSON body, or the `result` message of a frame.

    A frame's first byte is 0, which no JSON text starts with.

    Raises:
        InvalidRequest: the body is neither.
    """
    if body[:1] != b"\x00":
        return loads(body)
    message = decode(body)
    if type(message) is not Result:
        raise InvalidRequest(
            f"the backend answered 200 with a frame holding {type(message).__name__}, not a result"
        )
    return message.value


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


#: A reverse proxy's own answers when its backend could not be reached, failed
#: mid-way or stayed silent (tether's own 504 carries its error body).
_GATEWAY_STATUSES = frozenset({502, 504})


def gateway_failure(
    response: Response, call: Call, activity_id: str | None
) -> CallMayHaveRun | None:
    """A proxy's 502/504 (not tether's body) as the call that may have run it stands for.

    The proxy may have passed the request on before its backend failed, so the
    runtime retries it only for an idempotent operation.
    """
    if response.status not in _GATEWAY_STATUSES:
        return None
    try:
        loads(response.body)["error"]["code"]
    except (TetherError, KeyError, TypeError, ValueError, AttributeError):
        pass
    else:
        return None  # tether's own answer (a deadline), not the proxy's
    return CallMayHaveRun(
        f"a proxy answered HTTP {response.status} to {call.iface}.{call.op}: its backend was "
        "unreachable, failed or stayed silent, so the call may have run (tether retries it "
        "only for an idempotent operation); check the proxy's error log",
        reason=f"HTTP {response.status} from a proxy",
        details={"http_status": response.status},
        activity_id=activity_id,
    )


class HttpBackend(RpcBackend):
    """An HTTP backend's RPC endpoints, as the frontend calls them.

    Made by `connect`; each call is one `POST {prefix}/{interface}/{version}/
    {operation}` on a pooled keep-alive connection (a `GET` with the arguments
    in the query for an operation the backend describes as cacheable). Cancelling a call closes
    its connection, which the server sees as a disconnect and cancels the impl.

    A call waits for its answer until its caller's deadline; a call without
    one carries `read_timeout` as its deadline (the server cancels the impl
    when it passes and answers 504), and is given up with `ConnectionClosed`
    if not even that answer comes back soon after: the connection is silent.
    """

    __slots__ = (
        "_bound",
        "_closed",
        "_interfaces",
        "_options",
        "_pool",
        "_prefix",
        "_state",
        "_targets",
        "max_message_size",
        "read_timeout",
        "url",
    )

    def __init__(
        self,
        pool: ConnectionPool,
        url: str,
        prefix: str,
        options: ClientOptions,
        max_message_size: int,
        read_timeout: float | None = None,
    ) -> None:
        check_seconds("read_timeout", read_timeout, optional=True)
        self._pool = pool
        self.read_timeout = read_timeout
        # What a call without a deadline of its own sends, and how long it waits.
        self._bound: tuple[tuple[bytes, bytes], float] | None = None
        if read_timeout is not None:
            self._bound = (
                (b"x-timeout-ms", b"%d" % math.ceil(read_timeout * 1000)),
                read_timeout + answer_grace(read_timeout),
            )
        self.url = url
        self._prefix = prefix
        self._options = options
        self.max_message_size = max_message_size
        self._interfaces: dict[str, InterfaceInfo] = {}
        self._targets: dict[tuple[str, str, str], bytes] = {}
        self._closed = False
        self._state = StateWatch()

    @property
    def options(self) -> ClientOptions:
        return self._options

    @property
    def interfaces(self) -> Mapping[str, InterfaceInfo]:
        return self._interfaces

    @property
    def state_watch(self) -> StateWatch:
        """CONNECTED; RECONNECTING from a call's failure to reach the backend (it
        could not connect, or the connection was lost) until a request is
        answered; CLOSED after `aclose`."""
        return self._state

    async def describe(self) -> dict[str, Any]:
        """Ask the backend what it serves (`GET {prefix}/`).

        Raises:
            ConnectError: the backend cannot be reached or did not answer as a
                tether backend.
            IncompatibleVersion: it speaks another protocol version.
        """
        wait = math.inf if self.read_timeout is None else self.read_timeout
        with trio.move_on_after(wait) as waited:
            try:
                response = await self._pool.request(b"GET", (self._prefix + "/").encode(), [])
            except ConnectionClosed as exc:
                raise ConnectError(
                    f"{self.url} closed the connection while describing: {exc}"
                ) from None
        if waited.cancelled_caught:
            raise ConnectError(
                f"{self.url} did not describe itself within {wait:g} s (read_timeout): is it "
                "a tether backend, and is the way to it open?"
            )
        if response.status != 200:
            raise ConnectError(
                f"{self.url} answered HTTP {response.status} to describe: is it a tether backend, "
                "and is the prefix right?"
            )
        try:
            described = loads(response.body)
            interfaces = {
                name: InterfaceInfo.from_json(entry)
                for name, entry in described["interfaces"].items()
            }
            protocol = described["protocol"]
        except (TetherError, KeyError, TypeError, AttributeError, ValueError):
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

    def encode_args(self, call: Call) -> bytes:
        """The JSON array of a call's arguments (bytes as base64).

        Raises:
            ConnectionClosed: the connection was closed (`aclose`).
            PayloadTooLarge: it is over `max_message_size`.
        """
        body, _ = self._encode_body(call, frame=False)
        return body

    def _encode_body(self, call: Call, *, frame: bool = True) -> tuple[bytes, tuple[bytes, bytes]]:
        """The body of a unary call and its Content-Type header.

        JSON, or, when the arguments hold bytes and `frame`, a frame carrying
        them raw (JSON with base64 past the frame's limits).

        Raises:
            ConnectionClosed: the connection was closed (`aclose`).
            PayloadTooLarge: it is over `max_message_size`.
        """
        if self._closed:
            raise ConnectionClosed(f"the HTTP connection to {self.url} is closed", reason="closed")
        content_type = JSON
        try:
            # Plain JSON first: arguments without bytes (nearly all) cost what they did.
            body = orjson.dumps(call.args)
        except TypeError:
            packed = pack({"args": call.args}) if frame else None
            if type(packed) is BinaryMessage:
                body = packed.frame()
                content_type = FRAME
            else:
                body = dumps(call.args)
        if len(body) > self.max_message_size:
            raise self.too_large(len(body))
        return body, content_type

    def too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the call encodes to {size} bytes, over this connection's limit of "
            f"{self.max_message_size}: send less per call"
        )

    def call_headers(self, call: Call) -> tuple[list[tuple[bytes, bytes]], str]:
        """The headers that carry a call's context (not its body's type nor its
        deadline), and its ActivityId (a new one if the call has none).

        Raises:
            InvalidRequest: a value HTTP cannot carry in a header.
        """
        ctx = call.ctx
        activity_id = ctx.activity_id or contexts.new_activity_id()
        headers = [
            PROTOCOL,
            (b"x-correlation-id", _header_value("the ActivityId", activity_id)),
            (
                b"traceparent",
                _header_value("traceparent", ctx.traceparent)
                if ctx.traceparent is not None
                else contexts.traceparent_for(activity_id).encode(),
            ),
        ]
        if ctx.metadata:
            # W3C Baggage: `k=v,k2=v2`, the values percent-encoded.
            headers.append((b"baggage", _header_value("metadata", encode_baggage(ctx.metadata))))
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
            headers.append(
                (b"authorization", _header_value("authorization", ctx.authorization, secret=True))
            )
        return headers, activity_id

    def open_call(
        self,
        call: Call,
        operation: Operation,
        source: AsyncIterable[Any] | None,
    ) -> AbstractAsyncContextManager[Exchange]:
        """Carry a stream call: one POST whose response (server stream) or request
        body (client stream) is a stream of records (docs/http.md, "Streams").

        Raises:
            NotFound: a two-way stream, which HTTP does not carry (nothing is sent).
            TransportError: the connection failed or was closed.
        """
        if self._closed:
            raise ConnectionClosed(f"the HTTP connection to {self.url} is closed", reason="closed")
        return open_http_call(self, call, operation, source)

    async def request(self, call: Call) -> Result | Error:
        try:
            reply = await self._request(call)
        except (ConnectError, CallNotSent, CallMayHaveRun) as exc:
            if not self._closed:
                self._state.set(ConnectionState.RECONNECTING, exc.message)
            raise
        self._state.set(ConnectionState.CONNECTED)
        return reply

    async def _request(self, call: Call) -> Result | Error:
        method, target = b"POST", self._target(call.iface, call.ver, call.op)
        # A cacheable operation (as the backend describes it) goes as a GET
        # that caches keep, unless its arguments make too long a URL.
        info = self._interfaces.get(call.iface)
        policy = None if info is None else info.policies.get(call.op)
        get = None
        if policy is not None and policy.cache is not None and not self._closed:
            get = get_target(target, call.args)
        if get is None:
            body, content_type = self._encode_body(call)
            headers, activity_id = self.call_headers(call)
            headers += (content_type, ACCEPT)
        else:
            method, target, body = b"GET", get, b""
            headers, activity_id = self.call_headers(call)
        timeout_ms = call.timeout_ms
        if timeout_ms is None:
            bound = self._bound
            # A long-running call's POST is answered soon (202); its impl may
            # run for minutes, bounded by the caller's deadline alone.
            if bound is not None and (policy is None or policy.long_running is None):
                return await self._bounded(call, method, target, headers, body, activity_id, bound)
        else:
            headers.append((b"x-timeout-ms", b"%d" % timeout_ms))
        response = await self._pool.request(method, target, headers, body)
        if response.status == 202:
            return await follow_operation(
                self, call, response, headers, activity_id, lambda r: self._reply(call, r)
            )
        return self._reply(call, response)

    def _reply(self, call: Call, response: Response) -> Result | Error:
        if response.status == 200:
            return Result(call.id, _result_value(response.body))
        lost = gateway_failure(response, call, call.ctx.activity_id)
        if lost is not None:
            raise lost
        return Error(call.id, error_info_from_response(response, call.ctx.activity_id))

    async def _bounded(
        self,
        call: Call,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        activity_id: str,
        bound: tuple[tuple[bytes, bytes], float],
    ) -> Result | Error:
        """A call without a deadline of its own: it runs under `read_timeout`.

        The response comes only when the impl has finished, so the silence of
        a call is bounded by its deadline: the server cancels the impl when
        `read_timeout` passes and answers 504. If not even that answer comes
        within a grace after it, the connection is silent (black-holed): the
        call is given up, and its connection closed.
        """
        header, wait = bound
        headers.append(header)
        with trio.CancelScope(deadline=trio.current_time() + wait) as waited:
            response = await self._pool.request(method, target, headers, body)
        if waited.cancelled_caught:
            read_timeout = self.read_timeout
            raise CallMayHaveRun(
                f"no answer from {self.url} to {call.iface}.{call.op} within {wait:g} s: the "
                f"call ran under the connection's read_timeout of {read_timeout:g} s (it had no "
                "deadline of its own), and not even the server's 504 came back: the connection "
                "is taken as lost",
                reason=f"no answer within {wait:g} s",
                activity_id=activity_id,
            )
        if response.status == 200:
            return Result(call.id, _result_value(response.body))
        lost = gateway_failure(response, call, activity_id)
        if lost is not None:
            raise lost
        info = error_info_from_response(response, activity_id)
        if info.code == "deadline-exceeded":
            read_timeout = self.read_timeout
            # The deadline was not the caller's: say whose it was.
            info = attrs.evolve(
                info,
                message=(
                    f"{call.iface}.{call.op} did not finish within the connection's read_timeout "
                    f"of {read_timeout:g} s (the call had no deadline of its own): give it one "
                    "(trio.fail_after), or raise read_timeout"
                ),
            )
        return Error(call.id, info)

    async def aclose(self) -> None:
        """Close every connection; calls still running fail with ConnectionClosed."""
        self._closed = True
        self._state.set(ConnectionState.CLOSED, "closed by this client")
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
    read_timeout: float | None = DEFAULT_READ_TIMEOUT,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    interceptors: Iterable[Interceptor] = (),
    ssl_context: ssl.SSLContext | None = None,
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
        read_timeout: Seconds a call without a deadline of its own may run:
            sent as its `X-Timeout-Ms` (the server cancels the impl past it
            and answers 504, raised as `DeadlineExceeded`); if no answer at
            all comes within `min(read_timeout, 5)` seconds more, the
            connection is taken as silent and the call fails with
            `ConnectionClosed`. Also the longest gap inside a response, and
            the longest wait for describe. A call with a deadline (a Trio
            cancel scope) waits until that deadline instead. None: calls
            without a deadline wait forever.
        stream_window: Taken for every transport's sake; over HTTP a stream's
            window is TCP's (docs/http.md, "Streams"): the client reads a
            stream's response only as its items are taken, so it holds at
            most one read (64 KiB) and one item beyond them.
        retry: How calls are retried (`tether.RetryPolicy`; by default 10
            tries over about 11 s, backing off from 0.1 s to 2 s). Retried:
            a call that could not connect, or whose connection broke before
            it was written, and a 503 or 429 (waiting at least its
            `Retry-After`), for every operation; one whose connection was
            lost after it was sent, or that got no answer within
            `read_timeout` (`CallMayHaveRun`), only for an idempotent
            operation. Never past the caller's deadline. None: no retries.
        interceptors: Run around every call made through this connection
            (`tether.Interceptor`; first outermost, inside the process-wide
            ones), wrapping its retries: one outcome per call as the caller sees it.
        ssl_context: The TLS settings of an `https://` URL: the CAs trusted,
            and a client certificate for mutual TLS (`load_cert_chain`). By
            default `ssl.create_default_context()`: the system's trust store,
            no client certificate. Not used for an `http://` URL.

    Raises:
        ConnectError: the backend cannot be reached, or is not a tether backend,
            or the TLS handshake failed (its certificate was not trusted, or
            it refused this client's), saying which.
        IncompatibleVersion: an interface's version is incompatible.
        NotFound: the backend does not serve one of `interfaces`.
        ValueError: `url` is not an http:// or https:// URL, or
            `read_timeout` is not a positive number or None.
        TypeError: `ssl_context` is not an `ssl.SSLContext` or None.
    """
    check_seconds("read_timeout", read_timeout, optional=True)
    host, port, prefix = split_url(url)
    context = url_context(url, ssl_context)
    wanted = list(interfaces)
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
    pool = ConnectionPool(
        host,
        port,
        max_connections=max_connections,
        max_response_size=max_message_size,
        read_timeout=read_timeout,
        ssl_context=context,
    )
    backend = HttpBackend(pool, url, prefix, options, max_message_size, read_timeout)
    try:
        await backend.describe()
        check_backend_interfaces(backend.interfaces, wanted)
        yield backend
    finally:
        with trio.CancelScope(shield=True):
            await backend.aclose()
