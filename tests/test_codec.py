"""The codec: which types cross the wire, that they round-trip, and that it is strict."""

import base64
import dataclasses
import datetime
import enum
import json
import typing
import uuid
from typing import Any, Literal

import attrs
import cattrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tether
from tether.runtime._codec import CONVERTER, check_carriable, dumps, loads, make_converter

# ---------------------------------------------------------------------------
# Carried types used below


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Mode(enum.StrEnum):
    READ = "read"
    WRITE = "write"


class Priority(enum.Enum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class Point:
    x: float
    y: float


@attrs.frozen
class Robot:
    id: uuid.UUID
    name: str
    where: Point
    tags: list[str]
    color: Color
    parts: dict[str, int] = attrs.field(factory=dict)
    nickname: str | None = None


@attrs.frozen
class Fleet:
    robots: list[Robot]
    leader: Robot | None


@dataclasses.dataclass(frozen=True)
class Box:
    label: str
    size: tuple[int, int]
    contents: list[bytes]
    made: datetime.date


@dataclasses.dataclass(frozen=True)
class Crate:
    boxes: list[Box]
    level: Level


@attrs.frozen
class Circle:
    kind: Literal["circle"]
    radius: float


@attrs.frozen
class Square:
    kind: Literal["square"]
    side: float


# ---------------------------------------------------------------------------
# Strategies

ints = st.integers(-(2**63), 2**63 - 1)  # orjson carries 64-bit integers
floats = st.floats(allow_nan=False, allow_infinity=False)
texts = st.text(max_size=20)
offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
    lambda minutes: datetime.timezone(datetime.timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(timezones=offsets)
naive_datetimes = st.datetimes()
points = st.builds(Point, floats, floats)
robots = st.builds(
    Robot,
    st.uuids(),
    texts,
    points,
    st.lists(texts, max_size=3),
    st.sampled_from(Color),
    st.dictionaries(texts, ints, max_size=3),
    st.none() | texts,
)
fleets = st.builds(Fleet, st.lists(robots, max_size=3), st.none() | robots)
boxes = st.builds(
    Box,
    texts,
    st.tuples(ints, ints),
    st.lists(st.binary(max_size=10), max_size=3),
    st.dates(),
)
crates = st.builds(Crate, st.lists(boxes, max_size=3), st.sampled_from(Level))
shapes = st.builds(Circle, st.just("circle"), floats) | st.builds(Square, st.just("square"), floats)

#: (id, type, strategy of values of that type): every type the codec carries.
CARRIED: list[tuple[str, Any, st.SearchStrategy[Any]]] = [
    ("None", type(None), st.none()),
    ("bool", bool, st.booleans()),
    ("int", int, ints),
    ("float", float, floats),
    ("str", str, st.text()),
    ("bytes", bytes, st.binary()),
    ("enum-str", Color, st.sampled_from(Color)),
    ("enum-int", Priority, st.sampled_from(Priority)),
    ("intenum", Level, st.sampled_from(Level)),
    ("strenum", Mode, st.sampled_from(Mode)),
    ("datetime-aware", datetime.datetime, aware_datetimes),
    ("datetime-naive", datetime.datetime, naive_datetimes),
    ("date", datetime.date, st.dates()),
    ("uuid", uuid.UUID, st.uuids()),
    ("attrs", Point, points),
    ("attrs-nested", Fleet, fleets),
    ("dataclass", Crate, crates),
    ("list", list[int], st.lists(ints)),
    ("list-of-attrs", list[Robot], st.lists(robots, max_size=3)),
    ("tuple-fixed", tuple[int, str, bool], st.tuples(ints, texts, st.booleans())),
    ("tuple-variadic", tuple[float, ...], st.lists(floats).map(tuple)),
    ("dict-str-keys", dict[str, int], st.dictionaries(texts, ints)),
    ("dict-int-keys", dict[int, str], st.dictionaries(ints, texts)),
    ("dict-uuid-keys", dict[uuid.UUID, int], st.dictionaries(st.uuids(), ints)),
    ("dict-enum-keys", dict[Color, int], st.dictionaries(st.sampled_from(Color), ints)),
    ("dict-intenum-keys", dict[Level, int], st.dictionaries(st.sampled_from(Level), ints)),
    ("dict-str-enum-keys", dict[Mode, int], st.dictionaries(st.sampled_from(Mode), ints)),
    ("set", set[int], st.sets(ints)),
    ("frozenset", frozenset[str], st.frozensets(texts)),
    ("optional-int", int | None, st.none() | ints),
    ("optional-attrs", Point | None, st.none() | points),
    ("optional-typing", typing.Optional[str], st.none() | texts),  # noqa: UP045
    ("union-int-str", int | str, ints | texts),
    ("union-bool-str-none", bool | str | None, st.none() | st.booleans() | texts),
    ("union-float-none", float | None, st.none() | floats),
    ("union-attrs-literal", Circle | Square, shapes),
    ("union-attrs-literal-optional", Circle | Square | None, st.none() | shapes),
    ("list-of-union-attrs", list[Circle | Square], st.lists(shapes, max_size=4)),
    ("dict-of-lists", dict[str, list[datetime.date]], st.dictionaries(texts, st.lists(st.dates()))),
]

CARRIED_PARAMS = [pytest.param(tp, strategy, id=name) for name, tp, strategy in CARRIED]


def _round_trip(value: Any, tp: Any) -> Any:
    unstructured = CONVERTER.unstructure(value, unstructure_as=tp)
    return CONVERTER.structure(loads(dumps(unstructured)), tp)


# ---------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize(("tp", "strategy"), CARRIED_PARAMS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_round_trip(tp: Any, strategy: st.SearchStrategy[Any], data: st.DataObject) -> None:
    """structure(loads(dumps(unstructure(v)))) gives back an equal value of the same type."""
    value = data.draw(strategy)
    out = _round_trip(value, tp)
    assert out == value
    assert type(out) is type(value)


@pytest.mark.parametrize(("tp", "strategy"), CARRIED_PARAMS)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_unstructured_form_is_json_for_any_json_library(
    tp: Any, strategy: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    """The unstructured value is plain JSON but for raw bytes: the stdlib encoder, told to
    write bytes as base64, writes what `dumps` writes."""
    unstructured = CONVERTER.unstructure(data.draw(strategy), unstructure_as=tp)
    text = json.dumps(unstructured, default=_base64)
    assert json.loads(text) == loads(dumps(unstructured))


def _base64(value: Any) -> str:
    assert type(value) is bytes
    return base64.b64encode(value).decode()


# A tuple is a JSON array to every encoder (orjson and the stdlib write it as
# one); the converter leaves fixed tuples as tuples rather than copying them.
# bytes stay raw: the protocol carries them beside the JSON, or as base64.
_JSON_TYPES = (dict, list, tuple, str, int, float, bool, type(None), bytes)


def _non_json_types(value: Any) -> set[str]:
    """The names of the types in `value` that are not exactly a JSON type."""
    found = set() if type(value) in _JSON_TYPES else {type(value).__qualname__}
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                found.add(f"key {type(key).__qualname__}")
            found |= _non_json_types(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            found |= _non_json_types(item)
    return found


@pytest.mark.parametrize(("tp", "strategy"), CARRIED_PARAMS)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_unstructured_values_are_exactly_json_types(
    tp: Any, strategy: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    """As the module promises: only dict (str keys), list, str, int, float, bool, None, bytes.

    Tuples and sets become lists, enums their values.
    """
    unstructured = CONVERTER.unstructure(data.draw(strategy), unstructure_as=tp)
    assert _non_json_types(unstructured) == set()


def test_union_of_str_and_bytes_is_refused_or_round_trips() -> None:
    """`str | bytes` is either refused at declaration, or keeps bytes as bytes.

    in JSON, bytes travel as base64 text, so silently turning them into a `str` is the one
    thing the codec must not do.
    """
    tp = str | bytes
    try:
        check_carriable(tp)
    except TypeError:
        return
    assert _round_trip(b"hello", tp) == b"hello"


def test_float_accepts_int_and_gives_float() -> None:
    """An int on the wire where a float is declared becomes a float, 3 -> 3.0."""
    out = CONVERTER.structure(3, float)
    assert out == 3.0
    assert type(out) is float


def test_datetime_keeps_its_offset() -> None:
    """A tz-aware datetime comes back with the same UTC offset, not just the same instant."""
    tz = datetime.timezone(datetime.timedelta(hours=-3, minutes=-30))
    value = datetime.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=tz)
    out = _round_trip(value, datetime.datetime)
    assert out == value
    assert out.utcoffset() == value.utcoffset()


def test_naive_datetime_stays_naive() -> None:
    """A naive datetime does not gain a time zone on the way."""
    value = datetime.datetime(2024, 1, 2, 3, 4, 5)
    out = _round_trip(value, datetime.datetime)
    assert out == value
    assert out.tzinfo is None


SHAPE: Any = Circle | Square


def test_union_of_attrs_is_discriminated_by_literal_field() -> None:
    """The Literal `kind` field chooses the class, whatever the other fields hold."""
    assert CONVERTER.structure({"kind": "square", "side": 2.0}, SHAPE) == Square("square", 2.0)
    assert CONVERTER.structure({"kind": "circle", "radius": 2.0}, SHAPE) == Circle("circle", 2.0)


def test_unknown_discriminator_fails() -> None:
    """A `kind` that names neither class does not structure (cattrs says which kind)."""
    with pytest.raises(
        (KeyError, TypeError, ValueError, cattrs.BaseValidationError), match="triangle"
    ):
        CONVERTER.structure({"kind": "triangle", "side": 2.0}, SHAPE)


# ---------------------------------------------------------------------------
# Strictness


@pytest.mark.parametrize(
    ("value", "tp"),
    [
        ("3", int),
        (3.7, int),
        (3.0, int),
        (True, int),
        (False, int),
        (None, int),
        (1, str),
        (None, str),
        (b"x", str),
        (True, float),
        ("1.5", float),
        (None, float),
        (1, bool),
        (0, bool),
        ("true", bool),
        (1, type(None)),
        ("", type(None)),
        (123, uuid.UUID),
        ("not-a-uuid", uuid.UUID),
        ({"x": "1", "y": 2.0}, Point),
        ([1, "2"], list[int]),
        ({"a": "1"}, dict[str, int]),
    ],
)
def test_structuring_does_not_coerce(value: Any, tp: Any) -> None:
    """A typed RPC never silently coerces: a value of another type fails to structure."""
    with pytest.raises((TypeError, ValueError, cattrs.BaseValidationError)):
        CONVERTER.structure(value, tp)


@pytest.mark.parametrize(
    ("value", "tp"),
    [
        (99, Level),
        (True, Level),
        ("1", Level),
        ("nope", Mode),
        (1, Mode),
        ("nope", Color),
        ("RED", Color),
        (3, Priority),
    ],
)
def test_enum_structuring_accepts_only_member_values(value: Any, tp: Any) -> None:
    """An Enum parameter (plain, IntEnum or StrEnum) refuses values that are not members."""
    with pytest.raises((TypeError, ValueError, cattrs.BaseValidationError)):
        CONVERTER.structure(value, tp)


@pytest.mark.parametrize(
    ("value", "tp", "member"),
    [(1, Level, Level.LOW), ("write", Mode, Mode.WRITE), ("green", Color, Color.GREEN)],
)
def test_enum_structuring_gives_the_member(value: Any, tp: Any, member: enum.Enum) -> None:
    """An Enum value on the wire becomes the member itself, not the bare int or str."""
    out = CONVERTER.structure(value, tp)
    assert out is member


@pytest.mark.parametrize(
    ("value", "tp", "expected"),
    [
        (3, int, 3),
        (True, bool, True),
        (3, float, 3.0),
        (2.5, float, 2.5),
        ("x", str, "x"),
        (None, type(None), None),
    ],
)
def test_structuring_accepts_the_declared_type(value: Any, tp: Any, expected: Any) -> None:
    """The strict hooks still accept the declared type itself."""
    out = CONVERTER.structure(value, tp)
    assert out == expected
    assert type(out) is type(expected)


def test_make_converter_returns_a_fresh_converter() -> None:
    """make_converter() owns its hooks: neither CONVERTER nor cattrs' global one is shared."""
    fresh = make_converter()
    assert fresh is not CONVERTER
    assert fresh is not make_converter()
    assert fresh is not cattrs.global_converter
    # Configured the same way: strict.
    with pytest.raises(TypeError):
        fresh.structure("3", int)
    # A hook on the fresh one does not leak into CONVERTER.
    fresh.register_structure_hook(int, lambda value, _: int(value))
    assert fresh.structure("3", int) == 3
    with pytest.raises(TypeError):
        CONVERTER.structure("3", int)


def test_global_cattrs_converter_is_untouched() -> None:
    """Importing tether does not configure cattrs' global converter (it still coerces)."""
    assert cattrs.global_converter.structure("3", int) == 3


# ---------------------------------------------------------------------------
# check_carriable


@pytest.mark.parametrize(("tp", "strategy"), CARRIED_PARAMS)
def test_check_carriable_accepts_every_carried_type(
    tp: Any, strategy: st.SearchStrategy[Any]
) -> None:
    """Every type of the round-trip table passes the declaration-time check."""
    check_carriable(tp)


class Plain:
    pass


class Vector(enum.Enum):
    UP = (0, 1)
    DOWN = (0, -1)


@attrs.frozen
class WithAnyField:
    ok: int
    anything: Any


@dataclasses.dataclass
class WithObjectField:
    thing: object


@attrs.frozen
class Cat:
    name: str


@attrs.frozen
class Dog:
    name: str


@pytest.mark.parametrize(
    ("tp", "match"),
    [
        (Any, r"Any cannot be carried"),
        (object, r"object cannot be carried"),
        (list, r"bare list"),
        (dict, r"bare dict"),
        (tuple, r"bare tuple"),
        (set, r"bare set"),
        (list[Any], r"Any cannot be carried"),
        (dict[str, object], r"object cannot be carried"),
        (dict[tuple[int, int], str], r"dict key type tuple\[int, int\]"),
        (dict[float, str], r"dict key type float"),
        (dict[Point, str], r"dict key type Point"),
        (Vector, r"Vector\.UP has value \(0, 1\)"),
        (WithAnyField, r"field WithAnyField\.anything"),
        (WithObjectField, r"field WithObjectField\.thing"),
        (list[WithAnyField], r"field WithAnyField\.anything"),
        (int | WithAnyField, r"field WithAnyField\.anything"),
        (Cat | Dog, r"Cat.*Dog|Dog.*Cat"),
        (Plain, r"Plain cannot be carried"),
        (Literal[b"raw"], r"Literal value b'raw'"),
    ],
)
def test_check_carriable_refuses_with_a_clear_message(tp: Any, match: str) -> None:
    """Un-carriable types are a TypeError that names the culprit."""
    with pytest.raises(TypeError, match=match):
        check_carriable(tp)


def test_check_carriable_message_says_what_to_use() -> None:
    """The message for a plain class lists the kinds of types that can be carried."""
    with pytest.raises(TypeError, match="attrs class or dataclass"):
        check_carriable(Plain)


# ---------------------------------------------------------------------------
# dumps / loads


def test_loads_of_malformed_json_is_invalid_request() -> None:
    """Bytes that are not JSON are a bad request, not a decoder exception."""
    with pytest.raises(tether.InvalidRequest, match="not valid JSON") as info:
        loads(b"{")
    assert info.value.code == "bad-request"


@pytest.mark.parametrize("data", [b"", b"\xff\xfe", b"[1,]", b"NaN", b"1e400", "{'a': 1}"])
def test_loads_refuses_non_json(data: bytes | str) -> None:
    """Empty input, invalid UTF-8, trailing commas, NaN, overflow and Python reprs fail."""
    with pytest.raises(tether.InvalidRequest):
        loads(data)


@pytest.mark.parametrize("container", [bytes, bytearray, memoryview, lambda b: b.decode()])
def test_loads_accepts_bytes_like_and_text(container: Any) -> None:
    """loads reads bytes, bytearray, memoryview and str alike."""
    assert loads(container(b'{"a": [1, 2.5, null, true]}')) == {"a": [1, 2.5, None, True]}


def test_dumps_refuses_values_that_are_not_json() -> None:
    """dumps is for unstructured values: an object that is not JSON is a TypeError."""
    with pytest.raises(TypeError):
        dumps({"p": Plain()})


json_values = st.recursive(
    st.none() | st.booleans() | ints | floats | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_dumps_loads_round_trip_json_values(value: Any) -> None:
    """loads(dumps(v)) == v for every JSON value, and it is what the stdlib reads too."""
    data = dumps(value)
    assert isinstance(data, bytes)
    assert loads(data) == value
    assert json.loads(data) == value
