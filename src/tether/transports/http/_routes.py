"""The routes of the HTTP app: which one a path names, and the methods each takes."""

from __future__ import annotations

from typing import NamedTuple

from ...runtime import NotFound

__all__ = [
    "GET",
    "IPC_EVENTS",
    "IPC_OPEN",
    "IPC_SESSION",
    "OPERATION",
    "RPC",
    "RPC_CACHEABLE",
    "Route",
    "not_found",
    "route_for",
]


class Route(NamedTuple):
    """A kind of route, and the methods it takes: its `Allow` header."""

    kind: str
    allow: str
    methods: frozenset[str]


def taking(kind: str, *methods: str) -> Route:
    # OPTIONS is answered on every route (with CORS headers for a listed origin).
    methods = (*methods, "OPTIONS")
    return Route(kind, ", ".join(methods), frozenset(methods))


RPC = taking("rpc", "POST")
RPC_CACHEABLE = taking("rpc", "GET", "HEAD", "POST")
GET = taking("get", "GET", "HEAD")
IPC_OPEN = taking("ipc", "POST")
IPC_SESSION = taking("ipc", "POST", "DELETE")
IPC_EVENTS = taking("ipc", "GET")
OPERATION = taking("operation", "GET", "DELETE")


def route_for(parts: list[str], *, ipc: bool) -> Route | None:
    """Which route the path's segments after the prefix name, if any.

    `ipc`: the app serves IPC (else `ipc/...` names nothing).
    """
    if parts[0] == "ipc":
        if ipc:
            if len(parts) == 1:
                return IPC_OPEN
            if len(parts) == 2:
                return IPC_SESSION
            if len(parts) == 3 and parts[2] == "events":
                return IPC_EVENTS
    elif len(parts) == 3:
        return RPC
    elif len(parts) == 2 and parts[0] == "operations":
        return OPERATION
    elif len(parts) == 1 and parts[0] in ("", "health", "openapi.json"):
        return GET
    return None


def not_found(path: str, parts: list[str] | None, prefix: str, *, ipc: bool) -> NotFound:
    """The error for a path no route names."""
    if parts is None:
        return NotFound(f"nothing is served at {path}")
    if parts[0] == "ipc" and not ipc:
        return NotFound("this backend serves no IPC")
    return NotFound(
        f"nothing is served at {path}: RPC calls are POST "
        f"{prefix}/<interface>/<version>/<operation>"
    )
