"""The sans-IO wire protocol: every message round-trips, and bad input is InvalidRequest."""

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tether
from tether.contexts._metadata import Metadata
from tether.runtime._protocol import (
    PROTOCOL_VERSION,
    Call,
    CallContext,
    Cancel,
    Error,
    ErrorInfo,
    Hello,
    InterfaceInfo,
    Invoke,
    Message,
    Notify,
    Result,
    Welcome,
    decode,
    encode,
)

# ---------------------------------------------------------------------------
# Strategies

ids = st.integers(0, 2**63 - 1)
texts = st.text(max_size=12)
opt_texts = st.none() | texts
# ActivityIds, session and application ids: printable, short (see `is_label`).
labels = texts.filter(str.isprintable)
opt_labels = st.none() | labels
timeouts = st.none() | st.integers(0, 2**40)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=12,
)
json_lists = st.lists(json_values, max_size=4)
json_objects = st.dictionaries(st.text(max_size=5), json_values, max_size=4)
str_maps = st.dictionaries(texts, texts, max_size=3)

# Request metadata: W3C Baggage keys, any text values; a valid traceparent or none.
metadata_keys = st.text("abcXYZ019-_.*|~!", min_size=1, max_size=8)
metadatas = st.dictionaries(metadata_keys, texts, max_size=3).map(Metadata)
traceparents = st.none() | st.builds(
    "00-{}-{}-{}".format,
    st.text("0123456789abcdef", min_size=32, max_size=32).filter(lambda t: t != "0" * 32),
    st.text("0123456789abcdef", min_size=16, max_size=16).filter(lambda t: t != "0" * 16),
    st.sampled_from(["00", "01"]),
)
call_contexts = st.builds(
    CallContext, opt_labels, opt_labels, opt_labels, opt_labels, opt_texts, metadatas, traceparents
)
calls = st.builds(Call, ids, texts, texts, texts, json_lists, call_contexts, timeouts)
invokes = st.builds(
    Invoke,
    ids,
    texts,
    texts,
    json_lists,
    opt_labels,
    timeouts,
    st.none() | st.booleans(),
    traceparents,
    metadatas,
)
results = st.builds(Result, ids, json_values)
error_infos = st.builds(
    ErrorInfo, texts, st.integers(0, 999), texts, texts, json_objects, opt_labels
)
errors = st.builds(Error, st.none() | ids, error_infos)
cancels = st.builds(Cancel, ids)
notifies = st.builds(Notify, texts, texts, json_lists, opt_labels)
hellos = st.builds(
    Hello,
    st.integers(0, 100),
    opt_labels,
    opt_labels,
    opt_labels,
    str_maps,
    st.sampled_from(["rpc", "ipc"]),
    binary=st.booleans(),
)
interface_infos = st.builds(InterfaceInfo, texts, st.lists(texts, max_size=3).map(tuple))
welcomes = st.builds(
    Welcome,
    st.integers(0, 100),
    labels,
    str_maps,
    st.dictionaries(texts, interface_infos, max_size=3),
    binary=st.booleans(),
)
messages: st.SearchStrategy[Message] = st.one_of(
    calls, invokes, results, errors, cancels, notifies, hellos, welcomes
)

STRATEGIES: dict[str, st.SearchStrategy[Message]] = {
    "call": calls,
    "invoke": invokes,
    "result": results,
    "error": errors,
    "cancel": cancels,
    "notify": notifies,
    "hello": hellos,
    "welcome": welcomes,
}


# ---------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_round_trip(kind: str, data: st.DataObject) -> None:
    """decode(encode(m)) == m for every message type, and the wire tag is the type's."""
    message = data.draw(STRATEGIES[kind])
    wire = encode(message)
    assert isinstance(wire, bytes)
    assert json.loads(wire)["t"] == kind
    assert decode(wire) == message


@pytest.mark.parametrize(
    "message",
    [
        Call(1, "Iface", "1.0.0", "op", [], CallContext()),
        Call(
            2**53,
            "Iface",
            "1.2.3-dev.1",
            "op",
            [1, "two", [3.5], {"four": None}],
            CallContext("act", "sess", "app", "9.9.9", "Bearer xyz"),
            1500,
        ),
        Invoke(0, "channel", "method", [True], "act", 0),
        Invoke(5, "channel", "method", []),
        Result(7, None),
        Result(7, {"nested": [1, 2, {"x": None}]}),
        Error(None, ErrorInfo("internal", 500, "RemoteError", "boom")),
        Error(3, ErrorInfo("bad-request", 400, "InvalidRequest", "no", {"field": "x"}, "act")),
        Cancel(9),
        Notify("chan", "changed", [{"id": 1}]),
        Notify("chan", "changed", [], "act"),
        Hello(PROTOCOL_VERSION),
        Hello(PROTOCOL_VERSION, "sess", "app", "1.0.0", {"editor": "1.0.0"}),
        Welcome(PROTOCOL_VERSION, "sess"),
        Welcome(
            PROTOCOL_VERSION,
            "sess",
            {"editor": "1.0.0"},
            {
                "Robots": InterfaceInfo("1.0.0", ("count", "move")),
                "Empty": InterfaceInfo("0.1.0", ()),
            },
        ),
    ],
    ids=repr,
)
def test_round_trip_examples(message: Message) -> None:
    """Hand-picked messages, including every optional field both set and unset."""
    assert decode(encode(message)) == message


def test_decode_accepts_bytes_like_and_text() -> None:
    """decode reads bytes, bytearray, memoryview and str."""
    wire = encode(Cancel(4))
    for data in (wire, bytearray(wire), memoryview(wire), wire.decode()):
        assert decode(data) == Cancel(4)


def test_call_encoding_leaves_out_unset_context_fields() -> None:
    """An empty context and no timeout leave nothing on the wire but an empty ctx."""
    obj = json.loads(encode(Call(1, "I", "1.0.0", "op", [], CallContext())))
    assert obj == {
        "t": "call",
        "id": 1,
        "iface": "I",
        "ver": "1.0.0",
        "op": "op",
        "args": [],
        "ctx": {},
    }


def test_call_without_ctx_decodes_to_empty_context() -> None:
    """A call with no ctx object is a call with an empty request context."""
    wire = b'{"t":"call","id":1,"iface":"I","ver":"1.0.0","op":"op","args":[]}'
    assert decode(wire) == Call(1, "I", "1.0.0", "op", [], CallContext())


def test_encode_refuses_values_that_are_not_json() -> None:
    """A Result whose value was not unstructured is a TypeError at encode, not garbage."""
    with pytest.raises(TypeError):
        encode(Result(1, object()))


def test_authorization_is_not_in_repr() -> None:
    """The authorization token never appears in a repr (so never in a log line)."""
    secret = "Bearer s3cr3t-t0ken"
    ctx = CallContext(activity_id="act-1", authorization=secret)
    call = Call(1, "I", "1.0.0", "op", [], ctx)
    assert secret not in repr(ctx)
    assert secret not in repr(call)
    assert "act-1" in repr(ctx)  # the other fields are still shown
    decoded = decode(encode(call))
    assert isinstance(decoded, Call)
    assert decoded.ctx.authorization == secret  # ... and it still travels


def test_messages_are_frozen() -> None:
    """Messages are immutable values."""
    message = Cancel(1)
    with pytest.raises(AttributeError):  # attrs' FrozenInstanceError is one too
        message.id = 2  # type: ignore[misc]


# ---------------------------------------------------------------------------
# Malformed input: always InvalidRequest, naming the field and the id when known

VALID: dict[str, dict[str, Any]] = {
    "call": {
        "t": "call",
        "id": 7,
        "iface": "I",
        "ver": "1.0.0",
        "op": "op",
        "args": [1],
        "ctx": {
            "activity_id": "a",
            "session_id": "s",
            "application_id": "app",
            "application_version": "1.0.0",
            "authorization": "z",
        },
        "timeout_ms": 10,
    },
    "invoke": {
        "t": "invoke",
        "id": 7,
        "channel": "c",
        "method": "m",
        "args": [],
        "activity_id": "a",
        "timeout_ms": 10,
    },
    "result": {"t": "result", "id": 7, "value": {"x": 1}},
    "error": {
        "t": "error",
        "id": 7,
        "error": {
            "code": "internal",
            "status": 500,
            "name": "RemoteError",
            "message": "boom",
            "details": {},
            "activity_id": "a",
        },
    },
    "cancel": {"t": "cancel", "id": 7},
    "notify": {"t": "notify", "channel": "c", "method": "m", "args": [], "activity_id": "a"},
    "hello": {
        "t": "hello",
        "protocol": 1,
        "session_id": "s",
        "application": {"id": "app", "version": "1.0.0"},
        "channels": {"editor": "1.0.0"},
        "mode": "ipc",
    },
    "welcome": {
        "t": "welcome",
        "protocol": 1,
        "session_id": "s",
        "channels": {"editor": "1.0.0"},
        "interfaces": {"Robots": {"version": "1.0.0", "operations": ["count"]}},
    },
}

HAS_ID = {"call", "invoke", "result", "error", "cancel"}

# (kind, path to the field, is it required, what it must be)
INT, STR, LIST, DICT, STR_MAP, MODE = "int", "str", "list", "dict", "str_map", "mode"
FIELDS: list[tuple[str, tuple[str, ...], bool, str]] = [
    ("call", ("id",), True, INT),
    ("call", ("iface",), True, STR),
    ("call", ("ver",), True, STR),
    ("call", ("op",), True, STR),
    ("call", ("args",), True, LIST),
    ("call", ("ctx",), False, DICT),
    ("call", ("ctx", "activity_id"), False, STR),
    ("call", ("ctx", "session_id"), False, STR),
    ("call", ("ctx", "application_id"), False, STR),
    ("call", ("ctx", "application_version"), False, STR),
    ("call", ("ctx", "authorization"), False, STR),
    ("call", ("timeout_ms",), False, INT),
    ("invoke", ("id",), True, INT),
    ("invoke", ("channel",), True, STR),
    ("invoke", ("method",), True, STR),
    ("invoke", ("args",), True, LIST),
    ("invoke", ("activity_id",), False, STR),
    ("invoke", ("timeout_ms",), False, INT),
    ("result", ("id",), True, INT),
    ("error", ("id",), False, INT),
    ("error", ("error",), True, DICT),
    ("error", ("error", "code"), True, STR),
    ("error", ("error", "status"), True, INT),
    ("error", ("error", "name"), False, STR),
    ("error", ("error", "message"), False, STR),
    ("error", ("error", "details"), False, DICT),
    ("error", ("error", "activity_id"), False, STR),
    ("cancel", ("id",), True, INT),
    ("notify", ("channel",), True, STR),
    ("notify", ("method",), True, STR),
    ("notify", ("args",), True, LIST),
    ("notify", ("activity_id",), False, STR),
    ("hello", ("protocol",), True, INT),
    ("hello", ("session_id",), False, STR),
    ("hello", ("application",), False, DICT),
    ("hello", ("application", "id"), False, STR),
    ("hello", ("application", "version"), False, STR),
    ("hello", ("channels",), False, STR_MAP),
    ("hello", ("mode",), False, MODE),
    ("welcome", ("protocol",), True, INT),
    ("welcome", ("session_id",), True, STR),
    ("welcome", ("channels",), False, STR_MAP),
    ("welcome", ("interfaces",), False, DICT),
    ("welcome", ("interfaces", "Robots", "version"), True, STR),
    ("welcome", ("interfaces", "Robots", "operations"), True, LIST),
]

WRONG_VALUES: dict[str, list[Any]] = {
    INT: [-1, True, False, "7", 7.5, 7.0, [7], {"id": 7}],
    STR: [1, True, 2.5, ["s"], {"s": "s"}],
    LIST: ["[]", 1, True, {"0": 1}],
    DICT: ["{}", 1, True, ["a"]],
    STR_MAP: ["{}", 1, ["a"], {"editor": 1}, {"editor": None}, {"editor": ["1.0.0"]}],
    MODE: ["RPC", "ipc ", "", "session", 1, True, ["ipc"]],
}


def _with(kind: str, path: tuple[str, ...], value: Any, *, delete: bool = False) -> bytes:
    obj = copy.deepcopy(VALID[kind])
    target = obj
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(obj).encode()


def _expected_id(kind: str, path: tuple[str, ...]) -> int | None:
    return 7 if kind in HAS_ID and path != ("id",) else None


def _check_invalid(data: bytes, field: str, expected_id: int | None) -> tether.InvalidRequest:
    with pytest.raises(tether.InvalidRequest) as info:
        decode(data)
    exc = info.value
    assert exc.code == "bad-request"
    assert exc.details.get("field") == field
    assert exc.details.get("id") == expected_id
    assert field in exc.message
    return exc


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_examples_decode(kind: str) -> None:
    """The base messages the malformed cases mutate are themselves valid."""
    message = decode(json.dumps(VALID[kind]).encode())
    assert json.loads(encode(message)) == {
        key: value for key, value in VALID[kind].items() if value is not None
    }


REQUIRED_CASES = [
    pytest.param(kind, path, id=f"{kind}.{'.'.join(path)}")
    for kind, path, required, _ in FIELDS
    if required
]


@pytest.mark.parametrize(("kind", "path"), REQUIRED_CASES)
def test_missing_required_field(kind: str, path: tuple[str, ...]) -> None:
    """Leaving out a required field is InvalidRequest naming it (and the id when read)."""
    _check_invalid(_with(kind, path, None, delete=True), path[-1], _expected_id(kind, path))


@pytest.mark.parametrize(("kind", "path"), REQUIRED_CASES)
def test_null_required_field(kind: str, path: tuple[str, ...]) -> None:
    """null in a required field is the same as leaving it out."""
    _check_invalid(_with(kind, path, None), path[-1], _expected_id(kind, path))


WRONG_TYPE_CASES = [
    pytest.param(kind, path, value, id=f"{kind}.{'.'.join(path)}={value!r}")
    for kind, path, _, shape in FIELDS
    for value in WRONG_VALUES[shape]
]


@pytest.mark.parametrize(("kind", "path", "value"), WRONG_TYPE_CASES)
def test_field_of_wrong_type(kind: str, path: tuple[str, ...], value: Any) -> None:
    """A field of the wrong JSON type (or a negative/bool integer) is InvalidRequest naming it."""
    _check_invalid(_with(kind, path, value), path[-1], _expected_id(kind, path))


OPTIONAL_CASES = [
    pytest.param(kind, path, id=f"{kind}.{'.'.join(path)}")
    for kind, path, required, _ in FIELDS
    if not required
]


@pytest.mark.parametrize(("kind", "path"), OPTIONAL_CASES)
def test_optional_field_may_be_missing_or_null(kind: str, path: tuple[str, ...]) -> None:
    """Optional fields may be left out or null; the message still decodes."""
    left_out = decode(_with(kind, path, None, delete=True))
    null = decode(_with(kind, path, None))
    assert left_out == null


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"not json",
        b"\xff\xfe\x00",
        b'{"t": "cancel", "id": 1',
        b'{"t": "cancel", "id": NaN}',
        b'{"t": "cancel", "id": 1e400}',
    ],
)
def test_not_json(data: bytes) -> None:
    """Bytes that are not JSON are InvalidRequest."""
    with pytest.raises(tether.InvalidRequest):
        decode(data)


@pytest.mark.parametrize("value", [[], [1, 2], "call", 1, 1.5, True, None])
def test_json_that_is_not_an_object(value: Any) -> None:
    """A JSON value other than an object is InvalidRequest saying what came."""
    with pytest.raises(tether.InvalidRequest, match="must be a JSON object"):
        decode(json.dumps(value).encode())


@pytest.mark.parametrize("tag", [None, "bogus", "", "CALL", 1, True, ["call"], {"t": "call"}])
def test_unknown_or_missing_tag(tag: Any) -> None:
    """A missing or unknown `t` is InvalidRequest with field "t" listing the known ones."""
    obj = dict(VALID["cancel"])
    obj["t"] = tag
    for data in (json.dumps(obj).encode(), json.dumps({"id": 7}).encode()):
        with pytest.raises(tether.InvalidRequest, match="cancel") as info:
            decode(data)
        assert info.value.details["field"] == "t"


def test_unknown_tag_keeps_a_readable_id() -> None:
    """An unknown message type with a readable id says that id, so only it fails.

    The module promises: "when the message's id could be read, it is in details['id']".
    """
    with pytest.raises(tether.InvalidRequest) as info:
        decode(b'{"t": "call-v2", "id": 41, "iface": "I"}')
    assert info.value.details.get("id") == 41


@pytest.mark.parametrize(
    ("interfaces", "field"),
    [
        ([], "interfaces"),
        ("Robots", "interfaces"),
        ({"Robots": {"version": "1.0.0"}}, "operations"),
        ({"Robots": {"operations": []}}, "version"),
        ({"Robots": {"version": 1, "operations": []}}, "version"),
        ({"Robots": {"version": "1.0.0", "operations": "count"}}, "operations"),
        ({"Robots": {"version": "1.0.0", "operations": [1]}}, "operations"),
        ({"Robots": {"version": "1.0.0", "operations": [None]}}, "operations"),
        ({"Robots": {"version": "1.0.0", "operations": [["count"]]}}, "operations"),
    ],
)
def test_welcome_with_bad_interfaces(interfaces: Any, field: str) -> None:
    """A welcome whose interfaces table is malformed is InvalidRequest naming the field."""
    obj = dict(VALID["welcome"], interfaces=interfaces)
    _check_invalid(json.dumps(obj).encode(), field, None)


@pytest.mark.parametrize("entry", [3, "1.0.0", None, ["1.0.0", ["count"]]])
def test_welcome_interface_entry_that_is_not_an_object(entry: Any) -> None:
    """An interfaces entry that is not an object is refused, and the message says what came.

    It must not claim the entry had "nothing" in it, and it names the interface.
    """
    obj = dict(VALID["welcome"], interfaces={"Robots": entry})
    with pytest.raises(tether.InvalidRequest) as info:
        decode(json.dumps(obj).encode())
    assert "Robots" in info.value.message
    assert "got nothing" not in info.value.message or entry is None


# ---------------------------------------------------------------------------
# Fuzzing: decode returns a message or raises InvalidRequest, nothing else


def _decode_or_invalid(data: bytes | str) -> Message | None:
    error: tether.InvalidRequest | None
    try:
        message = decode(data)
    except tether.InvalidRequest as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert isinstance(error.details, dict)
        assert error.details.get("id") is None or type(error.details["id"]) is int
        return None
    # Whatever decodes is a message that encodes again to the same message.
    assert isinstance(message, (Call, Invoke, Result, Error, Cancel, Notify, Hello, Welcome))
    assert decode(encode(message)) == message
    return message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    """Arbitrary bytes: a message or InvalidRequest."""
    _decode_or_invalid(data)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=64))
def test_fuzz_arbitrary_text(data: str) -> None:
    """Arbitrary text (including lone surrogates): a message or InvalidRequest."""
    _decode_or_invalid(data)


any_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: the stdlib writes them, orjson must cope
    | st.floats()  # NaN and infinities: the stdlib writes them, orjson refuses them
    | st.text(max_size=8)
    | st.sampled_from(sorted(VALID)),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["t", "id", "args", "ctx", "error", "value"]) | st.text(max_size=4),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(any_json)
def test_fuzz_arbitrary_json(value: Any) -> None:
    """Any JSON value, encoded by the stdlib: a message or InvalidRequest."""
    _decode_or_invalid(json.dumps(value).encode())


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A valid message with some fields replaced by arbitrary JSON, deleted or added."""
    obj = copy.deepcopy(VALID[draw(st.sampled_from(sorted(VALID)))])
    for _ in range(draw(st.integers(1, 3))):
        # Walk down into a random nested object, then change one key in it.
        target = obj
        while True:
            nested = [key for key, value in target.items() if isinstance(value, dict)]
            if not nested or draw(st.booleans()):
                break
            target = target[draw(st.sampled_from(nested))]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "add" or not target:
            target[draw(st.text(max_size=4))] = draw(any_json)
            continue
        key = draw(st.sampled_from(sorted(target)))
        if action == "delete":
            del target[key]
        else:
            target[key] = draw(any_json)
    return json.dumps(obj).encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_messages())
def test_fuzz_mutated_valid_messages(data: bytes) -> None:
    """Valid messages with fields replaced, deleted or added: a message or InvalidRequest."""
    _decode_or_invalid(data)


@settings(max_examples=200, deadline=None)
@given(messages, st.data())
def test_fuzz_truncated_messages(message: Message, data: st.DataObject) -> None:
    """Any strict prefix of a valid encoding is InvalidRequest (or a shorter valid message)."""
    wire = encode(message)
    cut = data.draw(st.integers(0, len(wire) - 1))
    _decode_or_invalid(wire[:cut])


def test_messages_are_equal_only_to_messages_of_their_type() -> None:
    """Per-request messages are NamedTuples, but never equal to another type's values."""
    assert Cancel(1) == Cancel(1)
    assert Cancel(1) != (1,)
    assert Result(1, None) != Error(1, None)  # type: ignore[arg-type]
    assert Result(1, [1]) != (1, [1])
    assert hash(Cancel(3)) == hash(Cancel(3))
    assert len({Cancel(1), Cancel(1), Cancel(2)}) == 2


# ---------------------------------------------------------------------------
# Labels: what ends up in every log line of a request


LABELS = [
    ("call", ("ctx", "activity_id")),
    ("call", ("ctx", "session_id")),
    ("call", ("ctx", "application_id")),
    ("call", ("ctx", "application_version")),
    ("invoke", ("activity_id",)),
    ("notify", ("activity_id",)),
    ("hello", ("session_id",)),
    ("hello", ("application", "id")),
    ("hello", ("application", "version")),
    ("welcome", ("session_id",)),
]
GOOD = {
    "call": {"t": "call", "id": 7, "iface": "I", "ver": "1.0.0", "op": "o", "args": [], "ctx": {}},
    "invoke": {"t": "invoke", "id": 7, "channel": "c", "method": "m", "args": []},
    "notify": {"t": "notify", "channel": "c", "method": "m", "args": []},
    "hello": {"t": "hello", "protocol": 1, "application": {}, "channels": {}},
    "welcome": {"t": "welcome", "protocol": 1, "session_id": "s", "channels": {}},
}


@pytest.mark.parametrize(("kind", "path"), LABELS)
@pytest.mark.parametrize(
    "bad",
    [
        "a1\n2024-01-01 INFO forged line",  # a line break and a forged log line
        "\x1b[2Jcleared",  # a terminal escape
        "tab\there",
        "x" * 201,  # longer than MAX_LABEL_LENGTH
    ],
)
def test_labels_with_line_breaks_or_too_long_are_refused_naming_the_field(
    kind: str, path: tuple[str, ...], bad: str
) -> None:
    """A peer cannot write line breaks, escapes or megabytes into log lines through
    an ActivityId or an id: the message is refused as malformed (the request's
    id, when it has one, in the details so only that request fails)."""
    message = json.loads(json.dumps(GOOD[kind]))
    target = message
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = bad
    with pytest.raises(
        tether.InvalidRequest, match=f"field '{path[-1]}' must be printable text"
    ) as caught:
        decode(json.dumps(message))
    assert caught.value.details["field"] == path[-1]
    if "id" in message:
        assert caught.value.details["id"] == 7
    # The same at the limit is taken.
    target[path[-1]] = "x" * 200
    decode(json.dumps(message))


def test_an_error_whose_activity_id_is_not_a_label_still_answers_its_request() -> None:
    """A reply is not refused for its ActivityId (its caller would wait forever):
    a bad one is dropped."""
    error = decode(
        json.dumps(
            {
                "t": "error",
                "id": 3,
                "error": {"code": "not-found", "status": 404, "activity_id": "a\nforged"},
            }
        )
    )
    assert isinstance(error, Error)
    assert error.id == 3
    assert error.error.activity_id is None


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later-fields",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "not a traceparent",
        "x" * 600,
    ],
)
def test_a_call_with_a_traceparent_decodes_on_the_fast_path_as_the_checked_decoder_does(
    traceparent: str,
) -> None:
    """The browser client sends a traceparent with every call: keep those on the fast path."""
    from tether.runtime._fields import Fields
    from tether.runtime._messages import decode_call_fast
    from tether.runtime._protocol import _decode_call

    obj = {
        "t": "call", "id": 3, "iface": "I", "ver": "1.0.0", "op": "o", "args": [1],
        "ctx": {"activity_id": "a1", "traceparent": traceparent},
    }  # fmt: skip
    fast = decode_call_fast(copy.deepcopy(obj))
    assert fast is not None, "a call with a traceparent left the fast path"
    assert fast == _decode_call(Fields(copy.deepcopy(obj), "call"))
    assert decode(json.dumps(obj)) == fast


def test_a_traceparent_that_is_not_text_still_gets_the_checked_decoders_error() -> None:
    obj = {
        "t": "call",
        "id": 3,
        "iface": "I",
        "ver": "1.0.0",
        "op": "o",
        "args": [],
        "ctx": {"traceparent": 7},
    }
    with pytest.raises(tether.InvalidRequest, match="traceparent"):
        decode(json.dumps(obj))
