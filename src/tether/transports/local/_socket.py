"""A MessageStream over a connected Unix domain socket: length-prefixed frames.

Each message is a frame: a 4-byte big-endian length, then that many bytes: a
JSON message (its first byte is `{`), or a binary message's frame
(`BinaryMessage`: its first byte is 0, the top byte of its envelope's
length). A length with its top bit set is a close frame: the rest of it is
the length of the close's reason (UTF-8), which the peer's receives raise as
`ConnectionClosed`. The socket is used directly in non-blocking mode: a send
the kernel takes at once and a receive already buffered do not yield, which
is most of what makes this transport faster than a loopback TCP one.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from collections.abc import Awaitable, Callable

import trio

from ...runtime import ConnectionClosed, MessageStream, PayloadTooLarge
from ...runtime._protocol import BinaryMessage

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "SocketStream"]

#: Default limit of one encoded message, in bytes (16 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: The top bit of a frame's length: set on a close frame.
_CLOSE = 0x8000_0000
#: The longest message a frame can carry; a larger `max_message_size` is refused.
MAX_FRAME = _CLOSE - 1
#: A close reason's limit, in bytes of UTF-8 (as a WebSocket close frame's).
_MAX_REASON = 123
#: Seconds `aclose` waits for room to send its close frame to a peer that reads slowly.
CLOSE_TIMEOUT = 5.0
#: Below this many bytes a frame's header and body are joined for one `send`;
#: above, they go together with `sendmsg` (no copy of the body).
_JOIN_BELOW = 64 * 1024
#: The most pieces one `sendmsg` is given (the kernel's IOV_MAX is 1024);
#: a binary message in more is joined first.
_MAX_PARTS = 64
#: Bytes asked of the kernel per read.
_READ_SIZE = 64 * 1024
#: Messages handed out from the buffer without waiting before a receive
#: yields anyway, so a peer that floods the socket cannot starve the loop.
_YIELD_EVERY = 64

_header = struct.Struct(">I")
_pack = _header.pack
_unpack_from = _header.unpack_from

#: Errors that mean the peer is gone.
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def too_large(size: int, limit: int) -> PayloadTooLarge:
    """The error for a message over the local transport's limit."""
    return PayloadTooLarge(
        f"message of {size} bytes is over the local socket's limit of {limit}: raise "
        "max_message_size (on both sides) or send less at once"
    )


class SocketStream(MessageStream):
    """One end of a local connection; owns the socket and closes it.

    Args:
        sock: A connected `AF_UNIX` stream socket; made non-blocking here.
        max_message_size: The largest message either way; a larger frame from
            the peer closes the connection ("message too big").
        name: What the connection is, for errors ("local socket /run/x.sock").
        lost: Called when the peer hangs up without a close frame; returns
            words for why (a spawned backend's exit status), or None.
    """

    __slots__ = (
        "_buffer",
        "_closed",
        "_closing",
        "_lost",
        "_name",
        "_pushed",
        "_reason",
        "_send_lot",
        "_sending",
        "_sock",
        "_unyielded",
        "max_message_size",
    )

    binary = True  # both ends are tether's: binary messages go as binary frames

    def __init__(
        self,
        sock: socket.socket,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        *,
        name: str = "local socket",
        lost: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self.max_message_size = max_message_size
        self._name = name
        self._lost = lost
        self._buffer = bytearray()
        self._pushed: bytes | None = None
        self._closed = False
        self._closing = False  # aclose is sending the close frame: no more messages
        self._reason: str | None = None  # why it closed, once it has
        self._sending = False  # a send is part way out: later ones queue
        self._send_lot = trio.lowlevel.ParkingLot()
        self._unyielded = 0

    @property
    def socket(self) -> socket.socket:
        """The underlying socket (for its peer credentials)."""
        return self._sock

    # -- sending ------------------------------------------------------------

    async def send_message(self, data: bytes | BinaryMessage) -> None:
        if type(data) is not bytes:
            await self._send_binary(data)  # type: ignore[arg-type]
            return
        size = len(data)
        if size > self.max_message_size:
            raise too_large(size, self.max_message_size)
        if self._closed or self._closing:
            raise self._error()
        if self._sending or self._send_lot:
            await self._send_in_turn(_pack(size) + data)
            return
        header = _pack(size)
        frame = header + data if size < _JOIN_BELOW else None
        try:
            sent = (
                self._sock.send(frame) if frame is not None else self._sock.sendmsg([header, data])
            )
        except BlockingIOError:
            sent = 0
        except _GONE:
            raise self._peer_gone() from None
        except OSError as exc:
            raise self._os_error(exc) from None
        if sent < size + 4:
            await self._finish(frame if frame is not None else header + data, sent)

    async def _send_binary(self, message: BinaryMessage) -> None:
        # The binary frame is this frame's body (its first byte is 0, where a
        # JSON body has `{`): written with its attachments in one `sendmsg`,
        # without joining them.
        size = message.size
        if size > self.max_message_size:
            raise too_large(size, self.max_message_size)
        if self._closed or self._closing:
            raise self._error()
        parts = [_pack(size), *message.chunks()]
        if self._sending or self._send_lot or len(parts) > _MAX_PARTS:
            await self._send_in_turn(b"".join(parts))
            return
        try:
            sent = self._sock.sendmsg(parts)
        except BlockingIOError:
            sent = 0
        except _GONE:
            raise self._peer_gone() from None
        except OSError as exc:
            raise self._os_error(exc) from None
        if sent < size + 4:
            await self._finish(b"".join(parts), sent)

    async def _send_in_turn(self, frame: bytes) -> None:
        # Another send is part way out; messages go whole and in order.
        while self._sending:
            await self._send_lot.park()
            if self._closed or self._closing:
                # Pass the turn on: `aclose` may be parked behind us, waiting
                # to send its close frame.
                self._send_lot.unpark()
                raise self._error()
        await self._finish(frame, 0)

    async def _finish(self, frame: bytes, sent: int) -> None:
        """Send the rest of `frame`, waiting for room; later sends wait their turn."""
        self._sending = True
        view = memoryview(frame)
        try:
            while sent < len(frame):
                try:
                    await trio.lowlevel.wait_writable(self._sock)
                except trio.ClosedResourceError:
                    raise self._error() from None
                try:
                    sent += self._sock.send(view[sent:])
                except BlockingIOError:
                    continue
                except _GONE:
                    raise self._peer_gone() from None
                except OSError as exc:
                    raise self._os_error(exc) from None
        except BaseException:
            if sent:
                # Part of a frame went out: the stream cannot go on (the peer
                # would read the next frame's bytes as this one's rest).
                self.close_now("a message was cut off part way")
            raise
        finally:
            self._sending = False
            self._send_lot.unpark()

    # -- receiving ----------------------------------------------------------

    def push_back(self, data: bytes) -> None:
        """Make `data` the next message received (a server's peeked hello)."""
        self._pushed = data

    async def receive_message(self) -> bytes:
        pushed = self._pushed
        if pushed is not None:
            self._pushed = None
            await trio.lowlevel.checkpoint()
            return pushed
        self._unyielded += 1
        if self._unyielded >= _YIELD_EVERY:
            # Reset by every wait for the socket: only a run of receives that
            # never waited (a peer flooding us) gets here.
            self._unyielded = 0
            await trio.lowlevel.checkpoint()
        buffer = self._buffer
        if not buffer:
            # The common case: nothing buffered, so read; a small message
            # usually arrives whole in one read.
            chunk = await self._read()
            if len(chunk) >= 4:
                (size,) = _unpack_from(chunk)
                if size == len(chunk) - 4 and size <= self.max_message_size:
                    return chunk[4:]
            buffer += chunk
        while True:
            if len(buffer) >= 4:
                (size,) = _unpack_from(buffer)
                if size & _CLOSE:
                    await self._closed_by_peer(size & ~_CLOSE)
                if size > self.max_message_size:
                    reason = f"message too big: {size} bytes, the limit is {self.max_message_size}"
                    self.close_now(reason)
                    raise ConnectionClosed(f"{self._name} closed: {reason}", reason=reason)
                end = size + 4
                if len(buffer) >= end:
                    data = bytes(buffer[4:end])
                    del buffer[:end]
                    return data
            buffer += await self._read()

    async def _read(self) -> bytes:
        """Read what the kernel has, waiting for it; EOF raises ConnectionClosed."""
        sock = self._sock
        while True:
            if self._closed:
                raise self._error()
            try:
                chunk = sock.recv(_READ_SIZE)
            except BlockingIOError:
                self._unyielded = 0
                try:
                    await trio.lowlevel.wait_readable(sock)
                except trio.ClosedResourceError:
                    raise self._error() from None
                continue
            except _GONE:
                chunk = b""
            except OSError as exc:
                raise self._os_error(exc) from None
            if not chunk:
                raise await self._hung_up()
            return chunk

    async def _closed_by_peer(self, length: int) -> None:
        if length > _MAX_REASON:
            # No close frame of ours says more; waiting for (and buffering)
            # whatever a broken or hostile peer claims would have no bound.
            reason = f"a close frame with a {length}-byte reason, over the {_MAX_REASON} allowed"
            self.close_now(reason)
            raise ConnectionClosed(f"{self._name} closed: {reason}", reason=reason)
        buffer = self._buffer
        while len(buffer) < 4 + length:
            try:
                buffer += await self._read()
            except ConnectionClosed:
                break  # a cut-off reason: say what there is
        reason = bytes(buffer[4 : 4 + length]).decode("utf-8", "replace") or "closed"
        self.close_now(None, reason)
        raise self._error()

    async def _hung_up(self) -> ConnectionClosed:
        reason = None
        if self._lost is not None:
            with trio.CancelScope(shield=True):
                reason = await self._lost()
        self.close_now(None, reason or "the peer closed the connection")
        return self._error()

    # -- closing ------------------------------------------------------------

    async def aclose(self, reason: str | None = None) -> None:
        """Close, telling the peer why; waits up to `CLOSE_TIMEOUT` for room to say it.

        The close frame goes after the messages already sent: a peer that
        reads slowly (the listeners of a "frontend too slow") still learns
        the reason once it has read them. Cancelled, it closes at once.
        """
        if self._closed or self._closing:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        reason = reason or "closed"
        self._closing = True
        self._reason = reason
        said = reason.encode()[:_MAX_REASON]
        frame = _pack(_CLOSE | len(said)) + said
        try:
            with trio.move_on_after(CLOSE_TIMEOUT), contextlib.suppress(ConnectionClosed):
                while self._sending:
                    await self._send_lot.park()
                if not self._closed:
                    try:
                        sent = self._sock.send(frame)
                    except BlockingIOError:
                        sent = 0
                    except OSError:
                        sent = len(frame)  # the peer is gone: nobody to tell
                    if sent < len(frame):
                        await self._finish(frame, sent)
        finally:
            # Also when cancelled: later calls return at once (`_closing`), so
            # this is the only chance to release the descriptor.
            self.close_now(None, reason)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def close_now(self, reason: str | None, peer_reason: str | None = None) -> None:
        """Close at once; send `reason` in a close frame if the socket takes it now.

        `peer_reason` is the reason when the peer closed first (nothing to send).
        """
        if self._closed:
            return
        self._closed = True
        if not self._closing:
            self._reason = peer_reason if peer_reason is not None else reason
        sock = self._sock
        if reason is not None and not self._sending:
            said = reason.encode()[:_MAX_REASON]
            # Best effort, never waiting: the socket is closed next either way.
            with contextlib.suppress(OSError):
                sock.send(_pack(_CLOSE | len(said)) + said)
        trio.lowlevel.notify_closing(sock)
        sock.close()
        self._send_lot.unpark_all()

    def _error(self) -> ConnectionClosed:
        reason = self._reason or "closed"
        return ConnectionClosed(f"{self._name} closed: {reason}", reason=reason)

    def _peer_gone(self) -> ConnectionClosed:
        """A send found the peer gone: its close frame may be unread, with the reason."""
        self.close_now(None, self._unread_reason() or "the peer closed the connection")
        return self._error()

    def _unread_reason(self) -> str | None:
        """The reason in a close frame among what the peer sent and nobody read yet."""
        buffer = self._buffer
        with contextlib.suppress(OSError):
            while chunk := self._sock.recv(_READ_SIZE):
                buffer += chunk
        at = 0
        while len(buffer) >= at + 4:
            (size,) = _unpack_from(buffer, at)
            if size & _CLOSE:
                said = bytes(buffer[at + 4 : at + 4 + (size & ~_CLOSE)])
                return said.decode("utf-8", "replace") or None
            at += 4 + size
        return None

    def _os_error(self, exc: OSError) -> ConnectionClosed:
        if exc.errno == errno.EBADF:  # closed under us
            return self._error()
        self.close_now(None, f"connection failed: {exc.strerror or exc}")
        return self._error()

    @property
    def closed_reason(self) -> str | None:
        """Why the stream closed, or None while open."""
        return self._reason if self._closed else None
