"""What tether's two web transports share: which pages and Host names may reach them,
the request headers their hooks see, and the heartbeat inside the envelope.

Both the HTTP transport's app and the WebSocket servers face browsers, and a
browser will send a request wherever a page tells it to:

* **Cross-site requests.** A page on any origin can make a browser POST a
  "simple" body (`text/plain`, a form) or open a WebSocket, with no preflight,
  and the browser adds the user's cookies. So a server must refuse a request
  whose `Origin` is another site's, before anything runs.
* **DNS rebinding.** A hostile page can make its own host name resolve to
  127.0.0.1; its requests then reach a backend on loopback with that name in
  `Host`, and count as same-origin in the browser. So a server on loopback
  must refuse a `Host` that is not a loopback name.

`SitePolicy` decides both, the same way for every route of both servers.

Both also carry a heartbeat inside tether's envelope where the wire has none
the app can use (ASGI hides WebSocket pings from hypercorn's `/ws`; an IPC
session's event stream is plain HTTP): `{"t":"ping","id":n}`, answered
`{"t":"pong","id":n}`. `ping_message`, `pong_message` and `heartbeat` make and
read them, for the servers that ping and the clients that answer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from urllib.parse import urlsplit

import attrs
import orjson

from ..runtime import Forbidden, InvalidRequest

__all__ = [
    "ANY",
    "SitePolicy",
    "header_map",
    "heartbeat",
    "is_loopback",
    "origin_list",
    "ping_message",
    "pong_message",
    "split_host",
]

#: Allows any origin, or any host, in `allowed_origins` / `allowed_hosts`.
ANY = "*"

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def split_host(value: str) -> tuple[str, int | None] | None:
    """The host (lower case, IPv6 without brackets) and port of a `Host` header value.

    Returns:
        None when `value` is not `host[:port]` (or `[v6]:port`).
    """
    value = value.strip().lower()
    if not value or any(c in value for c in "/@?# \t"):
        return None
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host:
        return None
    return host.rstrip("."), port


def header_map(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """A request's headers as the authorization hooks see them: names in lower
    case, values as text, a repeated header's values joined with ", "."""
    headers: dict[str, str] = {}
    for key, value in raw:
        name = key.decode("latin-1").lower()
        text = value.decode("utf-8", "replace")
        headers[name] = f"{headers[name]}, {text}" if name in headers else text
    return headers


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) can only mean this machine."""
    host = host.lower().strip("[]").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin_list(value: Collection[str] | None, name: str) -> frozenset[str] | None:
    """Check a list of origins (`scheme://host[:port]`, or `"*"` for any).

    Raises:
        TypeError: `value` is one string, not a collection of them.
        ValueError: an item is not an origin.
    """
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError(f"{name} takes a collection of origins, not one str: {value!r}")
    origins = frozenset(value)
    for origin in origins:
        if origin == ANY:
            continue
        if not isinstance(origin, str) or origin.endswith("/") or "://" not in origin:
            raise ValueError(
                f"{name} holds scheme://host[:port] values without a trailing slash, like "
                f"'https://app.example.com' (or '*' for any origin); got {origin!r}"
            )
    return origins


def _host_list(value: Collection[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError(f"allowed_hosts takes a collection of host names, not one str: {value!r}")
    hosts = set()
    for host in value:
        if host == ANY:
            hosts.add(ANY)
            continue
        split = split_host(host) if isinstance(host, str) else None
        if split is None or split[1] is not None:
            raise ValueError(
                f"allowed_hosts holds host names without a port, like 'api.example.com' or "
                f"'127.0.0.1' (or '*' for any); got {host!r}"
            )
        hosts.add(split[0])
    return frozenset(hosts)


def _origin_set(value: Collection[str] | None) -> frozenset[str]:
    return origin_list(value, "allowed_origins") or frozenset()


def _same_origin(origin: str, host: str | None) -> bool:
    """Whether a page of `origin` is the server itself, as the request's `Host` names it."""
    if host is None:
        return False
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    served = split_host(host)
    if served is None or not parts.hostname:
        return False
    default = _DEFAULT_PORTS.get(parts.scheme)
    return parts.hostname.rstrip(".") == served[0] and (origin_port or default) == (
        served[1] or default
    )


@attrs.frozen
class SitePolicy:
    """Which browser origins and which `Host` names a server takes requests from.

    Attributes:
        allowed_origins: Origins (`"https://app.example.com"`) whose pages may
            call the server besides its own; `"*"` allows every origin. A
            request without `Origin` (a program, not a browser) and a
            same-origin request (its `Origin` names the `Host` it was sent to)
            are always allowed.
        allowed_hosts: The host names the server answers to, without port
            (`"api.example.com"`, `"127.0.0.1"`); `"*"` allows any. None (the
            default) allows the loopback names (`localhost`, `127.0.0.1`,
            `[::1]`, `*.localhost`) for a request that arrived on a loopback
            address, and any name otherwise.
    """

    allowed_origins: frozenset[str] = attrs.field(default=frozenset(), converter=_origin_set)
    allowed_hosts: frozenset[str] | None = attrs.field(default=None, converter=_host_list)

    def lists(self, origin: str) -> bool:
        """Whether `origin` is one of `allowed_origins` (or they hold `"*"`): the
        pages that get CORS headers, besides being allowed."""
        allowed = self.allowed_origins
        return ANY in allowed or origin.strip().rstrip("/") in allowed

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """Whether a request with this `Origin`, sent to this `Host`, may run."""
        if origin is None:
            return True
        return self.lists(origin) or _same_origin(origin.strip(), host)

    def refuse_origin(self, origin: str | None, host: str | None) -> Forbidden | None:
        """The error that refuses a request from `origin`, or None when it may run."""
        if self.origin_allowed(origin, host):
            return None
        return Forbidden(
            f"a page of origin {origin!r} may not call this backend: add it to the "
            "server's allowed origins if it should",
            details={"origin": origin},
        )

    def refuse_host(self, host: str | None, local_address: str | None) -> InvalidRequest | None:
        """The error that refuses a request for `host`, or None when it may run.

        Args:
            host: The request's `Host` header, or None when it sent none.
            local_address: The address the request arrived on (the server's
                end of the connection), or None when unknown.
        """
        allowed = self.allowed_hosts
        if allowed is not None and ANY in allowed:
            return None
        if allowed is None and not (local_address is not None and is_loopback(local_address)):
            return None
        split = split_host(host) if host is not None else None
        if split is not None:
            name = split[0]
            if (name in allowed) if allowed is not None else is_loopback(name):
                return None
        served = (
            "loopback names (localhost, 127.0.0.1, [::1])"
            if allowed is None
            else ", ".join(sorted(allowed))
        )
        return InvalidRequest(
            f"this server does not answer to Host {host!r}: it serves {served}; set "
            "allowed_hosts on the server to serve another name",
            details={"field": "Host"},
        )


# ---------------------------------------------------------------------------
# Heartbeats inside the envelope


def ping_message(ping_id: int) -> bytes:
    """The envelope ping number `ping_id`: `{"t":"ping","id":7}`."""
    return b'{"t":"ping","id":%d}' % ping_id


def pong_message(ping_id: object) -> bytes:
    """The answer to a ping: `{"t":"pong","id":7}`, with the ping's id as it came."""
    return orjson.dumps({"t": "pong", "id": ping_id})


def heartbeat(data: bytes | str) -> tuple[str, object] | None:
    """`("ping", id)` or `("pong", id)` when `data` is a heartbeat envelope; None otherwise.

    Its callers look only at short messages that may be one (a heartbeat is
    some 20 bytes): every other message is the runtime's to decode.
    """
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if type(message) is dict:
        kind = message.get("t")
        if kind == "ping" or kind == "pong":
            return kind, message.get("id")
    return None
