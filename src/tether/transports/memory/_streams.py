"""In-process message streams: a pair of Trio memory channels, or, between two
Trio runs in two threads, a credit-based pair that crosses with
`TrioToken.run_sync_soon`.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import trio

from ...runtime import ConnectionClosed, MessageStream, PayloadTooLarge

#: Default limit of one encoded message, in bytes (16 MiB).
__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "ThreadStream", "stream_pair"]

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Messages a side may have sent and the other not yet received.
_BUFFER = 256
#: Credits a thread-mode receiver returns at once.
_CREDIT_BATCH = _BUFFER // 4


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


class _ChannelStream(MessageStream):
    """One end of a same-loop pair: a memory channel each way."""

    __slots__ = ("_closed", "_receive", "_send", "max_message_size")

    def __init__(
        self,
        send: trio.MemorySendChannel[bytes],
        receive: trio.MemoryReceiveChannel[bytes],
        max_message_size: int,
        closed: _CloseReason,
    ) -> None:
        self._send = send
        self._receive = receive
        self._closed = closed
        self.max_message_size = max_message_size

    async def send_message(self, data: bytes) -> None:
        if len(data) > self.max_message_size:
            raise _too_large(len(data), self.max_message_size)
        try:
            # Buffered without a yield when there is room: the caller is about to
            # block on its reply anyway, and the extra scheduling round this
            # saves is a large part of an in-process call's cost.
            self._send.send_nowait(data)
        except trio.WouldBlock:
            await self._send_blocking(data)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._closed.error() from None

    async def _send_blocking(self, data: bytes) -> None:
        try:
            await self._send.send(data)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._closed.error() from None

    async def receive_message(self) -> bytes:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed.error() from None

    async def aclose(self, reason: str | None = None) -> None:
        self._closed.set(reason)
        self._send.close()
        self._receive.close()
        await trio.lowlevel.cancel_shielded_checkpoint()


class ThreadStream(MessageStream):
    """One end of a cross-thread pair; it lives in one Trio run, its peer in another."""

    __slots__ = (
        "_closed",
        "_consumed",
        "_credits",
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

    def __init__(self, lock: threading.Lock, max_message_size: int, reason: _CloseReason) -> None:
        self._lock = lock
        self._reason = reason  # shared with the peer; written under the lock
        self._inbox_send, self._inbox = trio.open_memory_channel[bytes](_BUFFER)
        # Messages we may send before the peer says it received some: the
        # peer's inbox has room for exactly that many, so delivery never blocks.
        self._credits = _BUFFER
        # Received messages whose credit is not yet returned to the peer.
        self._consumed = 0
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
    def _deliver(self, data: bytes) -> None:
        # After we closed, a message is dropped, as on any closed connection.
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._inbox_send.send_nowait(data)

    def _credit(self, count: int) -> None:
        self._credits += count
        self._lot.unpark_all()

    def _on_peer_closed(self) -> None:
        self._closed = True
        self._inbox_send.close()  # receives drain what arrived, then see the close
        self._lot.unpark_all()

    async def send_message(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        if len(data) > self.max_message_size:
            raise _too_large(len(data), self.max_message_size)
        while self._credits == 0 and not self._closed:
            await self._lot.park()
        if self._closed:
            raise self._reason.error()
        self._credits -= 1
        peer = self._peer
        assert peer is not None
        if not self._to_peer(peer._deliver, data):
            # The peer's run has ended; if it closed with a reason, that is the news.
            with self._lock:
                self._reason.set("the other thread's Trio run has ended")
            self._on_peer_closed()
            raise self._reason.error()

    async def receive_message(self) -> bytes:
        try:
            data = await self._inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._reason.error() from None
        # Credits go back in batches: each return wakes the peer's loop, and one
        # wake per message would double the cross-thread traffic. No deadlock:
        # when the peer has no credit left, fewer than a batch are held here and
        # the rest of the window is still in our inbox, to be received.
        self._consumed += 1
        if self._consumed >= _CREDIT_BATCH:
            peer = self._peer
            assert peer is not None
            self._to_peer(peer._credit, self._consumed)
            self._consumed = 0
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
    *, thread: bool = False, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> tuple[MessageStream, MessageStream]:
    """Return two connected in-process MessageStreams.

    Args:
        thread: Make a pair whose ends live in different Trio runs (threads).
            Each end must then be `attach()`-ed from the run that uses it.
        max_message_size: Largest message either end sends, in bytes.
    """
    if thread:
        lock = threading.Lock()
        reason = _CloseReason()
        a = ThreadStream(lock, max_message_size, reason)
        b = ThreadStream(lock, max_message_size, reason)
        a._peer, b._peer = b, a
        return a, b
    a_send, b_receive = trio.open_memory_channel[bytes](_BUFFER)
    b_send, a_receive = trio.open_memory_channel[bytes](_BUFFER)
    closed = _CloseReason()
    return (
        _ChannelStream(a_send, a_receive, max_message_size, closed),
        _ChannelStream(b_send, b_receive, max_message_size, closed),
    )
