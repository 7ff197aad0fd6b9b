"""bytes without text encoding: the codec keeps them raw, the protocol carries them beside
the JSON envelope (BinaryMessage, the binary frame), and JSON peers get standard base64."""

from __future__ import annotations

import base64
import contextlib
import struct
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tether
from tether.runtime._binary import MAX_ATTACHMENTS, MAX_ENVELOPE, MAX_PATH
from tether.runtime._codec import CONVERTER, check_carriable, dumps
from tether.runtime._interfaces import operations_of
from tether.runtime._limits import encode_arguments
from tether.runtime._protocol import (
    BinaryMessage,
    Call,
    CallContext,
    Error,
    ErrorInfo,
    Hello,
    Invoke,
    Notify,
    Result,
    Welcome,
    decode,
    encode,
    encode_binary,
    message_size,
    says_binary,
)

# ---------------------------------------------------------------------------
# The codec


@attrs.frozen
class Blob:
    name: str
    data: bytes
    parts: list[bytes]
    index: dict[str, bytes]
    maybe: bytes | None = None


@attrs.frozen
class Shelf:
    blobs: list[Blob]
    labels: dict[str, list[bytes]]
    pair: tuple[bytes, int]


class Store(tether.RpcInterface):
    interface_name = "Store"
    interface_version = "1.0.0"

    async def put(self, key: str, data: bytes, blob: Blob) -> int: ...


def test_bytes_unstructure_to_themselves() -> None:
    """No text encoding when unstructuring: the very bytes object, wherever it sits."""
    data = b"\x00\xff" * 10
    assert CONVERTER.unstructure(data, bytes) is data
    blob = Blob("b", data, [data], {"k": data})
    out = CONVERTER.unstructure(blob)
    assert out["data"] is data
    assert out["parts"][0] is data
    assert out["index"]["k"] is data


def test_a_bytearray_given_for_bytes_is_sent_as_a_copy() -> None:
    """A mutable buffer is copied into bytes, so what is sent cannot change under it."""
    buffer = bytearray(b"abc")
    out = CONVERTER.unstructure(buffer, bytes)
    assert type(out) is bytes
    buffer[0] = 0
    assert out == b"abc"


def test_bytes_structure_from_bytes_or_standard_base64() -> None:
    assert CONVERTER.structure(b"\x01\x02", bytes) == b"\x01\x02"
    assert CONVERTER.structure("AQI=", bytes) == b"\x01\x02"
    assert CONVERTER.structure("", bytes) == b""
    assert CONVERTER.structure(
        {"name": "n", "data": "/+8=", "parts": [], "index": {}}, Blob
    ).data == (b"\xff\xef")


@pytest.mark.parametrize(
    "text",
    [
        "AQI",  # no padding
        "AQI=\n",  # a line break
        "AQ I=",  # a space
        "_-8=",  # the URL-safe alphabet
        "AQI=AQI=",  # data after the padding
        "\u00e9\u00e9\u00e9\u00e9",  # not ASCII
        "Ascii85!",  # base85's alphabet, what tether used to send
    ],
)
def test_text_that_is_not_strict_base64_is_refused_naming_the_field(text: str) -> None:
    """An InvalidRequest that names the parameter and the field, and says what was expected."""
    op = operations_of(Store)["put"]
    with pytest.raises(tether.InvalidRequest, match="base64") as top:
        op.decode_args(["k", text, {"name": "n", "data": "", "parts": [], "index": {}}])
    assert top.value.details["parameter"] == "data"
    with pytest.raises(tether.InvalidRequest, match=r"base64.*@ blob\.parts\[1\]") as nested:
        op.decode_args(["k", "", {"name": "n", "data": "", "parts": ["", text], "index": {}}])
    assert nested.value.details["parameter"] == "blob"
    assert "RFC 4648" in str(nested.value)


def test_dumps_writes_bytes_as_standard_base64() -> None:
    assert orjson.loads(dumps({"a": [b"\xfb\xff"]})) == {"a": ["+/8="]}
    assert dumps([]) == b"[]"


def test_str_or_bytes_is_refused_because_base64_text_is_a_str() -> None:
    with pytest.raises(TypeError, match="base64"):
        check_carriable(str | bytes)


def test_untyped_ipc_arguments_may_hold_bytes() -> None:
    """The codec's limits let bytes through (they used to be 'an object JSON cannot hold')."""
    data = encode_arguments(Invoke(1, "c", "m", [b"\x00" * 3, {"x": [b"y"]}]), None)
    assert decode(data) == Invoke(1, "c", "m", ["AAAA", {"x": ["eQ=="]}])
    binary = encode_arguments(Notify("c", "m", [b"\x00" * 3]), None, binary=True)
    assert isinstance(binary, BinaryMessage)
    assert decode(binary) == Notify("c", "m", [b"\x00" * 3])


# ---------------------------------------------------------------------------
# Round trips through both encodings

byte_values = st.binary(max_size=64)
blobs = st.builds(
    Blob,
    st.text(max_size=5),
    byte_values,
    st.lists(byte_values, max_size=3),
    st.dictionaries(st.text(max_size=4), byte_values, max_size=3),
    st.none() | byte_values,
)
shelves = st.builds(
    Shelf,
    st.lists(blobs, max_size=3),
    st.dictionaries(st.text(max_size=4), st.lists(byte_values, max_size=3), max_size=3),
    st.tuples(byte_values, st.integers(-5, 5)),
)


@settings(max_examples=60, deadline=None)
@given(shelves)
def test_bytes_in_nested_records_lists_and_dicts_round_trip_binary_and_json(shelf: Shelf) -> None:
    """encode_binary -> (object, or frame) -> decode -> structure gives the value back,
    and so does the JSON form."""
    value = CONVERTER.unstructure(shelf)
    binary = encode_binary(Result(7, value))
    for received in (binary, binary.frame() if isinstance(binary, BinaryMessage) else binary):
        message = decode(received)
        assert isinstance(message, Result)
        assert CONVERTER.structure(message.value, Shelf) == shelf
    text = encode(Result(7, value))
    assert type(text) is bytes
    message = decode(text)
    assert isinstance(message, Result)
    assert CONVERTER.structure(message.value, Shelf) == shelf


@settings(max_examples=40, deadline=None)
@given(shelves)
def test_a_binary_message_carries_every_bytes_value_raw_and_the_envelope_none(shelf: Shelf) -> None:
    value = CONVERTER.unstructure(shelf)
    binary = encode_binary(Result(7, value))
    count = _count_bytes(value)
    if count == 0:
        assert binary == encode(Result(7, value))
        return
    assert isinstance(binary, BinaryMessage)
    assert len(binary.attachments) == count
    envelope = orjson.loads(binary.envelope)
    assert [entry["size"] for entry in envelope["bin"]] == [len(a) for a in binary.attachments]
    assert message_size(binary) == len(binary.frame()) == binary.size


def _count_bytes(value: Any) -> int:
    if type(value) is bytes:
        return 1
    if type(value) is dict:
        return sum(map(_count_bytes, value.values()))
    if type(value) in (list, tuple):
        return sum(map(_count_bytes, value))
    return 0


def test_a_message_without_bytes_encodes_as_the_same_json() -> None:
    call = Call(3, "I", "1.0.0", "op", ["x", 1, [2.5]], CallContext("a"), 10)
    assert encode_binary(call) == encode(call)
    assert type(encode_binary(call)) is bytes


def test_in_process_the_attachments_are_the_senders_bytes_objects() -> None:
    """No copy: decoding a BinaryMessage puts the very same bytes objects back."""
    data = bytes(1024 * 1024)
    binary = encode_binary(Call(1, "I", "1.0.0", "op", ["k", data], CallContext()))
    assert isinstance(binary, BinaryMessage)
    assert binary.attachments[0] is data
    message = decode(binary)
    assert isinstance(message, Call)
    assert message.args[1] is data


def test_the_frame_is_laid_out_as_documented() -> None:
    data = b"\x01\x02\x03"
    binary = encode_binary(Invoke(5, "files", "write", ["a.txt", data, b""]))
    assert isinstance(binary, BinaryMessage)
    frame = binary.frame()
    (length,) = struct.unpack(">I", frame[:4])
    envelope = orjson.loads(frame[4 : 4 + length])
    assert envelope == {
        "t": "invoke",
        "id": 5,
        "channel": "files",
        "method": "write",
        "args": ["a.txt", None, None],
        "bin": [{"path": ["args", 1], "size": 3}, {"path": ["args", 2], "size": 0}],
    }
    assert frame[4 + length :] == data
    assert frame[0] == 0  # never the first byte of a JSON text
    assert BinaryMessage.parse(frame) == binary
    assert b"".join(binary.chunks()) == frame


def test_error_details_may_carry_bytes() -> None:
    info = ErrorInfo("application", 422, "Boom", "boom", {"fields": {"raw": b"\x00\x01"}})
    binary = encode_binary(Error(4, info))
    assert isinstance(binary, BinaryMessage)
    assert decode(binary.frame()) == Error(4, info)
    assert decode(encode(Error(4, info))) == Error(
        4, attrs.evolve(info, details={"fields": {"raw": "AAE="}})
    )


def test_more_bytes_values_than_a_frame_carries_go_as_json() -> None:
    values = [b"x"] * (MAX_ATTACHMENTS + 1)
    encoded = encode_binary(Result(1, values))
    assert type(encoded) is bytes
    assert decode(encoded) == Result(1, ["eA=="] * (MAX_ATTACHMENTS + 1))


def test_an_envelope_over_the_frame_limit_goes_as_json() -> None:
    value = {"text": "x" * MAX_ENVELOPE, "data": b"\x00"}
    encoded = encode_binary(Result(1, value))
    assert type(encoded) is bytes
    assert decode(encoded) == Result(1, {"text": "x" * MAX_ENVELOPE, "data": "AA=="})


def test_encode_binary_still_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError):
        encode_binary(Result(1, [b"x", object()]))
    with pytest.raises(TypeError):
        encode_binary(Result(1, [2**70]))
    with pytest.raises(TypeError):
        encode(Result(1, [b"x", object()]))


def test_message_size_is_the_wire_size() -> None:
    assert message_size(b"{}") == 2
    assert message_size("{}") == 2
    assert message_size('"\u00e9"') == 4  # UTF-8
    binary = encode_binary(Result(1, b"\x00" * 100))
    assert isinstance(binary, BinaryMessage)
    assert message_size(binary) == len(binary.frame())
    assert message_size(memoryview(b"abc")) == 3


def test_repr_shows_sizes_not_contents() -> None:
    """The envelope may hold an Authorization value: a repr must never show it."""
    call = Call(1, "I", "1.0.0", "op", [b"\x00" * 10], CallContext(authorization="Bearer s3cret"))
    binary = encode_binary(call)
    assert isinstance(binary, BinaryMessage)
    assert "s3cret" not in repr(binary)
    assert "10 bytes" in repr(binary)


def test_hello_and_welcome_say_binary_only_when_true() -> None:
    assert b"binary" not in encode(Hello(1))
    assert decode(encode(Hello(1, binary=True))) == Hello(1, binary=True)
    assert orjson.loads(encode(Welcome(1, "s", binary=True)))["binary"] is True
    assert decode(encode(Welcome(1, "s", binary=True))) == Welcome(1, "s", binary=True)
    assert says_binary(encode(Hello(1, binary=True)))
    assert says_binary(encode(Welcome(1, "s", binary=True)).decode())
    assert not says_binary(encode(Hello(1)))
    assert not says_binary(b"garbage")
    with pytest.raises(tether.InvalidRequest, match="binary"):
        decode(b'{"t":"hello","protocol":1,"binary":"yes"}')


# ---------------------------------------------------------------------------
# Hostile input


def _frame(envelope: Any, *attachments: bytes) -> bytes:
    body = envelope if isinstance(envelope, bytes) else orjson.dumps(envelope)
    return struct.pack(">I", len(body)) + body + b"".join(attachments)


def _result(bin_: Any, value: Any = None) -> dict[str, Any]:
    return {"t": "result", "id": 9, "value": value, "bin": bin_}


def _nested(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


HOSTILE: dict[str, tuple[bytes, str]] = {
    "shorter than its length": (b"\x00\x00\x00", "4-byte length"),
    "envelope past the end": (b"\x00\x00\x01\x00{}", "only 2 follow"),
    "envelope not JSON": (_frame(b"{nope"), "not valid JSON"),
    "envelope not an object": (_frame([1]), "must be a JSON object"),
    "bin not an array": (_frame(_result({"path": ["value"]})), '"bin" must be an array'),
    "size missing": (_frame(_result([{"path": ["value"]}]), b"x"), "size must be"),
    "size negative": (_frame(_result([{"path": ["value"], "size": -1}])), "size must be"),
    "size not an int": (_frame(_result([{"path": ["value"], "size": 1.0}]), b"x"), "size must"),
    "sizes add up to less": (
        _frame(_result([{"path": ["value"], "size": 1}]), b"xy"),
        "lists 1 bytes of attachments, the frame carries 2",
    ),
    "sizes add up to more": (
        _frame(_result([{"path": ["value"], "size": 3}]), b"xy"),
        "lists 3 bytes",
    ),
    "huge size": (
        _frame(_result([{"path": ["value"], "size": 2**62}]), b"xy"),
        "lists 4611686018427387904 bytes",
    ),
    "path empty": (_frame(_result([{"path": [], "size": 0}])), "non-empty array"),
    "path not an array": (_frame(_result([{"path": "value", "size": 0}])), "non-empty array"),
    "path with a float": (_frame(_result([{"path": [0.5], "size": 0}])), "strings and non-neg"),
    "path with a negative index": (
        _frame(_result([{"path": ["value", -1], "size": 0}], [None])),
        "strings and non-neg",
    ),
    "path to nothing": (_frame(_result([{"path": ["nothing"], "size": 0}])), "must name a null"),
    "path through nothing": (
        _frame(_result([{"path": ["nothing", 0], "size": 0}])),
        "names no value",
    ),
    "path past a list's end": (
        _frame(_result([{"path": ["value", 3], "size": 0}], [None])),
        "must name a null",
    ),
    "index into an object": (
        _frame(_result([{"path": ["value", 0], "size": 0}], {"0": None})),
        "must name a null",
    ),
    "key into a list": (
        _frame(_result([{"path": ["value", "0"], "size": 0}], [None])),
        "must name a null",
    ),
    "path to a value that is not null": (
        _frame(_result([{"path": ["value"], "size": 0}], "taken")),
        "must name a null",
    ),
    "two attachments at one path": (
        _frame(_result([{"path": ["value"], "size": 1}, {"path": ["value"], "size": 1}]), b"ab"),
        "must name a null",
    ),
    "path through a scalar": (
        _frame(_result([{"path": ["value", "x", 0, 1], "size": 0}], {"x": 5})),
        "names no value",
    ),
    "too many attachments": (
        _frame(_result([{"path": ["value", i], "size": 0} for i in range(MAX_ATTACHMENTS + 1)])),
        f"over the {MAX_ATTACHMENTS} allowed",
    ),
    "path deeper than the codec's limit": (
        _frame(
            _result(
                [{"path": ["value", *([0] * MAX_PATH)], "size": 0}],
                _nested(MAX_PATH),
            )
        ),
        "keys long",
    ),
}


@pytest.mark.parametrize(("frame", "words"), list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_frames_are_invalid_requests(frame: bytes, words: str) -> None:
    """Each malformed frame is an InvalidRequest that says what is wrong; none crashes."""
    with pytest.raises(tether.InvalidRequest) as raised:
        decode(frame)
    assert words in str(raised.value)
    with pytest.raises(tether.InvalidRequest):
        BinaryMessage.parse(frame)


def test_an_envelope_length_over_the_limit_is_refused() -> None:
    """Its first byte is not 0: to decode, it is not a frame (and not JSON either)."""
    frame = struct.pack(">I", MAX_ENVELOPE + 1) + b"{}"
    with pytest.raises(tether.InvalidRequest, match="over the 16777215"):
        BinaryMessage.parse(frame)
    with pytest.raises(tether.InvalidRequest, match="not valid JSON"):
        decode(frame)


def test_a_bad_frame_whose_id_can_be_read_names_it() -> None:
    """So that the receiver fails that one request, not the connection."""
    with pytest.raises(tether.InvalidRequest) as raised:
        decode(_frame(_result([{"path": ["value"], "size": 5}]), b"x"))
    assert raised.value.details == {"field": "bin", "id": 9}


def test_a_binary_message_whose_attachments_do_not_match_its_bin_is_refused() -> None:
    envelope = orjson.dumps(_result([{"path": ["value"], "size": 2}]))
    with pytest.raises(tether.InvalidRequest, match="carries 0"):
        decode(BinaryMessage(envelope, ()))
    with pytest.raises(tether.InvalidRequest, match="holds 3"):
        decode(BinaryMessage(envelope, (b"abc",)))
    assert decode(BinaryMessage(envelope, (b"ab",))) == Result(9, b"ab")


def test_a_frame_may_carry_no_attachments() -> None:
    assert decode(_frame({"t": "result", "id": 1, "value": 2})) == Result(1, 2)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_fuzz_frames(rest: bytes) -> None:
    """Anything after a 0 byte decodes to a message or is an InvalidRequest, never a crash."""
    with contextlib.suppress(tether.InvalidRequest):
        decode(b"\x00" + rest)


@settings(max_examples=100, deadline=None)
@given(shelves, st.data())
def test_fuzz_truncated_and_extended_frames(shelf: Shelf, data: st.DataObject) -> None:
    binary = encode_binary(Result(1, CONVERTER.unstructure(shelf)))
    if not isinstance(binary, BinaryMessage):
        return
    frame = binary.frame()
    cut = data.draw(st.integers(0, len(frame) - 1))
    for broken in (frame[:cut], frame + b"\x00"):
        try:
            decode(broken)
        except tether.InvalidRequest:
            continue
        # A cut that removes only attachments of size 0 still reads: nothing is lost.
        assert broken == frame


def test_base64_of_a_mebibyte_is_what_json_peers_get() -> None:
    data = bytes(range(256)) * 4096
    text = encode(Result(1, data))
    assert orjson.loads(text)["value"] == base64.b64encode(data).decode()
