"""How a stream travels in an HTTP body, sans-IO: NDJSON lines or length-prefixed records.

A server stream's response and a client stream's request body are sequences
of JSON texts (docs/http.md, "Streams"), in one of two forms:

* `application/x-ndjson`: one JSON text per line (`\\n`, optionally `\\r\\n`),
  what curl and a browser's `fetch` read and write;
* `application/vnd.tether.stream`: records, each a u32 big-endian length
  followed by that many bytes of one message. A record that starts with byte
  0 is a binary frame (`runtime/_binary.py`): bytes values raw beside the
  JSON envelope. A server stream's item frame is the message `{"t": "item",
  "value": ...}`; a client stream's arguments frame is `{"args": [...]}`, and
  an item frame `{"value": ...}` (`item_record`, `item_value`).

`Splitter` cuts a body into its texts as bytes arrive, holding at most one
text past its limit's worth of bytes; `line` and `record` make them. A large
record (a MiB item) is gathered in a buffer of its own size once its length
has come, each piece of the body copied into it once.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from ...runtime import InvalidRequest, PayloadTooLarge
from ...runtime._binary import BinaryMessage, pack, unpack_frame
from ...runtime._codec import dumps, loads

__all__ = [
    "NDJSON_TYPE",
    "RECORDS_TYPE",
    "Splitter",
    "binary_pieces",
    "item_record",
    "item_value",
    "line",
    "media_form",
    "record",
    "two_way_refusal",
]

#: The JSON form of a stream body: one JSON text per line.
NDJSON_TYPE = b"application/x-ndjson"
#: The record form: u32 big-endian length | message, repeated.
RECORDS_TYPE = b"application/vnd.tether.stream"

_U32 = struct.Struct(">I")
#: A record longer than this is gathered in a buffer of its own (`Splitter`).
_BIG_RECORD = 64 * 1024


def line(data: bytes) -> bytes:
    """One NDJSON line: `data` (a JSON text, which holds no raw line break) and `\\n`."""
    return data + b"\n"


def record(data: bytes) -> bytes:
    """One record: the length of `data`, u32 big-endian, then `data`."""
    return _U32.pack(len(data)) + data


#: Pieces of a record up to this size are joined to their neighbours; a
#: larger one (an attachment) is written as it is.
_JOIN_BELOW = 64 * 1024


def binary_pieces(message: BinaryMessage) -> list[bytes]:
    """The record of a binary frame, as pieces to write in order: the small ones
    joined, each large attachment alone (not copied)."""
    pieces: list[bytes] = []
    small: list[bytes] = [_U32.pack(message.size)]
    for chunk in message.chunks():
        if len(chunk) < _JOIN_BELOW:
            small.append(chunk)
            continue
        if small:
            pieces.append(b"".join(small))
            small = []
        pieces.append(chunk)
    if small:
        pieces.append(b"".join(small))
    return pieces


def item_record(value: Any, key: str = "value") -> tuple[list[bytes], int]:
    """A client stream's item (unstructured) as a record: (its pieces, its text's size).

    JSON when it holds no bytes; else a binary frame `{"value": ...}`, its
    bytes raw. With `key="args"`, the arguments' record (`{"args": [...]}`).

    Raises:
        TypeError: the value is neither JSON nor bytes.
    """
    try:
        data = orjson.dumps(value)  # no bytes in it: the common case, at full speed
    except TypeError:
        packed = pack({key: value})
        if type(packed) is BinaryMessage:
            return binary_pieces(packed), packed.size
        data = dumps(value)
    return [record(data)], len(data)


def item_value(text: bytes | bytearray) -> Any:
    """A client stream item's value from its text: JSON, or a frame `{"value": ...}`.

    Raises:
        InvalidRequest: neither.
    """
    if text[:1] != b"\x00":
        return loads(text)
    obj = unpack_frame(text)
    if "value" not in obj:
        raise InvalidRequest(
            'a stream item sent as a binary frame must hold an object {"value": ...}; this '
            f"one holds the keys {sorted(obj)!r:.200}",
            details={"field": "body"},
        )
    return obj["value"]


def media_form(value: bytes | None) -> bool | None:
    """Which stream form a media type names: True for records, False for NDJSON, else None.

    Parameters (`; charset=utf-8`) and case are ignored; for an `Accept` list,
    any entry naming the records form chooses it.
    """
    if value is None:
        return None
    found: bool | None = None
    for entry in value.split(b","):
        media = entry.split(b";", 1)[0].strip().lower()
        if media == RECORDS_TYPE:
            return True
        if media == NDJSON_TYPE:
            found = False
    return found


def two_way_refusal(qualname: str, prefix: str) -> str:
    """The message of the `not-found` error a two-way stream gets over HTTP."""
    return (
        f"{qualname} is a two-way stream, which the HTTP transport does not carry "
        "(HTTP/1.1 proxies buffer request bodies, and browsers cannot read a response while "
        "they stream a request): call it over the memory, WebSocket or local transport; "
        f"this server's WebSocket endpoint is {prefix}/ws"
    )


class Splitter:
    """Cuts a stream body into its JSON texts (lines or records) as its bytes arrive.

    Args:
        records: True for the record form, False for NDJSON.
        limit: The longest text, in bytes; a longer one is refused.
    """

    __slots__ = ("_big", "_big_at", "_buffer", "_limit", "_records", "_scan", "_start")

    def __init__(self, records: bool, limit: int) -> None:
        self._records = records
        self._limit = limit
        self._buffer = bytearray()
        self._start = 0  # where the next text begins
        self._scan = 0  # NDJSON: how far the buffer holds no line break
        # A large record being gathered (its length read): its own buffer,
        # and how much of it came.
        self._big: bytearray | None = None
        self._big_at = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out."""
        return len(self._buffer) - self._start + self._big_at

    def feed(self, data: bytes | bytearray) -> None:
        """Add the next bytes of the body."""
        big = self._big
        if big is not None:
            at = self._big_at
            take = min(len(big) - at, len(data))
            big[at : at + take] = memoryview(data)[:take]
            self._big_at = at + take
            if take == len(data):
                return
            data = memoryview(data)[take:]  # type: ignore[assignment]
        buffer = self._buffer
        if self._start and self._start * 2 >= len(buffer):
            # Compact once half the buffer has been handed out.
            del buffer[: self._start]
            self._scan -= self._start
            self._start = 0
        buffer += data

    def next(self) -> bytes | bytearray | None:
        """The next whole text, or None until more bytes come.

        A record may come as a bytearray (a large one's own buffer).

        Raises:
            PayloadTooLarge: a text is longer than the limit (before all of it came).
        """
        buffer = self._buffer
        start = self._start
        if self._records:
            big = self._big
            if big is not None:
                if self._big_at < len(big):
                    return None
                self._big = None
                self._big_at = 0
                return big
            if len(buffer) - start < 4:
                return None
            (size,) = _U32.unpack_from(buffer, start)
            if size > self._limit:
                raise self._too_large(size)
            end = start + 4 + size
            if len(buffer) < end:
                if size > _BIG_RECORD and end - len(buffer) > _BIG_RECORD:
                    # Gathered in its own buffer from now on: one copy of
                    # each piece, not a growing buffer copied out again.
                    big = self._big = bytearray(size)
                    got = len(buffer) - start - 4
                    big[:got] = memoryview(buffer)[start + 4 :]
                    self._big_at = got
                    buffer.clear()
                    self._start = self._scan = 0
                return None
            self._start = end
            return buffer[start + 4 : end]
        while True:
            newline = buffer.find(b"\n", max(self._scan, start))
            if newline < 0:
                self._scan = len(buffer)
                if len(buffer) - start > self._limit:
                    raise self._too_large(len(buffer) - start, at_least=True)
                return None
            self._start = self._scan = newline + 1
            text = bytes(buffer[start:newline]).rstrip(b"\r")
            if len(text) > self._limit:
                raise self._too_large(len(text))
            if text.strip():
                return text
            start = self._start  # a blank line: none of the stream's texts

    def finish(self) -> bytes | None:
        """At the end of the body: its last text, if one came without its line break.

        Raises:
            InvalidRequest: the body ended inside a record.
        """
        if self._big is not None:
            got = self._big_at + 4
            self._big = None
            self._big_at = 0
            raise InvalidRequest(
                f"the stream body ended inside a record ({got} bytes of it came): "
                "send each record whole, its u32 length first"
            )
        rest = bytes(self._buffer[self._start :])
        self._buffer.clear()
        self._start = self._scan = 0
        if not rest.strip():
            return None
        if self._records:
            raise InvalidRequest(
                f"the stream body ended inside a record ({len(rest)} bytes of it came): "
                "send each record whole, its u32 length first"
            )
        return rest.rstrip(b"\r")

    def _too_large(self, size: int, *, at_least: bool = False) -> PayloadTooLarge:
        more = "at least " if at_least else ""
        return PayloadTooLarge(
            f"a stream item is {more}{size} bytes, over the limit of {self._limit} bytes: "
            "send smaller items (the limit is per item, not per stream)",
            details={"size": size, "limit": self._limit},
        )
