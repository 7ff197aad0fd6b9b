"""A server's graceful shutdown, as the sessions it serves take part in it.

A server that drains stops taking new sessions, and tells each open one
(`Drain.begin`): an RPC session or IPC session then refuses every call read
from that moment with `Unavailable` (callers retry elsewhere or later), lets
the calls already running answer, and ends once none runs, closing its stream
with the server's reason. The server bounds the wait by ending the sessions
still open when its grace period is over.
"""

from __future__ import annotations

from typing import Any

from ._errors import Unavailable
from ._workers import Workers

__all__ = ["SHUTTING_DOWN", "Drain", "shutting_down_error"]

#: The reason a draining server gives its sessions as it closes them.
SHUTTING_DOWN = "the server is shutting down"


def shutting_down_error() -> Unavailable:
    """The refusal of a call read while the server drains: certainly not run, retry soon."""
    return Unavailable(
        "this backend is shutting down and takes no new calls: retry shortly (on another "
        "backend, or on this one once it is back)",
        retry_after=1,
    )


class Drain:
    """The sessions of one server, and whether it has begun to shut down."""

    __slots__ = ("_sessions", "draining")

    def __init__(self) -> None:
        self.draining = False
        self._sessions: set[Workers[Any]] = set()

    def begin(self) -> None:
        """Drain every session open now, and every one that joins from now on."""
        self.draining = True
        for session in list(self._sessions):
            session.begin_drain()

    def join(self, session: Workers[Any]) -> None:
        """`session` drains with the server (at once if it drains already)."""
        self._sessions.add(session)
        if self.draining:
            session.begin_drain()

    def leave(self, session: Workers[Any]) -> None:
        """`session` has ended."""
        self._sessions.discard(session)
