"""Binary messages, sans-IO: bytes values carried beside a message's JSON, not inside it.

A message whose values hold `bytes` is encoded, for a transport that carries
binary, as a `BinaryMessage`: its JSON *envelope* (the message with each
bytes value replaced by `null`, and a `"bin"` member saying where each one
was and how long it is) and the bytes themselves, the *attachments*, in the
order `"bin"` lists them::

    {"t": "call", "id": 7, ..., "args": ["k", null],
     "bin": [{"path": ["args", 1], "size": 1048576}]}

On a socket it is one *frame*::

    u32 big-endian length of the envelope | envelope | attachment 1 | attachment 2 ...

The envelope is at most `MAX_ENVELOPE` bytes, so a frame's first byte is
always 0, which no JSON text starts with: a receiver that gets both (the local
transport, a WebSocket binary frame) tells them apart by the first byte.
docs/wire.md describes the format for other languages.

Whatever a peer sends is checked before it is used (`InvalidRequest` with the
message's `id` in `details` when it can be read): an envelope length past the
frame's end, sizes that do not add up to what follows the envelope, more than
`MAX_ATTACHMENTS` attachments, a path longer than `MAX_PATH`, or one that
names no `null` in the message.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import attrs
import orjson

from ._codec import MAX_DEPTH, _not_json, dumps
from ._errors import InvalidRequest

__all__ = [
    "MAX_ATTACHMENTS",
    "MAX_ENVELOPE",
    "MAX_PATH",
    "BinaryMessage",
    "message_size",
    "pack",
    "unpack",
    "unpack_frame",
]

#: The longest envelope, in bytes (16 MiB - 1): its length's first byte is 0,
#: so a frame never starts like a JSON text. A message whose envelope would be
#: longer is sent as JSON, its bytes as base64.
MAX_ENVELOPE = (1 << 24) - 1
#: The most attachments one message carries; a message with more bytes values
#: is sent as JSON, its bytes as base64 (a receiver refuses a frame with more).
MAX_ATTACHMENTS = 4096
#: The longest path to an attachment: the codec's depth limit, plus the levels
#: of the message around the value (`["error", "details", "fields", ...]`).
MAX_PATH = MAX_DEPTH + 4

_U32 = struct.Struct(">I")


@attrs.frozen(slots=True, repr=False)
class BinaryMessage:
    """A message with its bytes values beside its JSON envelope (see the module docstring).

    In-process transports hand the object itself to the other side (no copy,
    no encoding); socket transports send `frame()` (or `chunks()`, for a
    vectored write) and give the received frame to `decode`.

    Attributes:
        envelope: The message's JSON, UTF-8, with a `"bin"` member.
        attachments: The bytes values, in the order `"bin"` lists them.
    """

    envelope: bytes
    attachments: tuple[bytes, ...]

    @property
    def size(self) -> int:
        """The length of `frame()`, in bytes, without making it."""
        return 4 + len(self.envelope) + sum(map(len, self.attachments))

    def chunks(self) -> list[bytes]:
        """The frame as pieces whose concatenation is `frame()`: for `sendmsg` and the like."""
        return [_U32.pack(len(self.envelope)), self.envelope, *self.attachments]

    def frame(self) -> bytes:
        """The frame: u32 big-endian envelope length, the envelope, the attachments."""
        return b"".join(self.chunks())

    @classmethod
    def parse(cls, frame: bytes | bytearray | memoryview) -> BinaryMessage:
        """Split a received frame into its envelope and attachments, checking it whole.

        Raises:
            InvalidRequest: the frame is malformed (see the module docstring).
        """
        _, envelope, attachments = _split(frame)
        return cls(envelope, attachments)

    def __repr__(self) -> str:
        # Sizes only: the envelope may hold a credential, the attachments megabytes.
        return (
            f"BinaryMessage(<envelope of {len(self.envelope)} bytes>, "
            f"<{len(self.attachments)} attachments, "
            f"{sum(map(len, self.attachments))} bytes>)"
        )


def message_size(data: bytes | bytearray | memoryview | str | BinaryMessage) -> int:
    """A message's size as encoded for the wire, in bytes: what size limits count.

    The length of JSON bytes; of text, its UTF-8 length; of a BinaryMessage,
    its whole frame's (envelope, attachments and the 4-byte length).
    """
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    if isinstance(data, str):
        return len(data) if data.isascii() else len(data.encode())
    if isinstance(data, BinaryMessage):
        return data.size
    if isinstance(data, memoryview):
        return data.nbytes
    raise TypeError(f"expected an encoded message, got {type(data).__name__}")


# ---------------------------------------------------------------------------
# Encoding


def pack(obj: dict[str, Any]) -> bytes | BinaryMessage:
    """Encode a message object whose plain JSON encoding failed (it may hold bytes).

    Returns:
        A BinaryMessage when `obj` holds bytes values; JSON bytes (bytes as
        base64) when it holds more than `MAX_ATTACHMENTS` of them, or its
        envelope would be over `MAX_ENVELOPE`.

    Raises:
        TypeError: `obj` holds a value that is neither JSON nor bytes, or
            nests deeper than `MAX_PATH`.
    """
    entries: list[dict[str, Any]] = []
    attachments: list[bytes] = []
    stripped = _strip(obj, [], entries, attachments)
    if not attachments or len(attachments) > MAX_ATTACHMENTS:
        return dumps(obj)  # raises the TypeError for what JSON cannot hold
    stripped["bin"] = entries  # a copy: the stripping copied what held bytes
    envelope = orjson.dumps(stripped)
    if len(envelope) > MAX_ENVELOPE:
        return dumps(obj)
    return BinaryMessage(envelope, tuple(attachments))


def _strip(
    value: Any, path: list[Any], entries: list[dict[str, Any]], attachments: list[bytes]
) -> Any:
    """`value` with each bytes value replaced by None (copying only what changes)."""
    if len(path) >= MAX_PATH:
        raise TypeError(f"a value nests deeper than {MAX_PATH} arrays and objects")
    copy: Any = None
    items = value.items() if type(value) is dict else enumerate(value)
    for key, item in items:
        kind = type(item)
        if kind is bytes:
            entries.append({"path": [*path, key], "size": len(item)})
            attachments.append(item)
            new = None
        elif kind is dict or kind is list or kind is tuple:
            path.append(key)
            new = _strip(item, path, entries, attachments)
            path.pop()
            if new is item:
                continue
        else:
            continue
        if copy is None:
            copy = dict(value) if type(value) is dict else list(value)
        copy[key] = new
    return value if copy is None else copy


# ---------------------------------------------------------------------------
# Decoding


def unpack(
    data: bytes | bytearray | memoryview | str | BinaryMessage,
    not_json: orjson.JSONDecodeError | None,
) -> dict[str, Any]:
    """The message object of what `orjson.loads` refused: a BinaryMessage, a frame, or garbage.

    The attachments are put back at their paths.

    Raises:
        InvalidRequest: not JSON and not a well-formed BinaryMessage or frame.
    """
    if type(data) is BinaryMessage:
        obj = _load_envelope(data.envelope)
        entries = _read_bin(obj)
        attachments = data.attachments
        if len(attachments) != len(entries):
            raise _bad(
                obj,
                f'the envelope\'s "bin" lists {len(entries)} attachments, the message '
                f"carries {len(attachments)}",
            )
        for index, ((_, size), attachment) in enumerate(zip(entries, attachments, strict=True)):
            if len(attachment) != size:
                raise _bad(
                    obj,
                    f"bin[{index}] says {size} bytes, its attachment holds {len(attachment)}",
                )
        _place(obj, entries, attachments)
        return obj
    if isinstance(data, (bytes, bytearray, memoryview)) and data[:1] == b"\x00":
        obj, _, _ = _split(data)
        return obj
    assert not_json is not None
    raise InvalidRequest(_not_json(not_json))


def unpack_frame(frame: bytes | bytearray | memoryview) -> dict[str, Any]:
    """The JSON object a frame carries, its attachments put back at their paths.

    For frames that are not protocol messages (an HTTP request body's
    `{"args": [...]}`); `decode` reads those that are.

    Raises:
        InvalidRequest: the frame is malformed.
    """
    return _split(frame)[0]


def _split(
    frame: bytes | bytearray | memoryview,
) -> tuple[dict[str, Any], bytes, tuple[bytes, ...]]:
    """Read a frame: (the message object with its attachments in place, envelope, attachments)."""
    view = memoryview(frame).cast("B")
    total = view.nbytes
    if total < 4:
        raise InvalidRequest(
            f"a binary frame starts with its envelope's 4-byte length; this one is {total} "
            "bytes long",
            details={"field": "frame"},
        )
    (length,) = _U32.unpack_from(view)
    if length > MAX_ENVELOPE:
        raise InvalidRequest(
            f"the frame's envelope length is {length} bytes, over the {MAX_ENVELOPE} a "
            "frame's envelope may be",
            details={"field": "frame"},
        )
    if 4 + length > total:
        raise InvalidRequest(
            f"the frame says its envelope is {length} bytes, but only {total - 4} follow",
            details={"field": "frame"},
        )
    envelope = bytes(view[4 : 4 + length])
    obj = _load_envelope(envelope)
    entries = _read_bin(obj)
    carried = total - 4 - length
    listed = sum(size for _, size in entries)
    if listed != carried:
        raise _bad(
            obj,
            f'the envelope\'s "bin" lists {listed} bytes of attachments, the frame carries '
            f"{carried} after the envelope",
        )
    attachments = []
    at = 4 + length
    for _, size in entries:
        attachments.append(bytes(view[at : at + size]))
        at += size
    _place(obj, entries, attachments)
    return obj, envelope, tuple(attachments)


def _load_envelope(envelope: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(envelope)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the binary message's envelope: {_not_json(exc)}") from None
    if type(obj) is not dict:
        raise InvalidRequest(
            f"a binary message's envelope must be a JSON object, got {type(obj).__name__}"
        )
    return obj


def _bad(obj: dict[str, Any], message: str) -> InvalidRequest:
    details: dict[str, Any] = {"field": "bin"}
    id_ = obj.get("id")
    if type(id_) is int and id_ >= 0:
        details["id"] = id_  # so that the receiver fails that request, not the connection
    return InvalidRequest(f"malformed binary message: {message}", details=details)


def _read_bin(obj: dict[str, Any]) -> list[tuple[list[Any], int]]:
    """Take the `"bin"` member out of `obj`: its (path, size) entries, checked."""
    listed = obj.pop("bin", None)
    if listed is None:
        return []
    if type(listed) is not list:
        raise _bad(obj, f'"bin" must be an array, got {type(listed).__name__}')
    if len(listed) > MAX_ATTACHMENTS:
        raise _bad(
            obj, f'"bin" lists {len(listed)} attachments, over the {MAX_ATTACHMENTS} allowed'
        )
    entries = []
    for index, entry in enumerate(listed):
        path = entry.get("path") if type(entry) is dict else None
        size = entry.get("size") if type(entry) is dict else None
        if type(size) is not int or size < 0:
            raise _bad(obj, f"bin[{index}].size must be a non-negative integer, got {size!r:.40}")
        if type(path) is not list or not path:
            raise _bad(obj, f"bin[{index}].path must be a non-empty array")
        if len(path) > MAX_PATH:
            raise _bad(
                obj,
                f"bin[{index}].path is {len(path)} keys long, over the {MAX_PATH} a value may nest",
            )
        if not all(type(key) is str or (type(key) is int and key >= 0) for key in path):
            raise _bad(obj, f"bin[{index}].path must hold only strings and non-negative integers")
        entries.append((path, size))
    return entries


def _place(
    obj: dict[str, Any], entries: list[tuple[list[Any], int]], attachments: Sequence[bytes]
) -> None:
    """Put each attachment where its path says: each path must name a `null` in `obj`."""
    for index, ((path, _), attachment) in enumerate(zip(entries, attachments, strict=True)):
        target: Any = obj
        for key in path[:-1]:
            target = _child(target, key)
            if target is _MISSING:
                raise _bad(obj, f"bin[{index}].path {path!r:.200} names no value in the message")
        last = path[-1]
        if _child(target, last) is not None:
            raise _bad(
                obj,
                f"bin[{index}].path {path!r:.200} must name a null in the message (where the "
                "bytes go), and does not",
            )
        target[last] = attachment if type(attachment) is bytes else bytes(attachment)


_MISSING: Any = object()


def _child(container: Any, key: Any) -> Any:
    kind = type(container)
    if kind is dict:
        return container.get(key, _MISSING) if type(key) is str else _MISSING
    if kind is list and type(key) is int and key < len(container):
        return container[key]
    return _MISSING
