"""Request metadata: user key/value pairs a request carries end to end.

The pairs travel with every call made in their context (in the call's `ctx` on
WebSocket, local and in-process connections, as a W3C `baggage` header over
HTTP) and reach downstream calls made by the impl, as the ActivityId does. The
limits are W3C Baggage's, so that a request's metadata always fits one header.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, unquote

__all__ = [
    "EMPTY_METADATA",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_ENTRIES",
    "MAX_METADATA_KEY_LENGTH",
    "MAX_METADATA_VALUE_BYTES",
    "Metadata",
    "check_metadata",
    "decode_baggage",
    "encode_baggage",
    "freeze_metadata",
]

#: The most entries a request's metadata may have.
MAX_METADATA_ENTRIES = 64
#: The longest key, in characters (W3C token characters only).
MAX_METADATA_KEY_LENGTH = 64
#: The longest value, in bytes of UTF-8.
MAX_METADATA_VALUE_BYTES = 1024
#: The most bytes the whole metadata may take encoded as a `baggage` header
#: (`k=v,k2=v2`, values percent-encoded): W3C Baggage's own limit.
MAX_METADATA_BYTES = 8192

# RFC 9110 token characters: what W3C Baggage allows in a key.
_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# W3C baggage-octet (printable ASCII but space, `"`, `,`, `;` and `\`) stays
# as it is; everything else, and `%` itself, is percent-encoded (as UTF-8).
_SAFE = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in '"%,;\\' and not c.isalnum())


class Metadata(Mapping[str, str]):
    """A frozen mapping of metadata keys to values (hashable, immutable).

    Its `repr` shows the keys only: values may be things a user would rather
    not see in a log line (they are still never the place for a credential).
    """

    __slots__ = ("_items",)

    _items: dict[str, str]

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items = dict(items) if items else {}

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Metadata):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Metadata(keys={sorted(self._items)!r})"


#: The metadata of a context that has none.
EMPTY_METADATA = Metadata()


def freeze_metadata(value: Mapping[str, str] | None) -> Metadata:
    """`value` as a `Metadata` (itself when it is one already). Not checked."""
    if type(value) is Metadata:
        return value
    if not value:
        return EMPTY_METADATA
    return Metadata(value)


def _encoded_value(value: str) -> str:
    return quote(value, safe=_SAFE)


def encode_baggage(metadata: Mapping[str, str]) -> str:
    """The W3C `baggage` header value for `metadata`: `k=v,k2=v2`, values percent-encoded."""
    return ",".join(f"{k}={_encoded_value(v)}" for k, v in metadata.items())


def check_metadata(metadata: Mapping[Any, Any]) -> Metadata:
    """Check `metadata` against the limits and return it frozen.

    Raises:
        ValueError: a key or value of the wrong type or form, or a limit
            exceeded; the message names the limit.
    """
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise ValueError(
            f"metadata may have at most {MAX_METADATA_ENTRIES} entries "
            f"(MAX_METADATA_ENTRIES), got {len(metadata)}: send fewer"
        )
    size = max(0, len(metadata) - 1)  # the commas
    for key, value in metadata.items():
        if type(key) is not str or not _KEY.fullmatch(key):
            raise ValueError(
                f"a metadata key must be 1 to {MAX_METADATA_KEY_LENGTH} characters of "
                f"letters, digits and !#$%&'*+-.^_`|~ (W3C Baggage keys), got {key!r}"
            )
        if len(key) > MAX_METADATA_KEY_LENGTH:
            raise ValueError(
                f"metadata key {key[:16]!r}... is {len(key)} characters, over the limit of "
                f"{MAX_METADATA_KEY_LENGTH} (MAX_METADATA_KEY_LENGTH): use a shorter key"
            )
        if type(value) is not str:
            raise ValueError(
                f"metadata value for {key!r} must be a string, got {type(value).__name__}"
            )
        length = len(value.encode("utf-8", "surrogatepass"))
        if length > MAX_METADATA_VALUE_BYTES:
            raise ValueError(
                f"metadata value for {key!r} is {length} bytes of UTF-8, over the limit of "
                f"{MAX_METADATA_VALUE_BYTES} (MAX_METADATA_VALUE_BYTES): send less"
            )
        size += len(key) + 1 + len(_encoded_value(value))
    if size > MAX_METADATA_BYTES:
        raise ValueError(
            f"metadata encodes to {size} bytes (as a W3C baggage header), over the limit of "
            f"{MAX_METADATA_BYTES} (MAX_METADATA_BYTES): send fewer or shorter entries"
        )
    return freeze_metadata(metadata)


def decode_baggage(values: list[str]) -> Metadata:
    """Read `baggage` header values (one or several lines) as metadata.

    A member that is malformed (no `=`, a key that is not a token, a value that
    is not valid percent-encoded UTF-8) is skipped, as W3C Baggage says;
    member properties (`;prop`) are dropped. A later member wins over an
    earlier one with the same key.

    Raises:
        ValueError: the well-formed members exceed a limit (the message names it).
    """
    size = sum(len(v) for v in values) + max(0, len(values) - 1)
    if size > MAX_METADATA_BYTES:
        raise ValueError(
            f"the baggage header is {size} bytes, over the limit of {MAX_METADATA_BYTES} "
            f"(MAX_METADATA_BYTES): send fewer or shorter entries"
        )
    out: dict[str, str] = {}
    for line in values:
        for member in line.split(","):
            key, eq, rest = member.partition("=")
            key = key.strip(" \t")
            if not eq or not _KEY.fullmatch(key):
                continue
            raw = rest.split(";", 1)[0].strip(" \t")
            try:
                value = unquote(raw, errors="strict")
            except UnicodeDecodeError:
                continue
            out[key] = value
    return check_metadata(out)
