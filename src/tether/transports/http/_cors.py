"""CORS: the headers that let a listed origin's pages read the app's answers."""

from __future__ import annotations

from .._web import SitePolicy
from ._asgi import Send, send_empty
from ._routes import Route

__all__ = ["CORS_HEADERS", "EXPOSED", "cors_headers", "send_options"]

#: The request headers a listed origin's page may send.
CORS_HEADERS = (
    b"content-type, authorization, x-correlation-id, x-session-id, x-application-id, "
    b"x-application-version, x-protocol-version, x-timeout-ms, traceparent, baggage, "
    b"x-session-token, last-event-id, if-none-match, x-tether-seq, x-tether-acks"
)
#: The response headers a listed origin's page may read.
EXPOSED = b"x-correlation-id, retry-after, x-session-id, x-session-token, etag"


def cors_headers(site: SitePolicy, origin: str) -> list[tuple[bytes, bytes]]:
    """The CORS headers for a page of `origin`, already allowed: none for its own pages."""
    if not site.lists(origin):
        return []
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", EXPOSED),
        (b"vary", b"origin"),
    ]


async def send_options(send: Send, route: Route, cors: list[tuple[bytes, bytes]]) -> None:
    """What a route takes; to a listed origin's preflight, the CORS answer too."""
    allow = route.allow.encode()
    headers = [(b"allow", allow), *cors]
    if cors:
        headers += [
            (b"access-control-allow-methods", allow),
            (b"access-control-allow-headers", CORS_HEADERS),
            (b"access-control-max-age", b"600"),
        ]
    await send_empty(send, 204, headers)
