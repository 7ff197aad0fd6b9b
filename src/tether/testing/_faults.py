"""Fault injection: a message stream that drops, delays or cuts messages on command.

`faulty_streams()` makes every frontend connection opened in its block (RPC
and IPC, on every transport, reconnects included) speak through a
`FaultyStream`, so a test can break a real connection at the moment it
chooses::

    with tether.testing.faulty_streams() as faults:
        async with websocket.connect(url, interfaces=[Counter]) as backend:
            faults.latest.cut_after(1, match=b'"t":"call"')   # lose it once the call is out
            await backend.get_client(Counter).increment()      # raises CallMayHaveRun
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import trio

from ..runtime import BinaryMessage, ConnectionClosed, MessageStream
from ..runtime._faults import STREAM_WRAPPER

__all__ = ["FaultyStream", "FaultyStreams", "faulty_streams"]

Direction = Literal["send", "receive"]
Payload = bytes | str | BinaryMessage


def _matches(data: Payload, match: bytes | None) -> bool:
    if match is None:
        return True
    if isinstance(data, BinaryMessage):
        data = data.frame()
    if isinstance(data, str):
        return match.decode() in data
    return match in data


class _Rule:
    __slots__ = ("count", "match")

    def __init__(self, count: int, match: bytes | None) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self.count = count
        self.match = match

    def take(self, data: Payload) -> bool:
        """Whether this message is one the rule acts on (counting it down)."""
        if self.count <= 0 or not _matches(data, self.match):
            return False
        self.count -= 1
        return True


class FaultyStream(MessageStream):
    """A `MessageStream` that passes messages through until told to misbehave.

    Commands (each may be given while messages flow):

    - `drop(count, direction=, match=)`: lose the next `count` messages (that
      contain `match`, when given) going that way, silently.
    - `delay(seconds, direction=)`: hold every message going that way for
      `seconds` (0 stops delaying).
    - `cut(reason)`: break the connection now, as a reset would: the inner
      stream is closed, and both directions raise `ConnectionClosed`; a
      receive waiting for a message wakes to the loss at once, so an idle
      connection is seen lost (and made again, where the transport does) with
      no call to notice it.
    - `cut_after(count, direction=, match=)`: pass `count` more messages
      (matching `match`) that way, then cut. A send that passed its message
      returns normally (the message left whole); what follows fails.

    Attributes:
        sent: Messages this side sent (passed on, dropped excluded).
        received: Messages this side received (passed on, dropped excluded).
        dropped: Messages dropped, both ways.
        cuts: How many times it was cut (0 or 1).
    """

    __slots__ = (
        "_cut",
        "_cut_after",
        "_delays",
        "_drops",
        "_receiving",
        "cuts",
        "dropped",
        "inner",
        "received",
        "sent",
    )

    def __init__(self, inner: MessageStream) -> None:
        self.inner = inner
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.cuts = 0
        self._cut: str | None = None
        self._drops: dict[str, list[_Rule]] = {"send": [], "receive": []}
        self._cut_after: dict[str, list[_Rule]] = {"send": [], "receive": []}
        self._delays: dict[str, float] = {"send": 0.0, "receive": 0.0}
        # The scope of a receive waiting for a message, which `cut` wakes.
        self._receiving: trio.CancelScope | None = None

    # MessageStream's attributes, read through to the inner stream.
    @property
    def max_message_size(self) -> int:  # type: ignore[override]
        return self.inner.max_message_size

    @property
    def binary(self) -> bool:  # type: ignore[override]
        return self.inner.binary

    # -- commands ---------------------------------------------------------------

    def drop(
        self, count: int = 1, *, direction: Direction = "send", match: bytes | None = None
    ) -> None:
        """Lose the next `count` messages going `direction` (containing `match`)."""
        self._drops[direction].append(_Rule(count, match))

    def delay(self, seconds: float, *, direction: Direction = "send") -> None:
        """Hold each message going `direction` for `seconds` before passing it on."""
        if seconds < 0:
            raise ValueError(f"seconds must not be negative, got {seconds}")
        self._delays[direction] = seconds

    def cut_after(
        self, count: int = 1, *, direction: Direction = "send", match: bytes | None = None
    ) -> None:
        """Pass `count` more messages going `direction` (containing `match`), then cut."""
        self._cut_after[direction].append(_Rule(count, match))

    def cut(self, reason: str = "cut by FaultyStream") -> None:
        """Break the connection now; both directions fail with `ConnectionClosed`.

        A receive waiting for a message wakes at once, closes the inner
        stream and raises; otherwise the inner stream is closed by the next
        operation on this one. A peer sees the connection lost, as after a reset.
        """
        if self._cut is None:
            self._cut = reason
            self.cuts += 1
            if self._receiving is not None:
                self._receiving.cancel()

    @property
    def is_cut(self) -> bool:
        return self._cut is not None

    # -- MessageStream ------------------------------------------------------------

    def _check(self) -> None:
        if self._cut is not None:
            raise ConnectionClosed(f"connection lost ({self._cut})", reason=self._cut)

    async def _close_if_cut(self) -> None:
        if self._cut is not None:
            await self.inner.aclose(self._cut)
            self._check()

    def _passes(self, direction: Direction, data: Payload) -> bool:
        for rule in self._drops[direction]:
            if rule.take(data):
                self.dropped += 1
                return False
        return True

    def _cuts_after(self, direction: Direction, data: Payload) -> bool:
        return any(rule.take(data) for rule in self._cut_after[direction])

    async def send_message(self, data: bytes | BinaryMessage) -> None:
        await self._close_if_cut()
        if self._delays["send"]:
            await trio.sleep(self._delays["send"])
            await self._close_if_cut()
        if not self._passes("send", data):
            await trio.lowlevel.checkpoint()
            return
        await self.inner.send_message(data)
        self.sent += 1
        if self._cuts_after("send", data):
            # The message went out whole, so this send succeeds, as a real one
            # does when the connection breaks just after: the loss shows on
            # the next operation (the reader's, usually).
            self.cut(f"cut by FaultyStream after sending message {self.sent}")
            await self.inner.aclose(self._cut)

    async def receive_message(self) -> bytes | str | BinaryMessage:
        while True:
            await self._close_if_cut()
            # Cancelled by `cut` only: what the inner stream held is lost with it.
            try:
                with trio.CancelScope() as self._receiving:
                    data = await self.inner.receive_message()
            finally:
                self._receiving = None
            await self._close_if_cut()
            if self._delays["receive"]:
                await trio.sleep(self._delays["receive"])
                await self._close_if_cut()
            if not self._passes("receive", data):
                continue
            self.received += 1
            if self._cuts_after("receive", data):
                # The message is lost with the connection: it never reaches the reader.
                self.cut(f"cut by FaultyStream on receiving message {self.received}")
                await self._close_if_cut()
            return data

    async def aclose(self, reason: str | None = None) -> None:
        await self.inner.aclose(reason)

    async def refuse(self, message: bytes, error_code: str, reason: str) -> None:
        await self.inner.refuse(message, error_code, reason)


class FaultyStreams:
    """The `FaultyStream`s made in a `faulty_streams()` block, oldest first."""

    __slots__ = ("_opened", "streams")

    def __init__(self) -> None:
        self.streams: list[FaultyStream] = []
        self._opened = trio.Event()

    @property
    def latest(self) -> FaultyStream:
        """The stream of the connection opened last.

        Raises:
            LookupError: no connection was opened in the block yet.
        """
        if not self.streams:
            raise LookupError("no frontend connection was opened in this faulty_streams() block")
        return self.streams[-1]

    async def wait_opened(self, count: int) -> FaultyStream:
        """Wait until `count` connections were opened in the block (a reconnect
        makes one more), and return the latest."""
        while len(self.streams) < count:
            await self._opened.wait()
        return self.streams[-1]

    def _wrap(self, stream: MessageStream) -> MessageStream:
        faulty = FaultyStream(stream)
        self.streams.append(faulty)
        self._opened.set()
        self._opened = trio.Event()
        return faulty


@contextlib.contextmanager
def faulty_streams() -> Iterator[FaultyStreams]:
    """Make every frontend connection opened in the block speak through a `FaultyStream`.

    It applies to connections opened in this task and in tasks it starts in
    the block (a reconnecting client's reconnects included), on every
    transport: memory, WebSocket, local, and IPC over HTTP.
    """
    streams = FaultyStreams()
    token = STREAM_WRAPPER.set(streams._wrap)
    try:
        yield streams
    finally:
        STREAM_WRAPPER.reset(token)
