"""The per-request messages of the protocol, and the fast paths that decode the hot ones.

`_protocol` re-exports them; it holds the session messages (hello, welcome)
and the checked encoders and decoders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import attrs

from ..contexts._metadata import EMPTY_METADATA
from ..contexts._trace import valid_traceparent
from ._fields import MAX_LABEL_LENGTH
from ._progress import Progress

__all__ = [
    "STREAM_MESSAGES",
    "Call",
    "CallContext",
    "Cancel",
    "Credit",
    "End",
    "Error",
    "ErrorInfo",
    "Invoke",
    "Item",
    "Notify",
    "ProgressReport",
    "Ready",
    "Result",
    "Send",
    "decode_call_fast",
    "decode_invoke_fast",
    "decode_notify_fast",
]

# The per-request messages are NamedTuples, the session-level ones frozen attrs
# classes. Both are immutable; NamedTuples are built in a third of the time,
# and a call builds four of them on its way, which measured as a tenth of an
# in-process call (docs/performance.md). `_message` gives them equality by type
# as well as by value, so that `Cancel(1)` never equals another 1-tuple.


class CallContext(NamedTuple):
    """The request context an RPC `call` carries (all optional on the wire)."""

    activity_id: str | None = None
    session_id: str | None = None
    application_id: str | None = None
    application_version: str | None = None
    authorization: str | None = None
    #: User key/value pairs (a frozen `Metadata`); empty: none sent.
    metadata: Mapping[str, str] = EMPTY_METADATA
    #: The W3C traceparent to send; None: derived from the ActivityId where needed.
    traceparent: str | None = None

    def __repr__(self) -> str:
        # The authorization is never shown: reprs end up in logs. Nor are the
        # metadata's values (Metadata's repr shows the keys).
        return (
            f"CallContext(activity_id={self.activity_id!r}, session_id={self.session_id!r}, "
            f"application_id={self.application_id!r}, "
            f"application_version={self.application_version!r}, "
            f"metadata={self.metadata!r}, traceparent={self.traceparent!r})"
        )


class Call(NamedTuple):
    """RPC request, client -> server."""

    id: int
    iface: str
    ver: str
    op: str
    args: list[Any]
    ctx: CallContext
    timeout_ms: int | None = None


class Invoke(NamedTuple):
    """IPC request, frontend -> backend (or backend -> frontend)."""

    id: int
    channel: str
    method: str
    args: list[Any]
    activity_id: str | None = None
    timeout_ms: int | None = None
    #: False: the caller takes one value and sends no stream (an untyped
    #: call), so a stream method refuses it at once. None: not said.
    stream: bool | None = None
    #: The W3C traceparent of the caller (None: none sent).
    traceparent: str | None = None
    #: User key/value pairs (a frozen `Metadata`); empty: none sent.
    metadata: Mapping[str, str] = EMPTY_METADATA


class Result(NamedTuple):
    """Successful reply: the unstructured return value."""

    id: int
    value: Any


@attrs.frozen(slots=True)
class ErrorInfo:
    """What an `error` reply says; maps to the exception raised on the caller."""

    code: str
    status: int
    name: str
    message: str
    details: dict[str, Any] = attrs.field(factory=dict)
    activity_id: str | None = None


class Error(NamedTuple):
    """Failed reply. `id` is None for an error about the connection, not a request."""

    id: int | None
    error: ErrorInfo


class Cancel(NamedTuple):
    """Caller -> callee: stop working on request `id`; no reply is expected."""

    id: int


class Notify(NamedTuple):
    """One-way message, either direction."""

    channel: str
    method: str
    args: list[Any]
    activity_id: str | None = None


class Item(NamedTuple):
    """Callee -> caller: the next item of a call's result stream (STREAMS.md)."""

    id: int
    value: Any


class Credit(NamedTuple):
    """Caller -> callee: it may send `items` more result items, `bytes` more bytes of them."""

    id: int
    items: int
    bytes: int


class Send(NamedTuple):
    """Caller -> callee: the next item of a call's argument stream."""

    id: int
    value: Any


class End(NamedTuple):
    """Caller -> callee: the call's argument stream is complete."""

    id: int


class Ready(NamedTuple):
    """Callee -> caller: it may send `items` more argument items, `bytes` more bytes of them."""

    id: int
    items: int
    bytes: int


#: The messages of a stream, after the `call` or `invoke` that opens it.
STREAM_MESSAGES = (Item, Credit, Send, End, Ready)


class ProgressReport(NamedTuple):
    """Callee -> caller: how far the impl of call `id` got (`tether.report_progress`)."""

    id: int
    progress: Progress


def _equal(self: tuple[Any, ...], other: object) -> bool:
    return type(self) is type(other) and tuple.__eq__(self, other)


def _not_equal(self: tuple[Any, ...], other: object) -> bool:
    return not _equal(self, other)


for _message in (
    CallContext,
    Call,
    Invoke,
    Result,
    Error,
    Cancel,
    Notify,
    ProgressReport,
    *STREAM_MESSAGES,
):
    _message.__eq__ = _equal  # type: ignore[method-assign]
    _message.__ne__ = _not_equal  # type: ignore[assignment,method-assign]
    _message.__hash__ = tuple.__hash__  # type: ignore[method-assign]


# ---------------------------------------------------------------------------
# Decoding the hot messages


def decode_call_fast(obj: dict[str, Any]) -> Call | None:
    # Fast path for the well-formed case; anything odd goes through the
    # checked path below, which names the field that is wrong.
    id_ = obj.get("id")
    iface = obj.get("iface")
    ver = obj.get("ver")
    op = obj.get("op")
    args = obj.get("args")
    ctx_obj = obj.get("ctx")
    timeout = obj.get("timeout_ms")
    if (
        type(id_) is int
        and id_ >= 0
        and type(iface) is str
        and type(ver) is str
        and type(op) is str
        and type(args) is list
        and type(ctx_obj) is dict
        and (timeout is None or (type(timeout) is int and timeout >= 0))
    ):
        get = ctx_obj.get
        if get("metadata") is not None:
            return None  # checked (and frozen) by the checked decoder
        t = get("traceparent")
        if t is not None:
            if type(t) is not str:
                return None  # the checked decoder says what is wrong
            t = valid_traceparent(t)  # an invalid one is ignored (W3C), as there
        a, s, i, v, z = (
            get("activity_id"),
            get("session_id"),
            get("application_id"),
            get("application_version"),
            get("authorization"),
        )
        if (
            (a is None or (type(a) is str and len(a) <= MAX_LABEL_LENGTH and a.isprintable()))
            and (s is None or (type(s) is str and len(s) <= MAX_LABEL_LENGTH and s.isprintable()))
            and (i is None or (type(i) is str and len(i) <= MAX_LABEL_LENGTH and i.isprintable()))
            and (v is None or (type(v) is str and len(v) <= MAX_LABEL_LENGTH and v.isprintable()))
            and (z is None or type(z) is str)
        ):
            context = CallContext(a, s, i, v, z, traceparent=t)
            return Call(id_, iface, ver, op, args, context, timeout)
    return None


def _is_label_or_none(value: Any) -> bool:
    return value is None or (
        type(value) is str and len(value) <= MAX_LABEL_LENGTH and value.isprintable()
    )


def decode_invoke_fast(obj: dict[str, Any]) -> Invoke | None:
    # As `decode_call_fast`: the well-formed case only; None sends it through
    # the checked decoder.
    id_ = obj.get("id")
    channel = obj.get("channel")
    method = obj.get("method")
    args = obj.get("args")
    activity_id = obj.get("activity_id")
    timeout = obj.get("timeout_ms")
    stream = obj.get("stream")
    if (
        type(id_) is int
        and id_ >= 0
        and type(channel) is str
        and type(method) is str
        and type(args) is list
        and (timeout is None or (type(timeout) is int and timeout >= 0))
        and _is_label_or_none(activity_id)
        and (stream is None or type(stream) is bool)
        and obj.get("traceparent") is None
        and obj.get("metadata") is None
    ):
        return Invoke(id_, channel, method, args, activity_id, timeout, stream)
    return None


def decode_notify_fast(obj: dict[str, Any]) -> Notify | None:
    channel = obj.get("channel")
    method = obj.get("method")
    args = obj.get("args")
    activity_id = obj.get("activity_id")
    if (
        type(channel) is str
        and type(method) is str
        and type(args) is list
        and _is_label_or_none(activity_id)
    ):
        return Notify(channel, method, args, activity_id)
    return None
