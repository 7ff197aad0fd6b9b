"""In-process message streams: a pair of Trio memory channels, or, between two
Trio runs in two threads, a credit-based pair that crosses with
`TrioToken.run_sync_soon`.

Each direction holds at most `_BUFFER` messages and `max_buffer_bytes` bytes
sent and not yet received; a sender waits for room. A single message larger
than the byte bound still passes, alone.

Both ends are tether's, so both take binary: a `BinaryMessage` crosses as the
object, its attachments the sender's own bytes objects (no copy, no encoding).
Its size, for the bounds, is its frame's (`message_size`).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, NoReturn, TypeAlias

import trio

from ...runtime import ConnectionClosed, MessageStream, PayloadTooLarge
from ...runtime._protocol import BinaryMessage, message_size
from ...runtime._util import check_positive_int

__all__ = ["DEFAULT_MAX_BUFFER_BYTES", "DEFAULT_MAX_MESSAGE_SIZE", "ThreadStream", "stream_pair"]

#: Default limit of one encoded message, in bytes (16 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Default bound of the bytes a side may have sent and the other not yet received (1 MiB).
DEFAULT_MAX_BUFFER_BYTES = 1024 * 1024
#: Messages a side may have sent and the other not yet received.
_BUFFER = 256
#: Credits a thread-mode receiver returns at once.
_CREDIT_BATCH = _BUFFER // 4

_Message: TypeAlias = bytes | BinaryMessage


def _size(data: _Message) -> int:
    return len(data) if type(data) is bytes else message_size(data)


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"message of {size} bytes is over the in-process limit of {limit}: raise "
        "max_message_size or send less at once"
    )


class _CloseReason:
    """Why a pair was closed: the first close's reason, shared by both ends."""

    __slots__ = ("reason",)

    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str | None) -> None:
        if self.reason is None:
            self.reason = reason or "closed"

    def error(self) -> ConnectionClosed:
        reason = self.reason or "closed"
        return ConnectionClosed(f"in-process connection closed: {reason}", reason=reason)


class _Window:
    """One direction of a same-loop pair: the bytes sent and not yet received."""

    __slots__ = ("held", "limit", "lot", "waiting")

    def __init__(self, limit: int) -> None:
        self.held = 0
        self.limit = limit
        self.lot = trio.lowlevel.ParkingLot()  # senders waiting for room
        # How many: read on every receive, where asking the lot costs more.
        self.waiting = 0

    def full(self, size: int) -> bool:
        return self.held > 0 and self.held + size > self.limit


class _ChannelStream(MessageStream):
    """One end of a same-loop pair: a memory channel each way."""

    __slots__ = ("_closed", "_in", "_out", "_receive", "_send", "max_message_size")

    binary = True

    def __init__(
        self,
        send: trio.MemorySendChannel[_Message],
        receive: trio.MemoryReceiveChannel[_Message],
        max_message_size: int,
        closed: _CloseReason,
        out: _Window,
        into: _Window,
    ) -> None:
        self._send = send
        self._receive = receive
        self._closed = closed
        self._out = out  # what we sent; shared with the peer, which receives it
        self._in = into
        self.max_message_size = max_message_size

    async def send_message(self, data: _Message) -> None:
        size = len(data) if type(data) is bytes else message_size(data)
        if size > self.max_message_size:
            raise _too_large(size, self.max_message_size)
        out = self._out
        if out.held and out.held + size > out.limit:
            await self._wait_for_room(size)
        out.held += size
        try:
            # Buffered without a yield when there is room: the caller is about to
            # block on its reply anyway, and the extra scheduling round this
            # saves is a large part of an in-process call's cost.
            self._send.send_nowait(data)
        except trio.WouldBlock:
            await self._send_blocking(data)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            out.held -= size
            raise self._closed.error() from None

    async def _wait_for_room(self, size: int) -> None:
        out = self._out
        while out.full(size):
            if self._closed.reason is not None:
                raise self._closed.error()
            out.waiting += 1
            try:
                await out.lot.park()
            finally:
                out.waiting -= 1

    async def _send_blocking(self, data: _Message) -> None:
        try:
            await self._send.send(data)
        except BaseException as exc:
            self._out.held -= _size(data)  # not sent after all
            if isinstance(exc, (trio.ClosedResourceError, trio.BrokenResourceError)):
                raise self._closed.error() from None
            raise

    async def receive_message(self) -> _Message:
        try:
            data = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed.error() from None
        into = self._in
        into.held -= len(data) if type(data) is bytes else message_size(data)
        if into.waiting:
            into.lot.unpark_all()
        return data

    async def aclose(self, reason: str | None = None) -> None:
        self._closed.set(reason)
        self._send.close()
        self._receive.close()
        # Senders waiting for room, on either end, see the close.
        self._out.lot.unpark_all()
        self._in.lot.unpark_all()
        await trio.lowlevel.cancel_shielded_checkpoint()


class ThreadStream(MessageStream):
    """One end of a cross-thread pair; it lives in one Trio run, its peer in another."""

    __slots__ = (
        "_byte_limit",
        "_closed",
        "_consumed",
        "_consumed_bytes",
        "_credit_wanted",
        "_credits",
        "_in_flight",
        "_inbox",
        "_inbox_send",
        "_lock",
        "_lot",
        "_peer",
        "_peer_gone",
        "_reason",
        "_token",
        "max_message_size",
    )

    binary = True

    def __init__(
        self,
        lock: threading.Lock,
        max_message_size: int,
        reason: _CloseReason,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
    ) -> None:
        self._lock = lock
        self._reason = reason  # shared with the peer; written under the lock
        self._inbox_send, self._inbox = trio.open_memory_channel[_Message](_BUFFER)
        # Messages we may send before the peer says it received some: the
        # peer's inbox has room for exactly that many, so delivery never blocks.
        self._credits = _BUFFER
        # Bytes sent whose credit the peer has not returned, and their bound.
        self._in_flight = 0
        self._byte_limit = max_buffer_bytes
        # Received messages (and their bytes) whose credit is not yet returned.
        self._consumed = 0
        self._consumed_bytes = 0
        # The peer waits for credit: return it at the next receive.
        self._credit_wanted = False
        self._lot = trio.lowlevel.ParkingLot()
        self._token: trio.lowlevel.TrioToken | None = None
        self._peer: ThreadStream | None = None
        self._peer_gone = False
        self._closed = False
        self.max_message_size = max_message_size

    def attach(self) -> None:
        """Bind this end to the Trio run it is used in. Call once, from that run."""
        with self._lock:
            self._token = trio.lowlevel.current_trio_token()
            gone = self._peer_gone
        if gone:
            self._on_peer_closed()

    def _to_peer(self, fn: Any, *args: Any) -> bool:
        """Run `fn(*args)` in the peer's loop; False when the peer has no loop now."""
        peer = self._peer
        assert peer is not None
        token = peer._token
        if token is None:
            return False
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            return False
        return True

    # These run in this end's own loop, scheduled by the peer.
    def _deliver(self, data: _Message) -> None:
        # After we closed, a message is dropped, as on any closed connection.
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._inbox_send.send_nowait(data)

    def _credit(self, count: int, size: int) -> None:
        self._credits += count
        self._in_flight -= size
        self._lot.unpark_all()

    def _want_credit(self) -> None:
        # The peer cannot send until it gets credit back: return what we
        # hold now, or at the next receive (what it sent is in our inbox).
        if self._consumed:
            self._return_credit()
        else:
            self._credit_wanted = True

    def _return_credit(self) -> None:
        peer = self._peer
        assert peer is not None
        self._to_peer(peer._credit, self._consumed, self._consumed_bytes)
        self._consumed = 0
        self._consumed_bytes = 0
        self._credit_wanted = False

    def _on_peer_closed(self) -> None:
        self._closed = True
        self._inbox_send.close()  # receives drain what arrived, then see the close
        self._lot.unpark_all()

    async def send_message(self, data: _Message) -> None:
        await trio.lowlevel.checkpoint()
        size = _size(data)
        if size > self.max_message_size:
            raise _too_large(size, self.max_message_size)
        peer = self._peer
        assert peer is not None
        while not self._closed and (
            self._credits == 0 or (self._in_flight and self._in_flight + size > self._byte_limit)
        ):
            # Out of bytes (not of messages: those come back in batches as the
            # peer reads its inbox), ask for what the peer holds; again each
            # time, since a credit may come back that is not yet enough.
            if self._credits and not self._to_peer(peer._want_credit):
                self._peer_run_ended()
            await self._lot.park()
        if self._closed:
            raise self._reason.error()
        self._credits -= 1
        self._in_flight += size
        if not self._to_peer(peer._deliver, data):
            self._peer_run_ended()

    def _peer_run_ended(self) -> NoReturn:
        # The peer's run has ended; if it closed with a reason, that is the news.
        with self._lock:
            self._reason.set("the other thread's Trio run has ended")
        self._on_peer_closed()
        raise self._reason.error()

    async def receive_message(self) -> _Message:
        try:
            data = await self._inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._reason.error() from None
        # Credits go back in batches: each return wakes the peer's loop, and one
        # wake per message would double the cross-thread traffic. No deadlock:
        # a peer that must wait for credit asks for it (`_want_credit`), and
        # what it sent is either received here or still in our inbox.
        self._consumed += 1
        self._consumed_bytes += _size(data)
        if (
            self._consumed >= _CREDIT_BATCH
            or self._consumed_bytes >= self._byte_limit >> 2
            or self._credit_wanted
        ):
            self._return_credit()
        return data

    async def aclose(self, reason: str | None = None) -> None:
        if not self._closed:
            self._closed = True
            self._lot.unpark_all()
            peer = self._peer
            assert peer is not None
            with self._lock:
                self._reason.set(reason)
                if peer._token is None:
                    peer._peer_gone = True  # it will see the close when it attaches
                else:
                    self._to_peer(peer._on_peer_closed)
        self._inbox.close()
        await trio.lowlevel.cancel_shielded_checkpoint()


def stream_pair(
    *,
    thread: bool = False,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
) -> tuple[MessageStream, MessageStream]:
    """Return two connected in-process MessageStreams.

    Args:
        thread: Make a pair whose ends live in different Trio runs (threads).
            Each end must then be `attach()`-ed from the run that uses it.
        max_message_size: Largest message either end sends, in bytes.
        max_buffer_bytes: Bytes each direction may hold, sent and not yet
            received (besides its bound of 256 messages); a sender waits for
            room. A single larger message still passes, alone.

    Raises:
        ValueError: a limit is not a positive int.
    """
    check_positive_int("max_message_size", max_message_size)
    check_positive_int("max_buffer_bytes", max_buffer_bytes)
    if thread:
        lock = threading.Lock()
        reason = _CloseReason()
        a = ThreadStream(lock, max_message_size, reason, max_buffer_bytes)
        b = ThreadStream(lock, max_message_size, reason, max_buffer_bytes)
        a._peer, b._peer = b, a
        return a, b
    a_send, b_receive = trio.open_memory_channel[_Message](_BUFFER)
    b_send, a_receive = trio.open_memory_channel[_Message](_BUFFER)
    closed = _CloseReason()
    a_to_b, b_to_a = _Window(max_buffer_bytes), _Window(max_buffer_bytes)
    return (
        _ChannelStream(a_send, a_receive, max_message_size, closed, a_to_b, b_to_a),
        _ChannelStream(b_send, b_receive, max_message_size, closed, b_to_a, a_to_b),
    )
