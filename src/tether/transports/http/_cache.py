"""Cached reads: a cacheable operation as a GET that browsers and proxies keep.

A call of an operation declared `@tether.cacheable(...)` travels as::

    GET {prefix}/{interface}/{version}/{operation}?args=<JSON array, percent-encoded>

`args` is the same JSON array a POST's body holds (docs/http.md, "Cached
reads", says why one array rather than a parameter per name); an operation
without arguments has no query. The client writes it canonically (compact
JSON, every byte but `A-Za-z0-9_.-~` percent-encoded), so equal calls are
equal URLs and share one cache entry.

The answer to a GET is the POST's, plus:

* 200: `Cache-Control: public, max-age=N` (the declared max-age, whole
  seconds), `public, max-age=31536000, immutable` for an immutable result,
  and `private` instead of `public` when the request carried `Authorization`
  (a shared cache must not hand one user's result to another); a strong
  `ETag` (a hash of the body); `Vary: Authorization, baggage`;
* 304 and no body when `If-None-Match` names that ETag (the call still ran:
  the ETag is of its result);
* any error: `Cache-Control: no-store`.
"""

from __future__ import annotations

import hashlib
import math
import urllib.parse
from collections.abc import MutableMapping
from typing import Any

import orjson

from ...runtime import Forbidden, InvalidRequest, Operation
from ...runtime._codec import dumps, loads
from ...runtime._policies import CachePolicy
from ._asgi import Send, joined_header, raw_header

__all__ = [
    "MAX_GET_TARGET",
    "NO_STORE",
    "CachedAnswer",
    "cache_control",
    "etag",
    "get_args",
    "get_target",
    "query_args",
]

#: The longest GET target the client sends; a call whose arguments make a
#: longer one goes as a POST (not cached). Well under the 8 KiB request line
#: of nginx's default buffers and of common CDNs.
MAX_GET_TARGET = 4096
NO_STORE = (b"cache-control", b"no-store")
# An impl may read the caller's metadata (the `baggage` header): answers to
# different metadata are different entries, as answers to different credentials.
_VARY = (b"vary", b"authorization, baggage")
# The JSON of a GET cannot be read by another site's page as a script or style.
_NOSNIFF = (b"x-content-type-options", b"nosniff")
# Query parameters parsed at most: `args` is the one there should be.
_MAX_FIELDS = 16


def get_target(path: bytes, args: list[Any]) -> bytes | None:
    """The GET target of a cacheable call to `path`, or None when it is over `MAX_GET_TARGET`.

    Raises:
        TypeError: an argument JSON cannot hold (as for a POST's body).
    """
    if not args:
        return path
    try:
        text = orjson.dumps(args)
    except TypeError:
        text = dumps(args)  # bytes among them: base64, as in a JSON body
    target = path + b"?args=" + urllib.parse.quote_from_bytes(text, safe="").encode("ascii")
    return target if len(target) <= MAX_GET_TARGET else None


def query_args(query: bytes, operation: Operation) -> list[Any]:
    """The arguments a GET's query carries (its `args`), not yet checked against the signature.

    Raises:
        InvalidRequest: the query holds another parameter, `args` twice or
            not at all (for an operation that takes arguments), or `args` is
            not a JSON array; `details.field` says which.
    """
    usage = (
        f"a GET of {operation.qualname} carries its arguments as ?args=<the JSON array of "
        f"them, percent-encoded> ({', '.join(operation.param_names) or 'none'})"
    )
    try:
        pairs = urllib.parse.parse_qsl(
            query.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=bool(query),
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    except (UnicodeError, ValueError) as exc:
        raise InvalidRequest(
            f"the query is not name=value pairs of UTF-8 ({exc}): {usage}",
            details={"field": "query"},
        ) from None
    found: str | None = None
    for name, value in pairs:
        if name != "args":
            raise InvalidRequest(
                f"unknown query parameter {name[:40]!r}: {usage}", details={"field": "query"}
            )
        if found is not None:
            raise InvalidRequest(f"args is given twice: {usage}", details={"field": "args"})
        found = value
    if found is None:
        if operation.required:
            raise InvalidRequest(f"the query has no args: {usage}", details={"field": "args"})
        return []
    try:
        args = loads(found)
    except InvalidRequest as exc:
        raise InvalidRequest(
            f"args is not JSON ({exc.message}): {usage}", details={"field": "args"}
        ) from None
    if not isinstance(args, list):
        raise InvalidRequest(
            f"args must be a JSON array, got {type(args).__name__}: {usage}",
            details={"field": "args"},
        )
    return args


def get_args(query: bytes, headers: list[tuple[bytes, bytes]], operation: Operation) -> list[Any]:
    """The arguments of a GET, once it is known not to come from another site's page.

    A page of another site can make a browser GET any URL without CORS
    (`<img src>`, `<script src>`), with no `Origin` for the site policy to
    check; browsers say where it came from in `Sec-Fetch-Site` instead. A
    CORS request carries `Origin` (checked already); a navigation shows the
    user the JSON.

    Raises:
        Forbidden: `Sec-Fetch-Site: cross-site` without CORS nor navigation.
        InvalidRequest: the query is not `args=<JSON array>` (`query_args`).
    """
    if raw_header(headers, b"sec-fetch-site") == b"cross-site" and raw_header(
        headers, b"sec-fetch-mode"
    ) not in (b"cors", b"navigate"):
        raise Forbidden(
            f"a page of another site asked for {operation.qualname} without CORS "
            "(Sec-Fetch-Site: cross-site): fetch it with CORS from an origin in the backend's "
            "cors_origins"
        )
    return query_args(query, operation)


def cache_control(policy: CachePolicy, *, private: bool) -> bytes:
    """The `Cache-Control` of a cacheable result (`private`: the request carried credentials)."""
    value = b"%s, max-age=%d" % (b"private" if private else b"public", math.floor(policy.max_age))
    return value + b", immutable" if policy.immutable else value


def etag(body: bytes) -> bytes:
    """A strong ETag of a response body: 128 bits of BLAKE2b, in hex, quoted."""
    return b'"%s"' % hashlib.blake2b(body, digest_size=16).hexdigest().encode("ascii")


def _matches(if_none_match: bytes, tag: bytes) -> bool:
    """Whether `If-None-Match` names `tag` (weak comparison, as RFC 9110 says for it)."""
    for candidate in if_none_match.split(b","):
        candidate = candidate.strip()
        if candidate == b"*" or candidate.removeprefix(b"W/") == tag:
            return True
    return False


class CachedAnswer:
    """Wraps the ASGI `send` of a GET: adds the cache headers, or answers 304.

    The reply is sent as for a POST (one start, one body); this sees the
    start, holds it until the body, and sends both with what a GET adds.
    """

    __slots__ = ("_control", "_head", "_if_none_match", "_send", "_start")

    def __init__(
        self,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        policy: CachePolicy | None,
        *,
        head: bool,
    ) -> None:
        self._send = send
        self._head = head
        private = raw_header(headers, b"authorization") is not None
        # None: an unknown operation, whose answer is an error (no-store).
        self._control = (
            NO_STORE
            if policy is None
            else (b"cache-control", cache_control(policy, private=private))
        )
        self._if_none_match = joined_header(headers, b"if-none-match")
        self._start: dict[str, Any] | None = None

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [*message["headers"], _NOSNIFF]
            if message["status"] != 200:
                await self._send({**message, "headers": [*headers, NO_STORE]})
                return
            self._start = {**message, "headers": headers}
            return
        start, self._start = self._start, None
        if start is None:  # an error's body
            await self._send({**message, "body": b""} if self._head else message)
            return
        # send_reply sends a 200's body whole, in one message.
        assert not message.get("more_body", False)
        body: bytes = message.get("body", b"")
        tag = etag(body)
        headers = [*start["headers"], self._control, (b"etag", tag), _VARY]
        if self._if_none_match is not None and _matches(self._if_none_match, tag):
            start["status"] = 304
            start["headers"] = [h for h in headers if h[0] != b"content-type"]
            body = b""
        else:
            start["headers"] = [*headers, (b"content-length", b"%d" % len(body))]
            if self._head:
                body = b""
        await self._send(start)
        await self._send({"type": "http.response.body", "body": body})
