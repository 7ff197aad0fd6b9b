"""The codec: which Python types cross the wire, and how.

tether owns one cattrs converter (never cattrs' global one), made by
`make_converter()`. Values are unstructured to plain JSON values (dict, list,
str, int, float, bool, None) plus `bytes`, which stay raw: the protocol sends
them beside the JSON envelope where the transport carries binary (a
`BinaryMessage`), and `dumps` writes them as standard base64 text (RFC 4648)
where it does not. Values are encoded with orjson; see docs/performance.md for
why orjson and not the standard library.

Structuring is strict: an `int` parameter accepts an int, not "3" or 3.7, and a
`str` parameter does not accept 1. A typed RPC that silently coerces hides bugs.
"""

from __future__ import annotations

import base64
import binascii
import collections.abc
import dataclasses
import datetime
import enum
import re
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any

import attrs
import cattrs
import cattrs.gen
import cattrs.v
import orjson
from cattrs.preconf.orjson import make_converter as _make_orjson_converter

from ._errors import InvalidRequest

__all__ = [
    "CONVERTER",
    "MAX_DEPTH",
    "Hook",
    "check_carriable",
    "describe_type",
    "dumps",
    "loads",
    "make_converter",
    "structure_error_messages",
]

Hook = Callable[..., Any]

#: The deepest a value may nest arrays and objects (lists, tuples, sets, dicts,
#: records), counting its own: `[1]` nests 1 deep, `{"a": [1]}` 2. Well below
#: what orjson encodes (about 255 with the message around it) and what cattrs
#: structures within Python's default recursion limit (about 3 frames a level).
#: Checked by `_limits`; here so that the protocol's binary paths share it.
MAX_DEPTH = 100


def _strict(kind: type, accept: tuple[type, ...], convert: Callable[[Any], Any]) -> Hook:
    def structure(value: Any, tp: Any) -> Any:
        if tp is not kind and _is_enum(tp):
            # A `class Color(str, Enum)` reaches the str hook through its MRO.
            return _structure_enum(value, tp)
        # bool is an int subclass; a bool where a number is declared is a bug.
        if isinstance(value, accept) and not (isinstance(value, bool) and kind is not bool):
            return convert(value)
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")

    return structure


def _structure_uuid(value: Any, _: Any) -> uuid.UUID:
    if not isinstance(value, str):
        raise TypeError(f"expected a UUID string, got {type(value).__name__}")
    return uuid.UUID(value)


def _unstructure_bytes(value: Any) -> bytes:
    # Raw: the protocol carries bytes beside the envelope, or as base64 in
    # JSON. A bytearray or memoryview given for `bytes` is copied, so that
    # what is sent cannot change under it (and the encoders meet only bytes).
    return value if type(value) is bytes else bytes(value)


class _NotBase64(ValueError):
    """Text given for `bytes` that is not standard base64; its message says so."""


def _structure_bytes(value: Any, _: Any) -> bytes:
    kind = type(value)
    if kind is bytes:
        return value  # type: ignore[no-any-return]
    if kind is str:
        try:
            # Strict RFC 4648: the standard alphabet, padded, nothing else
            # (no line breaks, no URL-safe `-_`).
            return binascii.a2b_base64(value, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise _NotBase64(
                f"expected bytes as standard base64 text (RFC 4648: A-Z a-z 0-9 + /, padded "
                f"with =); got {len(value)} characters that are not ({exc})"
            ) from None
    if kind is bytearray or kind is memoryview:
        return bytes(value)
    raise TypeError(f"expected bytes (or base64 text), got {kind.__name__}")


def _structure_none(value: Any, _: Any) -> None:
    if value is not None:
        raise TypeError(f"expected null, got {type(value).__name__}")


_INT_TEXT = re.compile(r"-?(0|[1-9][0-9]*)")


def _int_key_type(tp: Any) -> type | None:
    """The key type of a mapping whose keys are ints (or int-valued enums)."""
    if typing.get_origin(tp) not in _MAPPINGS:
        return None
    args = typing.get_args(tp)
    key = args[0] if args else None
    if key is int:
        return int
    if isinstance(key, type) and issubclass(key, enum.Enum):
        return key if all(type(member.value) is int for member in key) else None
    return None


def _int_keyed_mapping_hook(converter: cattrs.Converter) -> Callable[[Any], Hook]:
    def factory(tp: Any) -> Hook:
        key_type = _int_key_type(tp)
        value_type = typing.get_args(tp)[1]
        value_hook = converter.get_structure_hook(value_type)

        def key(text: Any) -> Any:
            # JSON object keys are text: "12" is the int key 12.
            if type(text) is str and _INT_TEXT.fullmatch(text):
                number = int(text)
            elif type(text) is int:
                number = text
            else:
                raise TypeError(f"expected an integer key, got {text!r}")
            return number if key_type is int else key_type(number)  # type: ignore[misc]

        def structure(value: Any, _: Any) -> Any:
            if not isinstance(value, dict):
                raise TypeError(f"expected an object, got {type(value).__name__}")
            return {key(k): value_hook(v, value_type) for k, v in value.items()}

        return structure

    return factory


def _is_enum(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def _structure_enum(value: Any, tp: type[enum.Enum]) -> enum.Enum:
    # Strict: 1 is not accepted for a str-valued enum, nor True for an int one.
    for member in tp:
        if member.value == value and type(member.value) is type(value):
            return member
    choices = ", ".join(repr(member.value) for member in tp)
    raise ValueError(f"expected one of {choices} ({tp.__qualname__}), got {value!r}")


def _enum_value(member: enum.Enum) -> Any:
    return member.value


def _is_record(tp: Any) -> bool:
    return isinstance(tp, type) and (attrs.has(tp) or dataclasses.is_dataclass(tp))


def _record_hook(converter: cattrs.Converter) -> Callable[[Any], Hook]:
    def factory(tp: Any) -> Hook:
        inner = cattrs.gen.make_dict_structure_fn(tp, converter)

        def structure(value: Any, _: Any) -> Any:
            # Say "expected an object" once, not a missing-field error per field.
            if not isinstance(value, dict):
                got = type(value).__name__
                raise TypeError(f"expected an object ({tp.__qualname__}), got {got}")
            return inner(value, tp)

        return structure

    return factory


def _text_keyed_mapping_hook(converter: cattrs.Converter) -> Callable[[Any], Hook]:
    def factory(tp: Any) -> Hook:
        key_type = typing.get_args(tp)[0]
        if key_type is str:
            return converter.gen_unstructure_mapping(tp)
        key_hook = converter.get_unstructure_hook(key_type)

        def key(value: Any, _: Any = None) -> str:
            # JSON object keys are text: int keys, UUIDs and int enums become text.
            unstructured = key_hook(value)
            return unstructured if type(unstructured) is str else str(unstructured)

        return converter.gen_unstructure_mapping(tp, key_handler=key)

    return factory


def make_converter() -> cattrs.Converter:
    """Return a new converter configured as tether's codec.

    Unstructuring gives JSON values (datetime and date as ISO 8601, UUID as
    text, sets as lists, tuples as tuples, which every JSON encoder writes as
    arrays, enums as their values) and raw `bytes`, which `dumps` writes as
    base64 text and the protocol may carry beside the JSON. Structuring takes
    `bytes`, or base64 text, for a `bytes` type.
    """
    converter = _make_orjson_converter()
    # cattrs tries single dispatch first, so these are single-dispatch
    # registrations; the enum bases are registered too, so that IntEnum and
    # StrEnum find their own hook before int's or str's in their MRO.
    converter.register_structure_hook(int, _strict(int, (int,), int))
    converter.register_structure_hook(float, _strict(float, (int, float), float))
    converter.register_structure_hook(str, _strict(str, (str,), str))
    converter.register_structure_hook(bool, _strict(bool, (bool,), bool))
    converter.register_structure_hook(bytes, _structure_bytes)
    converter.register_unstructure_hook(bytes, _unstructure_bytes)
    for base in (enum.Enum, enum.IntEnum, enum.StrEnum, enum.Flag, enum.IntFlag):
        converter.register_structure_hook(base, _structure_enum)
        converter.register_unstructure_hook(base, _enum_value)
    converter.register_structure_hook_factory(_is_record, _record_hook(converter))
    converter.register_unstructure_hook_factory(
        lambda tp: typing.get_origin(tp) in _MAPPINGS, _text_keyed_mapping_hook(converter)
    )
    converter.register_structure_hook(type(None), _structure_none)
    converter.register_structure_hook(uuid.UUID, _structure_uuid)
    converter.register_unstructure_hook(uuid.UUID, str)
    converter.register_unstructure_hook(datetime.datetime, datetime.datetime.isoformat)
    converter.register_unstructure_hook(datetime.date, datetime.date.isoformat)
    converter.register_structure_hook_factory(
        lambda tp: _int_key_type(tp) is not None, _int_keyed_mapping_hook(converter)
    )
    return converter


#: The converter every interface uses.
CONVERTER = make_converter()


def _bytes_as_base64(value: Any) -> str:
    # orjson calls this only for what it cannot encode itself, so a value
    # without bytes pays nothing for it.
    if type(value) is bytes:
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """Encode unstructured values as UTF-8 JSON bytes; `bytes` as standard base64 text.

    Raises:
        TypeError: `value` holds something that is neither a JSON value nor bytes.
    """
    return orjson.dumps(value, default=_bytes_as_base64)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON bytes or text.

    Raises:
        InvalidRequest: `data` is not valid UTF-8 JSON.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(_not_json(exc)) from None


_NON_FINITE = ("NaN", "Infinity", "-Infinity")


def _not_json(exc: orjson.JSONDecodeError) -> str:
    # JSON numbers are finite: say so for the ones other encoders write for
    # inf and nan (Python's json writes NaN and Infinity; 1e999 overflows).
    at = exc.doc[max(exc.pos - 1, 0) : exc.pos + 9] if isinstance(exc.doc, str) else ""
    if exc.msg.startswith("number is infinity") or any(word in at for word in _NON_FINITE):
        return (
            f"message is not valid JSON: {exc}: JSON numbers are finite, and tether carries "
            "neither inf nor nan (nor a number too large for a double)"
        )
    return f"message is not valid JSON: {exc}"


# ---------------------------------------------------------------------------
# Which types can be carried

_SCALARS: frozenset[Any] = frozenset(
    {type(None), bool, int, float, str, bytes, datetime.datetime, datetime.date, uuid.UUID}
)
_SEQUENCES: frozenset[Any] = frozenset(
    {
        list,
        set,
        frozenset,
        collections.abc.Sequence,
        collections.abc.MutableSequence,
        collections.abc.Set,
        collections.abc.MutableSet,
    }
)
_MAPPINGS: frozenset[Any] = frozenset(
    {dict, collections.abc.Mapping, collections.abc.MutableMapping}
)
_KEY_TYPES: frozenset[Any] = frozenset({str, int, uuid.UUID})
_EXAMPLES: dict[Any, str] = {
    dict: "dict[str, int]",
    collections.abc.Mapping: "Mapping[str, int]",
    collections.abc.MutableMapping: "MutableMapping[str, int]",
    tuple: "tuple[int, str] or tuple[int, ...]",
    set: "set[int]",
    frozenset: "frozenset[int]",
}
_JSON_SCALARS = (str, int, float, bool, type(None))


def describe_type(tp: Any) -> str:
    """Name a type the way it was written: `list[int]`, `IModelProps`, `int | None`."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__qualname__
    return repr(tp).replace("typing.", "")


def check_carriable(tp: Any, converter: cattrs.Converter = CONVERTER) -> None:
    """Check that values of `tp` can cross the wire both ways.

    Raises:
        TypeError: `tp` (or a type inside it) cannot be carried; the message names it.
    """
    _check(tp, set())
    try:
        converter.get_structure_hook(tp)
        converter.get_unstructure_hook(tp)
    except Exception as exc:  # cattrs raises a variety of errors for unsupported types
        raise TypeError(f"{describe_type(tp)} cannot be carried: {exc}") from None


def _check(tp: Any, seen: set[Any]) -> None:
    if tp is None or tp in _SCALARS:
        return
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        _check(args[0], seen)
        return
    if origin is typing.Union or origin is types.UnionType:
        if bytes in args and str in args:
            raise TypeError(
                "str | bytes cannot be carried: in JSON, bytes travel as base64 text, so the "
                "two are indistinguishable on the wire; use separate parameters or an attrs "
                "class"
            )
        for arg in args:
            _check(arg, seen)
        return
    if origin is typing.Literal:
        for arg in args:
            if not isinstance(arg, (*_JSON_SCALARS, enum.Enum)):
                raise TypeError(f"Literal value {arg!r} cannot be carried: use str, int or bool")
        return
    if origin is tuple:
        if not args:
            raise TypeError(
                "a bare tuple cannot be carried: declare tuple[int, str] or tuple[int, ...]"
            )
        for arg in args:
            if arg is not Ellipsis:
                _check(arg, seen)
        return
    if origin in _SEQUENCES:
        _check(args[0], seen)
        return
    if origin in _MAPPINGS:
        key, value = args
        if key not in _KEY_TYPES and not (isinstance(key, type) and issubclass(key, enum.Enum)):
            raise TypeError(
                f"dict key type {describe_type(key)} cannot be carried: JSON object keys are "
                "text; use str, int, UUID or an Enum"
            )
        _check(value, seen)
        return
    if tp in _SEQUENCES or tp in _MAPPINGS or tp is tuple:
        raise TypeError(
            f"a bare {describe_type(tp)} cannot be carried: declare its element types, "
            f"for example {_EXAMPLES.get(tp, 'list[int]')}"
        )
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if not isinstance(member.value, _JSON_SCALARS):
                raise TypeError(
                    f"enum {tp.__qualname__}.{member.name} has value {member.value!r}: "
                    "only str, int, float, bool values can be carried"
                )
        return
    if isinstance(tp, type) and (attrs.has(tp) or dataclasses.is_dataclass(tp)):
        if tp in seen:
            return
        seen.add(tp)
        try:
            hints = typing.get_type_hints(tp)
        except NameError as exc:
            raise TypeError(
                f"cannot resolve the field types of {tp.__qualname__}: {exc}; define the types "
                "it refers to before the interface that uses it"
            ) from None
        for field, field_type in hints.items():
            try:
                _check(field_type, seen)
            except TypeError as exc:
                raise TypeError(f"field {tp.__qualname__}.{field}: {exc}") from None
        return
    raise TypeError(
        f"{describe_type(tp)} cannot be carried: use None, bool, int, float, str, bytes, an "
        "Enum, datetime, date, UUID, an attrs class or dataclass, or list/tuple/dict/set "
        "and unions of those"
    )


def _format_error(exc: BaseException, tp: Any) -> str:
    # Our own words where cattrs' would lose them ("expected bytes").
    if isinstance(exc, _NotBase64):
        return str(exc)
    return cattrs.v.format_exception(exc, tp)


def structure_error_messages(exc: Exception, path: str) -> list[str]:
    """Turn a cattrs structuring error into one line per problem, each with its path."""
    if isinstance(exc, cattrs.BaseValidationError):
        return [
            msg.replace("invalid value for type, ", "")
            for msg in cattrs.transform_error(exc, path=path, format_exception=_format_error)
        ]
    return [f"{exc} @ {path}"]
