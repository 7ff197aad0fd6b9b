"""What a call's span and metrics say about it (the OpenTelemetry RPC conventions)."""

from __future__ import annotations

from urllib.parse import urlsplit

import trio

from ..runtime import TetherError
from ..runtime._errors import remote_error_name

__all__ = [
    "CANCELLED",
    "OK",
    "is_server_fault",
    "peer_attributes",
    "status_code_of",
    "uuid_of_trace_id",
]

#: `rpc.tether.status_code` of a call that returned.
OK = "ok"
#: `rpc.tether.status_code` of a call cancelled by its caller (not an error).
CANCELLED = "cancelled"

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# The codes that say the server failed, rather than refused what the caller sent
# (the conventions' rule for server spans: a caller's mistake is not the server's
# error, as gRPC's INVALID_ARGUMENT or HTTP's 4xx). An application error is the
# impl's own exception, so it counts.
_SERVER_FAULTS = frozenset(
    {"internal", "application", "unavailable", "deadline-exceeded", "transport"}
)


def status_code_of(exc: BaseException) -> str:
    """The tether error code a call that raised `exc` ended with.

    A TetherError's own code; "application" for an exception registered with
    `tether.remote_error`; "cancelled" for a Trio cancellation; "internal" for
    any other exception (how the server reports it).
    """
    if isinstance(exc, TetherError):
        return exc.code
    if isinstance(exc, trio.Cancelled):
        return CANCELLED
    if remote_error_name(exc) is not None:
        return "application"
    return "internal"


def is_server_fault(code: str) -> bool:
    """Whether a server span that ended with `code` has status ERROR."""
    return code in _SERVER_FAULTS


def peer_attributes(peer: str | None, side: str) -> dict[str, str | int]:
    """`server.address`/`server.port` (client) or `network.peer.*` (server) of `peer`.

    A client's peer is the backend's URL (`http://host:port/prefix`, `ws://...`);
    a server's is the remote address (`host:port`). Anything that parses to no
    host (an in-process connection) gives no attributes.
    """
    if not peer:
        return {}
    try:
        parts = urlsplit(peer if "://" in peer else f"//{peer}")
        host, port = parts.hostname, parts.port
    except ValueError:  # a port out of range or not a number
        return {}
    if not host:
        return {}
    if port is None:
        port = _DEFAULT_PORTS.get(parts.scheme)
    prefix = "server" if side == "client" else "network.peer"
    found: dict[str, str | int] = {f"{prefix}.address": host}
    if port is not None:
        found[f"{prefix}.port"] = port
    return found


def uuid_of_trace_id(trace_id: int) -> str:
    """A trace id as an ActivityId: its 32 hex digits in UUID form (`8-4-4-4-12`)."""
    h = format(trace_id, "032x")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
