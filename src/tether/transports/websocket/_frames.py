"""WebSocket data frames without wsproto's per-frame cost, under trio-websocket.

trio-websocket runs every frame through wsproto, which parses and builds them
in pure Python: about 10 µs to read a small frame and 3-6 µs to write one,
a fifth of a WebSocket call's round trip. tether's messages are almost all
small, whole (unfragmented) text frames, so this module does those itself and
leaves everything else to wsproto:

- `frame(data, mask)` builds one whole text frame, masked on the client side
  (RFC 6455 section 5.2), from bytes that are already UTF-8;
  `binary_frame(data, mask)` a binary one.
- `FastFrames` stands in for trio-websocket's `WSConnection`. While wsproto is
  between frames and the connection is open, it reads whole, unfragmented,
  unextended data frames itself and yields the same `TextMessage` and
  `BytesMessage` events wsproto would. Any other frame (control frames,
  fragments, invalid UTF-8, bad header bits) goes to wsproto alone, once it
  has all come, and the fast path goes on after it; a frame over the size
  limit or with a bad length form goes to wsproto with everything after it.
  wsproto keeps all of its checks, errors and close codes. When it refuses a
  frame, the peer is sent a close with wsproto's code and reason
  (trio-websocket alone would hang up without one).
- Once a close is under way, a pong (or ping) trio-websocket asks for is not
  sent: wsproto would raise, and the error would end the connection's reader
  task and the server around it.
- A large binary frame (a MiB item of a stream) is read into a buffer of its
  own size once its header has come: `FastFrames.wanting` is where the reader
  receives the rest straight from the socket (`recv_into`), so its payload is
  never copied out of a growing buffer, and it is handed over as that
  bytearray. `message_parts` writes a binary message's frame as pieces (for
  `sendmsg`): its attachments are not copied at all.

Whether wsproto is between frames is read from its private state. If a future
wsproto moves that state, `FastFrames` never takes the fast path, and frames
are read exactly as before (tests/test_wsframes.py fails loudly first).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from typing import Any

from wsproto import WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage

from ...runtime._binary import BinaryMessage

__all__ = ["BIG_FRAME", "FastFrames", "binary_frame", "frame", "message_frame", "message_parts"]

_TEXT = 0x81  # FIN + text opcode
_BINARY = 0x82  # FIN + binary opcode
_MASKED = 0x80


#: A binary frame larger than this whose header has come is read into a buffer
#: of its own (`FastFrames.wanting`) rather than through the parsing buffer.
BIG_FRAME = 64 * 1024

# For each byte value k, the 256 bytes b ^ k: one `translate` masks every
# fourth byte of a large payload.
_XOR_TABLES = [bytes(b ^ k for b in range(256)) for k in range(256)]

_apply_mask: Callable[[bytes | bytearray | memoryview, bytes], bytes] | None
try:
    # The `websockets` package's C masking, when it is installed: about 25
    # times faster than `translate` on a MiB (0.04 ms against 0.9), which is
    # what a client stream's upload costs on each side. Optional: without it,
    # the pure-Python way below.
    from websockets.speedups import (  # type: ignore[import-not-found,unused-ignore]
        apply_mask as _apply_mask,
    )
except ImportError:  # pragma: no cover - depends on what is installed
    _apply_mask = None


def _xor(data: bytes | bytearray | memoryview, key: bytes) -> bytes | bytearray:
    """`data` XORed with the repeated 4-byte `key` (masking and unmasking are the same).

    Small payloads as one big integer, large ones by the `websockets`
    package's C function if it is installed, else by `translate` on each
    fourth of the bytes: each the faster on its side of about 1 KiB. A
    bytearray may be masked in place.
    """
    size = len(data)
    if size <= 1024:
        if not size:
            return b""
        keys = (key * (size // 4 + 1))[:size]
        value = int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")
        return value.to_bytes(size, "little")
    if _apply_mask is not None:
        masked: bytes = _apply_mask(data, key)
        return masked
    out = data if type(data) is bytearray else bytearray(data)
    for i in range(4):
        out[i::4] = out[i::4].translate(_XOR_TABLES[key[i]])
    return out


def _header(first: int, size: int, mask_bit: int) -> bytes:
    if size < 126:
        return bytes((first, mask_bit | size))
    if size < 65536:
        return bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    return bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")


def frame(data: bytes, mask: bool, first: int = _TEXT) -> bytes:
    """One whole text frame carrying `data`, which must be UTF-8 (JSON from orjson is).

    A client masks every frame it sends (`mask=True`) with a fresh random key;
    a server never does.
    """
    size = len(data)
    if not mask:
        return _header(first, size, 0) + data
    # A fresh key from os.urandom for each frame (RFC 6455 section 5.3): no
    # pool to share across threads, or with a child after fork.
    key = os.urandom(4)
    return _header(first, size, _MASKED) + key + _xor(data, key)


def binary_frame(data: bytes, mask: bool) -> bytes:
    """One whole binary frame carrying `data` (masked as `frame` says)."""
    return frame(data, mask, _BINARY)


def message_frame(message: BinaryMessage, mask: bool) -> bytes:
    """One whole binary frame carrying `message`'s frame; unmasked, its attachments are
    copied once (into the frame), not twice (into `message.frame()`, then the frame)."""
    return b"".join(message_parts(message, mask))


#: A frame in pieces, to be written one after the other.
Parts = list[bytes | bytearray | memoryview]


def message_parts(message: BinaryMessage, mask: bool) -> Parts:
    """`message_frame` as pieces to write one after the other (`sendmsg`).

    Unmasked, the attachments are pieces as they are (no copy); masked, each
    piece is masked on its own, the key turned to where the piece begins (one
    copy: the masking's, and no joining).
    """
    chunks = message.chunks()
    if not mask:
        return [_header(_BINARY, message.size, 0), *chunks]
    key = os.urandom(4)
    parts: Parts = [_header(_BINARY, message.size, _MASKED) + key]
    at = 0
    for chunk in chunks:
        turn = at % 4
        parts.append(_xor(chunk, key[turn:] + key[:turn]))
        at += len(chunk)
    return parts


class _Handshaken:
    """A finished handshake, in place of wsproto's: nothing more to say.

    wsproto keeps its handshake (an h11 connection and its queues) for the
    connection's whole life, only to ask it for events it no longer has:
    about 2.5 KiB a connection, on a server with a thousand idle sessions.
    Once the connection is open, this stands in for it.
    """

    __slots__ = ()

    def events(self) -> Iterator[Event]:
        return iter(())


_HANDSHAKEN = _Handshaken()


def _let_go_of_handshake(inner: WSConnection) -> None:
    """Drop `inner`'s handshake if it is finished and holds no event not yet read."""
    handshake = inner.handshake
    pending = getattr(handshake, "_events", None)
    if inner.connection is not None and pending is not None and not pending:
        inner.handshake = _HANDSHAKEN  # type: ignore[assignment]


class FastFrames:
    """A `WSConnection` whose whole data frames are read here, the rest by wsproto.

    Installed as a trio-websocket connection's `_wsproto` once the handshake is
    done; trio-websocket's reader then feeds it bytes and takes its events as
    before. `max_message_size` is the connection's limit: a frame declaring
    more goes to wsproto, so trio-websocket closes with 1009 as it always did.
    """

    __slots__ = (
        "_big",
        "_big_at",
        "_big_key",
        "_buffer",
        "_closing",
        "_failing",
        "_fast",
        "_inner",
        "_limit",
        "_mask_bit",
        "_whole",
        "fast_frames",
    )

    def __init__(self, inner: WSConnection, max_message_size: int) -> None:
        self._inner = inner
        _let_go_of_handshake(inner)
        # What the peer's frames must say: a server's frames are unmasked, a
        # client's masked (wsproto fails the connection otherwise).
        self._mask_bit = 0 if inner.client else _MASKED
        self._limit = max_message_size
        self._buffer = bytearray()
        # A large binary frame being read into a buffer of its own: its
        # payload (`_big`), how much of it came, its masking key if any.
        self._big: bytearray | None = None
        self._big_at = 0
        self._big_key: bytes | None = None
        self._fast = False
        # Whether wsproto is between messages, not only between the frames of one.
        self._whole = False
        self._closing = False
        self._failing = False
        #: How many frames were read here rather than by wsproto (for tests).
        self.fast_frames = 0

    # What trio-websocket uses of a WSConnection, passed through.

    @property
    def client(self) -> bool:
        return self._inner.client

    @property
    def state(self) -> ConnectionState:
        if self._failing:
            return ConnectionState.REMOTE_CLOSING
        return self._inner.state

    def send(self, event: Event) -> bytes:
        kind = type(event)
        if self._failing and kind is CloseConnection:
            self._failing = False  # the close for a refused frame: wsproto is still open
        elif (kind is Pong or kind is Ping) and self._inner.state is not ConnectionState.OPEN:
            # A ping that comes after our close is answered by trio-websocket,
            # and wsproto raises for a pong once a close is under way: that
            # error would end the reader task and the server with it.
            return b""
        return self._inner.send(event)

    def receive_data(self, data: bytes | None) -> None:
        if data is not None and (self._fast or self._resume()):
            big = self._big
            if big is not None:
                # The rest of a large frame first, straight into its buffer.
                at = self._big_at
                take = min(len(big) - at, len(data))
                big[at : at + take] = data[:take]
                self._big_at = at + take
                if take == len(data):
                    return
                data = data[take:]
            self._buffer += data
            return
        self._to_wsproto()
        self._inner.receive_data(data)

    def wanting(self) -> memoryview | None:
        """Where the rest of a large binary frame goes, if one is being read.

        The reader receives into it (`socket.recv_into`) and says how much
        came with `filled`: the payload is read once, into its own buffer.
        """
        big = self._big
        if big is None:
            return None
        return memoryview(big)[self._big_at :]

    def filled(self, count: int) -> None:
        """`count` more bytes of the large frame came, into `wanting()`."""
        self._big_at += count

    def events(self) -> Generator[Event, None, None]:
        inner = self._inner
        while True:
            if not self._fast:
                # wsproto first, with what it was given; the fast path resumes
                # where its frames end.
                for event in inner.events():
                    if type(event) is CloseConnection:
                        self._closing = True
                        # wsproto refused a frame: it reports the close it
                        # wants but stays open, and trio-websocket then drops
                        # TCP without telling the peer why. Saying the peer
                        # is closing makes trio-websocket answer with this
                        # close (code and reason) before it hangs up.
                        self._failing = inner.state is ConnectionState.OPEN
                    yield event
                if self._closing:
                    # wsproto reads no frame after a close: neither do we.
                    self._buffer.clear()
                    return
                if not self._resume():
                    if not self._buffer:
                        return
                    self._to_wsproto()  # wsproto holds part of a frame: the rest is its too
                    continue
            event = self._next()
            if event is None:
                return
            if event is _HANDED:
                continue
            self.fast_frames += 1
            yield event

    def _resume(self) -> bool:
        """Take the fast path again if wsproto is between frames; whether it did."""
        if self._closing:
            return False
        where = _between_frames(self._inner)
        if not where:
            return False
        self._fast = True
        self._whole = where is _MESSAGES
        return True

    def _to_wsproto(self) -> None:
        """Leave the fast path: whatever is buffered goes to wsproto, first."""
        self._fast = False
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            self._inner.receive_data(data)

    def _hand(self, end: int) -> Any:
        """Give wsproto the next frame, whole, and only it; the rest stays here."""
        buffer = self._buffer
        data = bytes(buffer[:end])
        del buffer[:end]
        self._fast = False
        self._inner.receive_data(data)
        return _HANDED

    def _next(self) -> Any:
        """The next frame's event if it is ours, _HANDED if wsproto's, None if incomplete.

        Ours: a whole, unfragmented text or binary frame, shortest length form,
        the peer's masking, within the limit, between messages. wsproto gets
        any other frame alone once it has all come (so that the fast path
        goes on right after it), or at once with everything after it when
        waiting is not right (a frame over the limit, a bad length form).
        """
        if self._big is not None:
            return self._big_done()
        buffer = self._buffer
        have = len(buffer)
        if have < 2:
            return None
        first = buffer[0]
        second = buffer[1]
        size = second & 0x7F
        start = 2
        shortest = True
        if size == 126:
            if have < 4:
                return None
            size = int.from_bytes(buffer[2:4], "big")
            start = 4
            shortest = size >= 126
        elif size == 127:
            if have < 10:
                return None
            size = int.from_bytes(buffer[2:10], "big")
            start = 10
            shortest = 65536 <= size < 1 << 63
        masked = second & _MASKED
        if masked:
            start += 4
        end = start + size
        if not shortest or size > self._limit:
            # wsproto's error, or trio-websocket's 1009 from wsproto's parts
            self._to_wsproto()
            return _HANDED
        if have < start:
            return None  # the header (its masking key) has not all come
        if have < end:
            if (
                first == _BINARY
                and size > BIG_FRAME
                and masked == self._mask_bit
                and self._whole
                and end - have > BIG_FRAME
            ):
                self._big_begin(start, size, bool(masked))
            return None
        if (
            (first != _TEXT and first != _BINARY)  # control, fragment, RSV bits, bad opcode
            or masked != self._mask_bit
            or not self._whole  # inside a fragmented message: wsproto judges every frame
        ):
            return self._hand(end)
        key = buffer[start - 4 : start] if masked else None
        payload = buffer[start:end] if key is None else _xor(buffer[start:end], bytes(key))
        if first == _TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                return self._hand(end)  # wsproto closes with 1007
            del buffer[:end]
            return TextMessage(data=text, frame_finished=True, message_finished=True)
        del buffer[:end]
        return BytesMessage(data=payload, frame_finished=True, message_finished=True)

    def _big_begin(self, start: int, size: int, masked: bool) -> None:
        """Read the large binary frame whose payload begins at `start` into its own buffer."""
        buffer = self._buffer
        big = bytearray(size)
        got = len(buffer) - start
        big[:got] = buffer[start:]
        self._big_key = bytes(buffer[start - 4 : start]) if masked else None
        self._big = big
        self._big_at = got
        buffer.clear()

    def _big_done(self) -> Any:
        """The large frame's message once all of it came, else None."""
        big = self._big
        assert big is not None
        if self._big_at < len(big):
            return None
        self._big = None
        key = self._big_key
        payload = big if key is None else _xor(big, key)
        return BytesMessage(data=payload, frame_finished=True, message_finished=True)


#: What `_next` says when wsproto was given bytes: its events come next.
_HANDED: Any = object()
_FRAMES = "between frames"  # of a fragmented message
_MESSAGES = "between messages"


def _between_frames(inner: WSConnection) -> str | None:
    """Whether wsproto is open, unextended and holds no part of a frame: _MESSAGES or _FRAMES.

    _FRAMES when a fragmented message is under way, None otherwise. Read
    from wsproto's private state; anything unexpected there means None.
    """
    try:
        connection: Any = inner.connection
        if connection is None or connection.state is not ConnectionState.OPEN:
            return None
        if connection._events:
            return None
        proto = connection._proto
        decoder = proto._frame_decoder
        if (
            proto.extensions
            or decoder.extensions
            or decoder.header is not None
            or len(decoder.buffer) != 0
        ):
            return None
        return _MESSAGES if proto._message_decoder.opcode is None else _FRAMES
    except AttributeError:
        return None
