"""ASGI plumbing shared by the HTTP server's routes: types, header lookups,
error bodies, reading a request body, and watching for a client's disconnect.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import trio

from ...runtime import InvalidRequest, PayloadTooLarge, TetherError
from ...runtime._codec import dumps
from ...runtime._protocol import BinaryMessage, ErrorInfo, error_info_to_json
from ._framing import NDJSON_TYPE, RECORDS_TYPE
from ._wire import FRAME, FRAME_TYPE, JSON

__all__ = [
    "Receive",
    "Scope",
    "Send",
    "ClientLeft",
    "DisconnectWatch",
    "Refused",
    "error_body",
    "error_headers",
    "header_text",
    "joined_header",
    "not_allowed",
    "raw_header",
    "read_body",
    "remote_address",
    "require_json",
    "require_json_or_frame",
    "require_stream_body",
    "send_empty",
    "send_error_info",
    "send_frame",
    "takes_frame",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ClientLeft(Exception):
    """The client disconnected before its request was read: nobody to answer."""


class Refused(Exception):
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


def header_text(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    value = raw_header(headers, name)
    return None if value is None else value.decode("utf-8", "replace")


def takes_frame(accept: bytes | None) -> bool:
    """Whether an `Accept` header names `application/vnd.tether.frame`."""
    if accept is None:
        return False
    accept = accept.lower()
    if FRAME_TYPE not in accept:
        return False
    return any(item.split(b";", 1)[0].strip() == FRAME_TYPE for item in accept.split(b","))


def require_json_or_frame(content_type: bytes | None) -> bool:
    """Refuse an RPC request body that is neither JSON nor a tether frame; True for a frame.

    As `require_json`: neither type is one a page can send cross-site without
    a CORS preflight.

    Raises:
        Refused: 415, unsupported-media-type.
    """
    if content_type is not None:
        media_type = content_type.split(b";", 1)[0].strip().lower()
        if media_type == b"application/json":
            return False
        if media_type == FRAME_TYPE:
            return True
    got = "none" if content_type is None else repr(content_type.decode("latin-1"))
    raise Refused(
        InvalidRequest(
            f"a POST to this backend must have Content-Type: application/json (or "
            f"{FRAME_TYPE.decode()}), got {got}: send the body as JSON with that header",
            details={"field": "Content-Type"},
        ),
        status=415,
    )


def require_json(content_type: bytes | None) -> None:
    """Refuse a request body that is not `application/json` (parameters allowed).

    A browser sends `text/plain` and form bodies cross-site without asking
    the server first; a JSON body it sends only after a CORS preflight. So a
    POST that is not JSON is refused before anything reads it or runs.

    Raises:
        Refused: 415, unsupported-media-type.
    """
    if content_type is not None:
        media_type = content_type.split(b";", 1)[0].strip().lower()
        if media_type == b"application/json":
            return
    got = "none" if content_type is None else repr(content_type.decode("latin-1"))
    raise Refused(
        InvalidRequest(
            f"a POST to this backend must have Content-Type: application/json, got {got}: "
            "send the body as JSON with that header",
            details={"field": "Content-Type"},
        ),
        status=415,
    )


def require_stream_body(content_type: bytes | None) -> bool:
    """Which form a client stream's body is in: True for records, False for NDJSON.

    Neither type is one a browser sends cross-site without a CORS preflight
    (only `text/plain`, `multipart/form-data` and
    `application/x-www-form-urlencoded` are), so, as `require_json` does for
    JSON, this keeps pages of other sites from streaming to an operation.

    Raises:
        Refused: 415, unsupported-media-type: any other type, or none.
    """
    if content_type is not None:
        media_type = content_type.split(b";", 1)[0].strip().lower()
        if media_type == NDJSON_TYPE:
            return False
        if media_type == RECORDS_TYPE:
            return True
    got = "none" if content_type is None else repr(content_type.decode("latin-1"))
    raise Refused(
        InvalidRequest(
            f"this operation takes a stream: its body must have Content-Type: "
            f"application/x-ndjson (or application/vnd.tether.stream), got {got}: send the "
            "arguments as the first line, then one JSON value per line",
            details={"field": "Content-Type"},
        ),
        status=415,
    )


async def read_body(
    receive: Receive, content_length: bytes | None, limit: int, time_limit: float
) -> bytes:
    """Read a whole request body of at most `limit` bytes, within `time_limit` seconds.

    Raises:
        PayloadTooLarge: the body (or its announced length) is over `limit`.
        Refused: 408 (request-timeout, `Connection: close`), when the whole body
            did not arrive in `time_limit` seconds, stalled or dribbled.
        ClientLeft: the client disconnected first.
    """
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
    with trio.move_on_after(time_limit):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientLeft
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
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    # The rest of the body may never come: answer, and the server closes the
    # connection (the request was not read to its end).
    raise Refused(
        InvalidRequest(
            f"the request body did not arrive within {time_limit:g} s (it had {size} bytes): "
            "send the whole body at once",
            details={"field": "body"},
        ),
        status=408,
        headers=[(b"connection", b"close")],
    )


async def send_error_info(
    send: Send, info: ErrorInfo, headers: list[tuple[bytes, bytes]], encoded: bytes | None
) -> None:
    """Answer with the error `info` (its status, `Retry-After` or `WWW-Authenticate`).

    Args:
        send: The ASGI send.
        info: The error.
        headers: More headers (CORS, the echoed ActivityId).
        encoded: The encoded `error` message when there is one, to cut the body from.
    """
    extra = [JSON, *headers, *error_headers(info)]
    body = error_body(info, encoded)
    await send({"type": "http.response.start", "status": info.status, "headers": extra})
    await send({"type": "http.response.body", "body": body})


class DisconnectWatch:
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


async def send_empty(send: Send, status: int, cors: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": list(cors)})
    await send({"type": "http.response.body", "body": b""})


def remote_address(scope: Scope) -> str | None:
    """The client's address, `"host:port"`, when the server says it."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


def raw_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def joined_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """A header's value; of a header sent more than once, its values joined with ", "."""
    values = [value for key, value in headers if key == name]
    return b", ".join(values) if values else None


def not_allowed(method: str, allow: str) -> Refused:
    error = InvalidRequest(
        f"{method} is not allowed here; use {allow}", details={"allow": allow, "method": method}
    )
    return Refused(error, status=405, headers=[(b"allow", allow.encode())])


def error_headers(info: ErrorInfo) -> list[tuple[bytes, bytes]]:
    """What an error answer says besides its body: `Retry-After` (429, 503; its
    `retry_after` detail, 1 s when it has none) or `WWW-Authenticate` (401)."""
    if info.status in (429, 503):
        retry = info.details.get("retry_after")
        seconds = math.ceil(retry) if isinstance(retry, (int, float)) else 1
        return [(b"retry-after", str(max(seconds, 0)).encode())]
    if info.status == 401:
        return [(b"www-authenticate", b"Bearer")]
    return []


def error_body(info: ErrorInfo, encoded: bytes | None) -> bytes:
    if encoded is not None:
        # An encoded `error` message: {"t":"error","id":..,"error":{...}}.
        start = encoded.find(b'"error":')
        if start >= 0:
            return b'{"error":' + encoded[start + 8 :]
    return dumps({"error": error_info_to_json(info)})


async def send_frame(
    send: Send, message: BinaryMessage, headers: list[tuple[bytes, bytes]], limit: int
) -> None:
    """Answer 200 with `message` as a frame (`application/vnd.tether.frame`).

    Its attachments are written as they are (no joined copy), under a
    Content-Length. One over `limit` bytes is answered 413 instead.
    """
    size = message.size
    if size > limit:
        info = ErrorInfo(
            "payload-too-large",
            413,
            "PayloadTooLarge",
            f"the reply encodes to {size} bytes, over the connection's limit of {limit}: "
            "ask for less per call",
        )
        await send_error_info(send, info, headers, None)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [FRAME, (b"content-length", b"%d" % size), *headers],
        }
    )
    chunks = message.chunks()
    last = len(chunks) - 1
    for index, chunk in enumerate(chunks):
        await send({"type": "http.response.body", "body": chunk, "more_body": index < last})
