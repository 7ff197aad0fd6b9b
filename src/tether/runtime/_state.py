"""Connection state, for UIs that show "reconnecting..."."""

from __future__ import annotations

import enum

import trio

__all__ = ["ConnectionState", "StateWatch"]


class ConnectionState(enum.Enum):
    """Where a client's connection (or an IPC session) is.

    CONNECTED: calls go through. RECONNECTING: the connection was lost and
    is being made again; calls wait for it (within their deadline).
    CLOSED: for good, closed by this side or given up; calls fail.
    """

    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class StateWatch:
    """A connection state that tasks can wait to see change.

    CLOSED is final: setting another state after it does nothing.
    """

    __slots__ = ("_changed", "_state", "reason")

    def __init__(self, state: ConnectionState = ConnectionState.CONNECTED) -> None:
        self._state = state
        self._changed = trio.Event()
        #: Why the state last changed, in words for a user, when known.
        self.reason: str | None = None

    @property
    def state(self) -> ConnectionState:
        return self._state

    def set(self, state: ConnectionState, reason: str | None = None) -> None:
        """Move to `state` (waking the waiters) unless already there or CLOSED."""
        if state is self._state or self._state is ConnectionState.CLOSED:
            return
        self._state = state
        self.reason = reason
        self._changed.set()
        self._changed = trio.Event()

    async def wait_change(self, seen: ConnectionState | None = None) -> ConnectionState:
        """Wait until the state is not `seen` (the current one when None), and return it.

        Returns at once when it already differs from `seen`, so a loop that
        passes back what it last saw misses no change::

            state = backend.state
            while state is not tether.ConnectionState.CLOSED:
                state = await backend.wait_state_change(state)
                show(state)
        """
        if seen is None:
            seen = self._state
        if self._state is not seen:
            await trio.lowlevel.checkpoint()
        while self._state is seen:
            await self._changed.wait()
        return self._state
