"""The HTTP transport's frontend: RPC calls as POSTs, IPC sessions as POSTs plus SSE.

Requests go through a small pool of keep-alive HTTP/1.1 connections
(`http._pool`), chosen over httpx by measurement (docs/performance.md). Every
failure of the connection surfaces as a tether `TransportError`.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from ... import contexts
from ...runtime import (
    PROTOCOL_VERSION,
    ClientOptions,
    ConnectError,
    ConnectionClosed,
    IncompatibleVersion,
    InvalidRequest,
    PayloadTooLarge,
    RpcBackend,
    RpcInterface,
    TetherError,
)
from ...runtime._client import check_backend_interfaces
from ...runtime._codec import dumps, loads
from ...runtime._protocol import Call, Error, ErrorInfo, InterfaceInfo, Result
from ._pool import ConnectionPool, Response
from ._wire import DEFAULT_MAX_BODY_SIZE, JSON, PROTOCOL, STATUS_CODES

__all__ = ["HttpBackend", "connect", "error_info_from_response", "split_url"]

_log = logging.getLogger("tether.client")

#: Seconds a leaving IPC frontend spends telling the backend so.
_GOODBYE_TIMEOUT = 1.0


def split_url(url: str) -> tuple[str, int, str]:
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


#: What an HTTP header value cannot hold (RFC 9110 section 5.5): control
#: characters (a tab inside is allowed), and spaces or tabs at either end.
_UNSENDABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|^[ \t]|[ \t]$")


def _header_value(name: str, value: str, *, secret: bool = False) -> bytes:
    """`value` as a header value, or InvalidRequest if HTTP cannot carry it.

    A `secret` value (a credential) is never repeated in the error: messages
    end up in logs and bug reports.
    """
    if _UNSENDABLE.search(value) is None:
        return value.encode()
    shown = "(a credential, not shown)" if secret else repr(value)
    raise InvalidRequest(
        f"{name} {shown} cannot be sent in an HTTP header: it holds a line break or another "
        "control character, or starts or ends with a space: check how it was made",
        details={"field": name},
    )


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
            JSON,
            PROTOCOL,
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
            headers.append(
                (b"authorization", _header_value("authorization", ctx.authorization, secret=True))
            )
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
    host, port, prefix = split_url(url)
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
