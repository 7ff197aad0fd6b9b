"""The wire protocol, sans-IO: frozen messages and the functions that encode them.

Every message is a JSON object with a `t` tag (DESIGN.md section 4). Nothing
here knows about sockets, channels or tasks: transports move the bytes that
`encode` makes and hand what they receive to `decode`.

`bytes` values travel two ways. `encode` writes pure JSON, bytes as standard
base64 text, for JSON peers (curl, browsers, SSE); `encode_binary` keeps them
raw beside the JSON in a `BinaryMessage` (`_binary`), for a stream whose peer
takes binary (`MessageStream.binary`). `decode` reads either.

`decode` rejects anything malformed with `InvalidRequest` (never a KeyError or
a crash); when the message's `id` could be read, it is in `details["id"]` so the
receiver can fail that one request instead of the connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import orjson

from ..contexts._metadata import EMPTY_METADATA, Metadata, check_metadata
from ..contexts._trace import valid_traceparent
from ._binary import BinaryMessage, message_size, pack, unpack, unpack_frame
from ._codec import dumps
from ._errors import IncompatibleVersion, InvalidRequest, TetherError
from ._fields import MAX_LABEL_LENGTH as MAX_LABEL_LENGTH
from ._fields import Fields as _Fields
from ._fields import is_label as is_label
from ._messages import (
    Call,
    CallContext,
    Cancel,
    Credit,
    End,
    Error,
    ErrorInfo,
    Invoke,
    Item,
    Notify,
    ProgressReport,
    Ready,
    Result,
    Send,
)
from ._messages import (
    decode_call_fast as _decode_call_fast,
)
from ._messages import (
    decode_invoke_fast as _decode_invoke_fast,
)
from ._messages import (
    decode_notify_fast as _decode_notify_fast,
)
from ._progress import Progress
from ._protocol_hello import (
    Hello,
    InterfaceInfo,
    Welcome,
    decode_hello,
    decode_welcome,
    encode_hello,
    encode_welcome,
)

__all__ = [
    "PROTOCOL_VERSION",
    "BinaryMessage",
    "Call",
    "CallContext",
    "Cancel",
    "Credit",
    "End",
    "Error",
    "ErrorInfo",
    "Hello",
    "Invoke",
    "InterfaceInfo",
    "Item",
    "Message",
    "Notify",
    "ProgressReport",
    "Ready",
    "Result",
    "Send",
    "Welcome",
    "asks_for_ipc",
    "check_hello",
    "decode",
    "encode",
    "encode_binary",
    "message_size",
    "says_binary",
    "unpack_frame",
]

#: The protocol version exchanged in `hello`/`welcome`; bumped on breaking changes.
PROTOCOL_VERSION = 1


Message: TypeAlias = (
    Call
    | Invoke
    | Result
    | Error
    | Cancel
    | Notify
    | Hello
    | Welcome
    | Item
    | Credit
    | Send
    | End
    | Ready
    | ProgressReport
)


# ---------------------------------------------------------------------------
# Encoding


def _encode_call(m: Call) -> dict[str, Any]:
    c = m.ctx
    ctx: dict[str, Any] = {}
    if c.activity_id is not None:
        ctx["activity_id"] = c.activity_id
    if c.session_id is not None:
        ctx["session_id"] = c.session_id
    if c.application_id is not None:
        ctx["application_id"] = c.application_id
    if c.application_version is not None:
        ctx["application_version"] = c.application_version
    if c.authorization is not None:
        ctx["authorization"] = c.authorization
    if c.metadata:
        ctx["metadata"] = dict(c.metadata)
    if c.traceparent is not None:
        ctx["traceparent"] = c.traceparent
    obj: dict[str, Any] = {
        "t": "call",
        "id": m.id,
        "iface": m.iface,
        "ver": m.ver,
        "op": m.op,
        "args": m.args,
        "ctx": ctx,
    }
    if m.timeout_ms is not None:
        obj["timeout_ms"] = m.timeout_ms
    return obj


def error_info_to_json(info: ErrorInfo) -> dict[str, Any]:
    """The `{code, status, name, message, details, activity_id}` object of an error."""
    return {
        "code": info.code,
        "status": info.status,
        "name": info.name,
        "message": info.message,
        "details": info.details,
        "activity_id": info.activity_id,
    }


def _encode_invoke(m: Invoke) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "t": "invoke",
        "id": m.id,
        "channel": m.channel,
        "method": m.method,
        "args": m.args,
    }
    if m.activity_id is not None:
        obj["activity_id"] = m.activity_id
    if m.timeout_ms is not None:
        obj["timeout_ms"] = m.timeout_ms
    if m.stream is not None:
        obj["stream"] = m.stream
    if m.traceparent is not None:
        obj["traceparent"] = m.traceparent
    if m.metadata:
        obj["metadata"] = dict(m.metadata)
    return obj


def _encode_notify(m: Notify) -> dict[str, Any]:
    obj: dict[str, Any] = {"t": "notify", "channel": m.channel, "method": m.method, "args": m.args}
    if m.activity_id is not None:
        obj["activity_id"] = m.activity_id
    return obj


_ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {
    Call: _encode_call,
    Invoke: _encode_invoke,
    Result: lambda m: {"t": "result", "id": m.id, "value": m.value},
    Error: lambda m: {"t": "error", "id": m.id, "error": error_info_to_json(m.error)},
    Cancel: lambda m: {"t": "cancel", "id": m.id},
    Notify: _encode_notify,
    Item: lambda m: {"t": "item", "id": m.id, "value": m.value},
    Credit: lambda m: {"t": "credit", "id": m.id, "items": m.items, "bytes": m.bytes},
    Send: lambda m: {"t": "send", "id": m.id, "value": m.value},
    End: lambda m: {"t": "end", "id": m.id},
    Ready: lambda m: {"t": "ready", "id": m.id, "items": m.items, "bytes": m.bytes},
    Hello: encode_hello,
    Welcome: encode_welcome,
    ProgressReport: lambda m: {"t": "progress", "id": m.id, **m.progress.to_json()},
}


def encode(message: Message) -> bytes:
    """Encode a message as UTF-8 JSON bytes, its bytes values as standard base64 text.

    For a peer that reads JSON only (curl, a browser, SSE).

    Raises:
        TypeError: the message holds a value that is neither JSON nor bytes (a
            `Result.value` that was not unstructured, for instance).
    """
    return dumps(_ENCODERS[type(message)](message))


def encode_binary(message: Message) -> bytes | BinaryMessage:
    """Encode a message for a peer that takes binary: its bytes values raw, beside the JSON.

    Returns:
        JSON bytes, as `encode` makes, when the message holds no bytes values;
        otherwise a `BinaryMessage` (or JSON with base64, for a message past
        the binary form's limits: see `_binary.pack`).

    Raises:
        TypeError: the message holds a value that is neither JSON nor bytes.
    """
    obj = _ENCODERS[type(message)](message)
    try:
        # Plain orjson first: a message without bytes (nearly all) costs what
        # it did before bytes could travel raw.
        return orjson.dumps(obj)
    except TypeError:
        return pack(obj)


# ---------------------------------------------------------------------------
# Decoding


def _decode_call(f: _Fields) -> Call:
    f.with_id()
    ctx = f.sub("ctx", optional=True)
    return Call(
        id=f.id,  # type: ignore[arg-type]
        iface=f.get_str("iface"),
        ver=f.get_str("ver"),
        op=f.get_str("op"),
        args=f.get_list("args"),
        ctx=CallContext(
            activity_id=ctx.get_label("activity_id", optional=True),
            session_id=ctx.get_label("session_id", optional=True),
            application_id=ctx.get_label("application_id", optional=True),
            application_version=ctx.get_label("application_version", optional=True),
            authorization=ctx.get_str("authorization", optional=True),
            metadata=_metadata(ctx),
            traceparent=_traceparent(ctx),
        ),
        timeout_ms=f.get_int("timeout_ms", optional=True),
    )


def _metadata(f: _Fields) -> Metadata:
    """The optional `metadata` member: an object of strings within the limits."""
    if f.obj.get("metadata") is None:
        return EMPTY_METADATA
    try:
        return check_metadata(f.get_str_map("metadata"))
    except ValueError as exc:
        details: dict[str, Any] = {"field": "metadata"}
        if f.id is not None:
            details["id"] = f.id
        message = f"{f.tag!r} message field 'metadata': {exc}"
        raise InvalidRequest(message, details=details) from None


def _traceparent(f: _Fields) -> str | None:
    """The optional `traceparent` member: a string; an invalid value is ignored (W3C)."""
    return valid_traceparent(f.get_str("traceparent", optional=True))


def _decode_invoke(f: _Fields) -> Invoke:
    f.with_id()
    return Invoke(
        id=f.id,  # type: ignore[arg-type]
        channel=f.get_str("channel"),
        method=f.get_str("method"),
        args=f.get_list("args"),
        activity_id=f.get_label("activity_id", optional=True),
        timeout_ms=f.get_int("timeout_ms", optional=True),
        stream=f.get_bool("stream") if f.obj.get("stream") is not None else None,
        traceparent=_traceparent(f),
        metadata=_metadata(f),
    )


def _value(f: _Fields) -> Any:
    """The `value` member of a result or a stream item (null is a value; absent is not)."""
    if "value" not in f.obj:
        raise f._fail("value", "present", None)
    return f.obj["value"]


def _decode_result(f: _Fields) -> Result:
    f.with_id()
    return Result(id=f.id, value=_value(f))  # type: ignore[arg-type]


def decode_error_info(f: _Fields) -> ErrorInfo:
    """Read the `{code, status, name, message, details, activity_id}` object.

    An `activity_id` that is not a label (`is_label`) is dropped rather than
    refused: the error still answers its request.
    """
    activity_id = f.get_str("activity_id", optional=True)
    return ErrorInfo(
        code=f.get_str("code"),
        status=f.get_int("status"),
        name=f.get_str("name", optional=True) or "",
        message=f.get_str("message", optional=True) or "",
        details=f.get_dict("details", optional=True),
        activity_id=activity_id if activity_id is None or is_label(activity_id) else None,
    )


def _decode_error(f: _Fields) -> Error:
    f.with_id(optional=True)
    return Error(id=f.id, error=decode_error_info(f.sub("error")))


def _decode_progress(f: _Fields) -> ProgressReport:
    f.with_id()
    try:
        return ProgressReport(f.id, Progress.from_json(f.obj))  # type: ignore[arg-type]
    except ValueError as exc:
        raise f._fail("done", f"a report ({exc})", f.obj.get("done")) from None


_DECODERS: dict[str, Callable[[_Fields], Message]] = {
    "call": _decode_call,
    "invoke": _decode_invoke,
    "result": _decode_result,
    "error": _decode_error,
    "cancel": lambda f: Cancel(id=f.get_int("id")),
    "notify": lambda f: Notify(
        channel=f.get_str("channel"),
        method=f.get_str("method"),
        args=f.get_list("args"),
        activity_id=f.get_label("activity_id", optional=True),
    ),
    "hello": decode_hello,
    "welcome": decode_welcome,
    "item": lambda f: Item(id=f.required_id(), value=_value(f)),
    "credit": lambda f: Credit(f.required_id(), f.get_int("items"), f.get_int("bytes")),
    "send": lambda f: Send(id=f.required_id(), value=_value(f)),
    "end": lambda f: End(id=f.get_int("id")),
    "ready": lambda f: Ready(f.required_id(), f.get_int("items"), f.get_int("bytes")),
    "progress": _decode_progress,
}


def decode(data: bytes | bytearray | memoryview | str | BinaryMessage) -> Message:
    """Decode one message: JSON (bytes or text), a BinaryMessage, or a binary frame.

    The attachments of a BinaryMessage or frame are put back at their paths:
    the message holds `bytes` values where the sender's did.

    Raises:
        InvalidRequest: not JSON, not an object, an unknown `t`, a field that is
            missing or of the wrong type, or a malformed binary message. `details`
            names the field, and holds the request `id` when it could be read.
    """
    if isinstance(data, BinaryMessage) or (type(data) is not str and data[:1] == b"\x00"):
        # A frame is not handed to orjson first: it would check a MiB of
        # attachments as UTF-8 only to refuse them.
        obj = unpack(data, None)
    else:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            # A binary frame (its first byte is 0), or garbage.
            obj = unpack(data, exc)
    if type(obj) is not dict:
        raise InvalidRequest(f"a message must be a JSON object, got {type(obj).__name__}")
    tag = obj.get("t")
    # Fast paths for the messages of every call, invoke and notification;
    # anything odd falls through to the checked decoders, which name the field
    # that is wrong.
    if tag == "result":
        id_ = obj.get("id")
        if type(id_) is int and id_ >= 0 and "value" in obj:
            return Result(id_, obj["value"])
    elif tag == "item":
        id_ = obj.get("id")
        if type(id_) is int and id_ >= 0 and "value" in obj:
            return Item(id_, obj["value"])
    elif tag == "call":
        call = _decode_call_fast(obj)
        if call is not None:
            return call
    elif tag == "invoke":
        invoke = _decode_invoke_fast(obj)
        if invoke is not None:
            return invoke
    elif tag == "notify":
        notify = _decode_notify_fast(obj)
        if notify is not None:
            return notify
    decoder = _DECODERS.get(tag) if type(tag) is str else None
    if decoder is None or type(tag) is not str:
        details: dict[str, Any] = {"field": "t"}
        id_ = obj.get("id")
        if type(id_) is int and id_ >= 0:
            details["id"] = id_
        # Quoted briefly: a peer's tag may be megabytes (a binary frame can
        # even put an attachment there), and refusals are sent and logged.
        shown = (
            f"{tag!r:.60}" if tag is None or type(tag) is str else f"of type {type(tag).__name__}"
        )
        raise InvalidRequest(
            f"unknown message type {shown}: expected one of {', '.join(sorted(_DECODERS))}",
            details=details,
        )
    return decoder(_Fields(obj, tag))


def check_hello(message: Message, mode: str) -> Hello:
    """Check the first message of a connection, as every backend does.

    Args:
        message: What the client sent first.
        mode: The kind of session this endpoint serves, `"rpc"` or `"ipc"`.

    Raises:
        InvalidRequest: it is not a `hello`, or asks for the other kind of session.
        IncompatibleVersion: the client speaks another protocol version.
    """
    if not isinstance(message, Hello):
        raise InvalidRequest(f"expected 'hello' first, got {type(message).__name__}")
    if message.protocol != PROTOCOL_VERSION:
        raise IncompatibleVersion(
            f"this backend speaks tether protocol {PROTOCOL_VERSION}, the client speaks "
            f"{message.protocol}: upgrade the older side"
        )
    if message.mode != mode:
        right = "connect_ipc()" if message.mode == "ipc" else "connect()"
        raise InvalidRequest(
            f"this endpoint serves {mode.upper()} sessions, the client asked for "
            f"{message.mode!r}: point {right} at an endpoint that serves {message.mode.upper()}"
        )
    return message


def says_binary(data: bytes | bytearray | memoryview | str | BinaryMessage) -> bool:
    """Whether a `hello` or `welcome` says its sender reads binary frames.

    For a transport that sends binary frames only to a peer that said so.
    Anything else (another message, a malformed one) says no.
    """
    try:
        message = decode(data)
    except TetherError:
        return False
    return isinstance(message, (Hello, Welcome)) and message.binary


def asks_for_ipc(data: bytes | str | BinaryMessage) -> bool:
    """Whether a connection's first message is a `hello` asking for an IPC session.

    For a server that serves both kinds on one endpoint: it peeks at the first
    message to choose the session; anything else (malformed, RPC) goes to the
    RPC session, which answers it.
    """
    try:
        message = decode(data)
    except TetherError:
        return False
    return isinstance(message, Hello) and message.mode == "ipc"
