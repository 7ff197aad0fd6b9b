"""Facts of the HTTP wire that the server and the client share (docs/http.md)."""

from __future__ import annotations

from ...runtime import PROTOCOL_VERSION

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_BODY_SIZE",
    "FRAME",
    "FRAME_TYPE",
    "JSON",
    "PROTOCOL",
    "STATUS_CODES",
]

#: Largest request body (and reply) by default, in bytes (16 MiB).
DEFAULT_MAX_BODY_SIZE = 16 * 1024 * 1024
#: Seconds a request's whole body may take to arrive, once its headers have.
DEFAULT_BODY_TIMEOUT = 30.0

JSON = (b"content-type", b"application/json")
#: The media type of a body in tether's binary frame (docs/wire.md): bytes
#: values raw beside the JSON envelope. Not CORS-safelisted, so a page's
#: request in it gets a preflight, as a JSON one does.
FRAME_TYPE = b"application/vnd.tether.frame"
FRAME = (b"content-type", FRAME_TYPE)
#: The error code of each status tether answers with (DESIGN.md section 5). A
#: 403 is `incompatible-version` when the body says so; a body that is not
#: tether's (a proxy's page) is taken for `forbidden`. 405, 408 and 415 are
#: refusals of a malformed request: the client raises `InvalidRequest`.
STATUS_CODES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    408: "request-timeout",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "application",
    429: "too-many-requests",
    503: "unavailable",
    504: "deadline-exceeded",
}
#: The header that says which tether protocol a request speaks.
PROTOCOL = (b"x-protocol-version", b"%d" % PROTOCOL_VERSION)
