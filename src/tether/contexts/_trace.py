"""W3C Trace Context interop: an ActivityId and a `traceparent` header line up.

An ActivityId shaped like a UUID (what `new_activity_id` makes) *is* a trace id:
its 32 hex digits. So a frontend sends `traceparent: 00-<activity hex>-<span>-01`
with each call, an OpenTelemetry collector sees the ActivityId as the trace, and
a backend that receives only a `traceparent` (from a system that knows nothing
of tether) takes its trace id, in UUID form, as the ActivityId.

An ActivityId of another shape (set by the application) maps to a trace id by
hashing, so every call of that activity still carries one trace id.
"""

from __future__ import annotations

import hashlib
import os
import re

__all__ = [
    "activity_id_from_traceparent",
    "trace_id_of",
    "traceparent_for",
    "valid_traceparent",
]

_HEX32 = re.compile(r"[0-9a-f]{32}")
# version-traceid-parentid-flags, lower-case hex (W3C Trace Context, level 1).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def trace_id_of(activity_id: str) -> str:
    """The W3C trace id (32 lower-case hex digits) that stands for `activity_id`.

    A UUID-shaped or 32-hex ActivityId maps to its own digits, so the mapping
    round-trips with `activity_id_from_traceparent`; any other maps to a hash.
    """
    digits = activity_id.replace("-", "").lower()
    if len(digits) == 32 and _HEX32.fullmatch(digits) and digits != "0" * 32:
        return digits
    return hashlib.blake2b(activity_id.encode(), digest_size=16).hexdigest()


def traceparent_for(activity_id: str) -> str:
    """A `traceparent` header value for one outgoing call of `activity_id`.

    The trace id is `trace_id_of(activity_id)`; the parent (span) id is new for
    each call; the trace is marked sampled.
    """
    return f"00-{trace_id_of(activity_id)}-{os.urandom(8).hex()}-01"


def _parse(value: str) -> tuple[str, str] | None:
    """The stripped value and its trace id, or None when it is not a valid traceparent."""
    value = value.strip()
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace, parent, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace == "0" * 32 or parent == "0" * 16:
        return None
    return value, trace


def valid_traceparent(value: object) -> str | None:
    """`value` as a traceparent to keep and forward, or None when it is not valid.

    A valid value of a later version keeps its first 55 characters (the fields
    this version knows), as W3C Trace Context says a receiver parses it.
    """
    if type(value) is not str or len(value) > 512:
        return None
    parsed = _parse(value)
    return None if parsed is None else parsed[0][:55]


def activity_id_from_traceparent(value: str) -> str | None:
    """The ActivityId a request carrying only `traceparent: value` belongs to.

    Returns:
        The trace id in UUID form (`8-4-4-4-12`); None when `value` is not a
        valid W3C traceparent (it is then ignored, as the standard says).
    """
    parsed = _parse(value)
    if parsed is None:
        return None
    trace = parsed[1]
    return f"{trace[:8]}-{trace[8:12]}-{trace[12:16]}-{trace[16:20]}-{trace[20:]}"
