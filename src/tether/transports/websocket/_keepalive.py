"""`Pinger`: one task that keeps every connection of a server alive.

A keepalive task per connection sleeps for most of its life, and costs its
connection a task, a cancel scope and a timer: about 3 KiB of the server's
memory per idle session (`bench.sessions`). One task per server does the same
work: it holds the connections in the order their next ping is due (the
interval is the same for all, so a connection added or pinged last is due
last), sleeps until the first is due, and starts that connection's ping in
the connection's own nursery. A ping task lives only for one round trip;
when the peer answers, the connection is due again one interval later. A
peer that does not answer within the timeout is closed (1011) by the ping,
as the connection's own keepalive would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._streams import WebSocketStream

__all__ = ["Pinger"]


class Pinger:
    """Pings the connections added to it every `interval` seconds, from `run`'s one task.

    Args:
        interval: Seconds from a connection's opening, or its last answer, to its next ping.
        answer_within: Seconds a peer has to answer a ping before its connection is closed.
    """

    __slots__ = ("_answer_within", "_due", "_interval", "_pinging", "_wake")

    def __init__(self, interval: float, answer_within: float) -> None:
        self._interval = interval
        self._answer_within = answer_within
        # The connections waiting for their next ping, first due first, with
        # when it is due and the nursery that owns the connection's tasks.
        self._due: dict[WebSocketStream, tuple[float, trio.Nursery]] = {}
        # The connections whose ping is under way (their task owns them meanwhile).
        self._pinging: set[WebSocketStream] = set()
        self._wake = trio.lowlevel.ParkingLot()  # `run`, while there is nothing to ping

    def add(self, stream: WebSocketStream, nursery: trio.Nursery) -> None:
        """Ping `stream` from now on, the first time in one interval.

        `nursery` owns the connection's tasks: the pings run there, so that
        they end with the connection. Call `remove` before that nursery closes.
        """
        self._due[stream] = (trio.current_time() + self._interval, nursery)
        if self._wake:
            self._wake.unpark()

    def remove(self, stream: WebSocketStream) -> None:
        """Stop pinging `stream` (a ping under way ends with its connection's nursery)."""
        self._due.pop(stream, None)
        self._pinging.discard(stream)

    async def run(self) -> None:
        """Ping each connection when it is due, until cancelled."""
        due = self._due
        while True:
            if not due:
                await self._wake.park()
                continue
            stream, (when, nursery) = next(iter(due.items()))
            if when > trio.current_time():
                # Anything added meanwhile is due later than this one.
                await trio.sleep_until(when)
                continue
            del due[stream]
            self._pinging.add(stream)
            try:
                nursery.start_soon(self._ping, stream, nursery)
            except RuntimeError:  # pragma: no cover - removed before its nursery closes
                self._pinging.discard(stream)

    async def _ping(self, stream: WebSocketStream, nursery: trio.Nursery) -> None:
        answered = await stream.ping_once(self._answer_within)
        if stream in self._pinging:
            self._pinging.discard(stream)
            if answered:
                self.add(stream, nursery)
