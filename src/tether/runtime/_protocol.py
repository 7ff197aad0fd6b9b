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
from typing import Any, NamedTuple, TypeAlias

import attrs
import orjson

from ._binary import BinaryMessage, message_size, pack, unpack, unpack_frame
from ._codec import dumps
from ._described import InterfaceInfo as InterfaceInfo
from ._errors import IncompatibleVersion, InvalidRequest, TetherError
from ._fields import MAX_LABEL_LENGTH as MAX_LABEL_LENGTH
from ._fields import Fields as _Fields
from ._fields import is_label as is_label
from ._progress import Progress

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

    def __repr__(self) -> str:
        # The authorization is never shown: reprs end up in logs.
        return (
            f"CallContext(activity_id={self.activity_id!r}, session_id={self.session_id!r}, "
            f"application_id={self.application_id!r}, "
            f"application_version={self.application_version!r})"
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


class ProgressReport(NamedTuple):
    """Callee -> caller: how far the impl of call `id` got (`tether.report_progress`)."""

    id: int
    progress: Progress


#: The messages of a stream, after the `call` or `invoke` that opens it.
STREAM_MESSAGES = (Item, Credit, Send, End, Ready)


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


@attrs.frozen(slots=True)
class Hello:
    """Opens a session: the client's protocol version, application and channels.

    `mode` says what the session is for: `"rpc"` (loosely coupled calls, each
    with its full context) or `"ipc"` (a paired session over the `channels`).
    `authorization` is the credential an IPC frontend presents to the backend's
    `authorize` hook; it is never shown in the repr. `binary`: the client
    reads binary frames (`"binary": true` on the wire; absent means false).
    """

    protocol: int
    session_id: str | None = None
    application_id: str | None = None
    application_version: str | None = None
    channels: dict[str, str] = attrs.field(factory=dict)
    mode: str = "rpc"
    authorization: str | None = attrs.field(default=None, repr=False)
    binary: bool = False


@attrs.frozen(slots=True)
class Welcome:
    """Accepts a session: the server's protocol version, channels and interfaces.

    `binary`: the server reads binary frames, and will send them (`"binary":
    true` on the wire; absent means false).
    """

    protocol: int
    session_id: str
    channels: dict[str, str] = attrs.field(factory=dict)
    interfaces: dict[str, InterfaceInfo] = attrs.field(factory=dict)
    binary: bool = False


Message: TypeAlias = (
    Call
    | Invoke
    | Result
    | Error
    | Cancel
    | Notify
    | Hello
    | Welcome
    | ProgressReport
    | Item
    | Credit
    | Send
    | End
    | Ready
)


# ---------------------------------------------------------------------------
# Encoding


def _drop_none(obj: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if value is not None}


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


def _encode_hello(m: Hello) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "t": "hello",
        "protocol": m.protocol,
        "session_id": m.session_id,
        "application": _drop_none({"id": m.application_id, "version": m.application_version}),
        "channels": m.channels,
        "mode": m.mode,
    }
    if m.authorization is not None:
        obj["authorization"] = m.authorization
    if m.binary:
        obj["binary"] = True
    return obj


def _encode_welcome(m: Welcome) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "t": "welcome",
        "protocol": m.protocol,
        "session_id": m.session_id,
        "channels": m.channels,
        "interfaces": {name: info.to_json() for name, info in m.interfaces.items()},
    }
    if m.binary:
        obj["binary"] = True
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
    ProgressReport: lambda m: {"t": "progress", "id": m.id, **m.progress.to_json()},
    Hello: _encode_hello,
    Welcome: _encode_welcome,
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


def _decode_call_fast(obj: dict[str, Any]) -> Call | None:
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
            return Call(id_, iface, ver, op, args, CallContext(a, s, i, v, z), timeout)
    return None


def _is_label_or_none(value: Any) -> bool:
    return value is None or (
        type(value) is str and len(value) <= MAX_LABEL_LENGTH and value.isprintable()
    )


def _decode_invoke_fast(obj: dict[str, Any]) -> Invoke | None:
    # As `_decode_call_fast`: the well-formed case only; None sends it through
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
    ):
        return Invoke(id_, channel, method, args, activity_id, timeout, stream)
    return None


def _decode_notify_fast(obj: dict[str, Any]) -> Notify | None:
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
        ),
        timeout_ms=f.get_int("timeout_ms", optional=True),
    )


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


#: The session kinds a `hello` may ask for.
MODES = ("rpc", "ipc")


def _decode_hello(f: _Fields) -> Hello:
    app = f.sub("application", optional=True)
    mode = f.get_str("mode", optional=True)
    if mode is None:
        mode = "rpc"
    elif mode not in MODES:
        raise f._fail("mode", "'rpc' or 'ipc'", mode)
    return Hello(
        protocol=f.get_int("protocol"),
        session_id=f.get_label("session_id", optional=True),
        application_id=app.get_label("id", optional=True),
        application_version=app.get_label("version", optional=True),
        channels=f.get_str_map("channels"),
        mode=mode,
        authorization=f.get_str("authorization", optional=True),
        binary=f.get_bool("binary"),
    )


def _decode_welcome(f: _Fields) -> Welcome:
    interfaces: dict[str, InterfaceInfo] = {}
    for name, raw in f.get_dict("interfaces", optional=True).items():
        try:
            interfaces[name] = InterfaceInfo.from_json(raw)
        except ValueError:
            raise f._fail(
                f"interfaces.{name}", "a version and an array of operations", raw
            ) from None
    return Welcome(
        protocol=f.get_int("protocol"),
        session_id=f.get_label("session_id"),
        channels=f.get_str_map("channels"),
        interfaces=interfaces,
        binary=f.get_bool("binary"),
    )


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
    "hello": _decode_hello,
    "welcome": _decode_welcome,
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
