"""WebSocket data frames without wsproto's per-frame cost, under trio-websocket.

trio-websocket runs every frame through wsproto, which parses and builds them
in pure Python: about 10 µs to read a small frame and 3-6 µs to write one,
a fifth of a WebSocket call's round trip. tether's messages are almost all
small, whole (unfragmented) text frames, so this module does those itself and
leaves everything else to wsproto:

- `frame(data, mask)` builds one whole text frame, masked on the client side
  (RFC 6455 section 5.2), from bytes that are already UTF-8.
- `FastFrames` stands in for trio-websocket's `WSConnection`. While wsproto is
  between frames and the connection is open, it reads whole, unfragmented,
  unextended data frames itself and yields the same `TextMessage` and
  `BytesMessage` events wsproto would. Any other frame (control frames,
  fragments, frames over the size limit, invalid UTF-8, bad header bits) and
  everything after it goes to wsproto, which keeps all of its checks, errors
  and close codes; reading returns to the fast path once wsproto is between
  frames again. When wsproto refuses a frame, the peer is sent a close with
  wsproto's code and reason (trio-websocket alone would hang up without one).

Whether wsproto is between frames is read from its private state. If a future
wsproto moves that state, `FastFrames` never takes the fast path, and frames
are read exactly as before (tests/test_wsframes.py fails loudly first).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

from wsproto import WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Event, TextMessage

__all__ = ["FastFrames", "frame"]

_TEXT = 0x81  # FIN + text opcode
_BINARY = 0x82  # FIN + binary opcode
_MASKED = 0x80


class _Masks:
    """Masking keys from os.urandom, drawn 4 KiB at a time (a syscall per 1,024 frames)."""

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> bytes:
        at = self._at
        if at >= len(self._pool):
            self._pool = os.urandom(4096)
            at = 0
        self._at = at + 4
        return self._pool[at : at + 4]


_masks = _Masks()


# For each byte value k, the 256 bytes b ^ k: one `translate` masks every
# fourth byte of a large payload.
_XOR_TABLES = [bytes(b ^ k for b in range(256)) for k in range(256)]


def _xor(data: bytes | bytearray, key: bytes) -> bytes | bytearray:
    """`data` XORed with the repeated 4-byte `key` (masking and unmasking are the same).

    Small payloads as one big integer, large ones by `translate` on each
    fourth of the bytes: each the faster on its side of about 1 KiB. A
    bytearray is masked in place.
    """
    size = len(data)
    if size <= 1024:
        if not size:
            return b""
        keys = (key * (size // 4 + 1))[:size]
        value = int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")
        return value.to_bytes(size, "little")
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


def frame(data: bytes, mask: bool) -> bytes:
    """One whole text frame carrying `data`, which must be UTF-8 (JSON from orjson is).

    A client masks every frame it sends (`mask=True`) with a fresh random key;
    a server never does.
    """
    size = len(data)
    if not mask:
        if size < 126:
            return bytes((_TEXT, size)) + data
        return _header(_TEXT, size, 0) + data
    key = _masks.next()
    return _header(_TEXT, size, _MASKED) + key + _xor(data, key)


class FastFrames:
    """A `WSConnection` whose whole data frames are read here, the rest by wsproto.

    Installed as a trio-websocket connection's `_wsproto` once the handshake is
    done; trio-websocket's reader then feeds it bytes and takes its events as
    before. `max_message_size` is the connection's limit: a frame declaring
    more goes to wsproto, so trio-websocket closes with 1009 as it always did.
    """

    __slots__ = (
        "_buffer",
        "_client",
        "_closing",
        "_failing",
        "_fast",
        "_inner",
        "_limit",
        "_mask_bit",
        "fast_frames",
    )

    def __init__(self, inner: WSConnection, max_message_size: int) -> None:
        self._inner = inner
        self._client = inner.client
        # What the peer's frames must say: a server's frames are unmasked, a
        # client's masked (wsproto fails the connection otherwise).
        self._mask_bit = 0 if inner.client else _MASKED
        self._limit = max_message_size
        self._buffer = bytearray()
        self._fast = False
        self._closing = False
        self._failing = False
        #: How many frames were read here rather than by wsproto (for tests).
        self.fast_frames = 0

    # What trio-websocket uses of a WSConnection, passed through.

    @property
    def client(self) -> bool:
        return self._client

    @property
    def state(self) -> ConnectionState:
        if self._failing:
            return ConnectionState.REMOTE_CLOSING
        return self._inner.state

    def send(self, event: Event) -> bytes:
        if self._failing and type(event) is CloseConnection:
            self._failing = False  # the close for a refused frame: wsproto is still open
        return self._inner.send(event)

    def receive_data(self, data: bytes | None) -> None:
        if data is not None and (
            self._fast or (not self._closing and _between_frames(self._inner))
        ):
            self._fast = True
            self._buffer += data
            return
        self._to_wsproto()
        self._inner.receive_data(data)

    def events(self) -> Generator[Event, None, None]:
        inner = self._inner
        while True:
            if not self._fast:
                # wsproto first, with everything it was given; its frames end
                # where it stops, and the fast path resumes from there. After
                # a close (sent by the peer, or wsproto's own for a bad frame)
                # every byte is wsproto's.
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
                if self._closing or not _between_frames(inner):
                    return
                self._fast = True
            event = self._next()
            if event is None:
                return
            if event is _SLOW:
                self._to_wsproto()
                continue
            self.fast_frames += 1
            yield event

    def _to_wsproto(self) -> None:
        """Leave the fast path: whatever is buffered goes to wsproto, first."""
        self._fast = False
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            self._inner.receive_data(data)

    def _next(self) -> Any:
        """The next whole data frame's event; None if it has not all come; _SLOW for wsproto's."""
        buffer = self._buffer
        have = len(buffer)
        if have < 2:
            return None
        first = buffer[0]
        if first != _TEXT and first != _BINARY:
            return _SLOW  # a control frame, a fragment, RSV bits, a bad opcode
        second = buffer[1]
        if (second & _MASKED) != self._mask_bit:
            return _SLOW
        size = second & 0x7F
        start = 2
        if size == 126:
            if have < 4:
                return None
            size = int.from_bytes(buffer[2:4], "big")
            start = 4
            if size < 126:
                return _SLOW  # not the shortest length: wsproto's error
        elif size == 127:
            if have < 10:
                return None
            size = int.from_bytes(buffer[2:10], "big")
            start = 10
            if size < 65536 or size >= 1 << 63:
                return _SLOW
        if size > self._limit:
            return _SLOW  # trio-websocket closes with 1009, after wsproto's parts
        key = None
        if self._mask_bit:
            key = bytes(buffer[start : start + 4])
            start += 4
        end = start + size
        if have < end:
            return None
        payload = buffer[start:end] if key is None else _xor(buffer[start:end], key)
        if first == _TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                return _SLOW  # wsproto closes with 1007
            del buffer[:end]
            return TextMessage(data=text, frame_finished=True, message_finished=True)
        del buffer[:end]
        return BytesMessage(data=payload, frame_finished=True, message_finished=True)


_SLOW: Any = object()


def _between_frames(inner: WSConnection) -> bool:
    """Whether wsproto is open, unextended and holds no part of a frame or message.

    Read from its private state; anything unexpected there means no.
    """
    try:
        connection: Any = inner.connection
        if connection is None or connection.state is not ConnectionState.OPEN:
            return False
        if connection._events:
            return False
        proto = connection._proto
        decoder = proto._frame_decoder
        return (
            not proto.extensions
            and not decoder.extensions
            and decoder.header is None
            and len(decoder.buffer) == 0
            and proto._message_decoder.opcode is None
        )
    except AttributeError:
        return False
