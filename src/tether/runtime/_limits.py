"""The codec's limits: which JSON values cross the wire, checked the same on both sides.

JSON has no inf or nan, and orjson writes them as `null`: a `float | None`
argument of `nan` would arrive as `None`. orjson carries integers from
-2**63 to 2**64-1 and refuses others with a bare `TypeError`; it gives up on
values nested about 255 arrays and objects deep, and structuring such a value
runs out of Python's recursion limit. So tether refuses, with `InvalidRequest`
naming the parameter and the path of the field:

- a float that is not finite, wherever it is;
- an int outside [`MIN_INT`, `MAX_INT`];
- a value nested deeper than `MAX_DEPTH` arrays and objects.

Cost. The sender checks only what its declared types can hold: the check of
each parameter is compiled once, from its type, when the interface is made. A
type with no float and no None in it is not looked at (an out-of-range int
fails in orjson, and only then is the value searched for the culprit); a list
of floats is summed in C (one non-finite element makes the sum non-finite); a
recursive type (a tree) is walked, depth included. The receiver needs less:
orjson refuses inf and nan when parsing and reads out-of-range ints as floats,
which an `int` refuses, so only recursive types are walked for their depth
before they are structured.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import operator
import re
import types
import typing
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import orjson

from ._codec import _MAPPINGS, _SCALARS, _SEQUENCES, MAX_DEPTH, _is_record, describe_type
from ._errors import InvalidRequest
from ._protocol import BinaryMessage, Invoke, Notify, encode, encode_binary

__all__ = [
    "MAX_DEPTH",
    "MAX_INT",
    "MIN_INT",
    "Check",
    "check_enum_values",
    "encode_arguments",
    "too_deep",
    "unsendable",
    "value_check",
    "why_unsendable",
    "within_limits",
]

#: The smallest int carried (orjson's range: signed and unsigned 64-bit).
MIN_INT = -(2**63)
#: The largest int carried.
MAX_INT = 2**64 - 1

#: A compiled check of an unstructured value: True when it may be sent.
Check = Callable[[Any], bool]


def within_limits(value: Any) -> bool:
    """True when `value` (unstructured JSON values) holds no non-finite float,
    no int outside [MIN_INT, MAX_INT], and nests at most MAX_DEPTH deep.

    Anything else (strings, objects JSON cannot hold) is left to the encoder.
    """
    kind = type(value)
    if kind is float:
        return bool(value - value == 0.0)  # inf - inf and nan - nan are nan
    if kind is int:
        return bool(MIN_INT <= value <= MAX_INT)
    if kind is not list and kind is not dict and kind is not tuple:
        return True
    # Iterative, so that a value nested past Python's recursion limit is
    # refused rather than crashing the check.
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        container, depth = pop()
        if depth > MAX_DEPTH:
            return False
        for item in container.values() if type(container) is dict else container:
            kind = type(item)
            if kind is float:
                if item - item != 0.0:
                    return False
            elif kind is int:
                if not MIN_INT <= item <= MAX_INT:
                    return False
            elif kind is list or kind is dict or kind is tuple:
                push((item, depth + 1))
    return True


def too_deep(what: str, fix: str = "send") -> str:
    """The words for a value nested past `MAX_DEPTH`: `what` names it, `fix` is the verb."""
    return (
        f"{what} nests deeper than {MAX_DEPTH} arrays and objects, the most tether carries: "
        f"{fix} a flatter value"
    )


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _shown(path: str) -> str:
    """A path as a message shows it: the middle of a very deep one left out."""
    if len(path) <= 80:
        return path
    return f"{path[:30]}...{path[-40:]}"


def _key_path(path: str, key: Any) -> str:
    if isinstance(key, str) and _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


def why_unsendable(value: Any, path: str) -> tuple[str, str] | None:
    """Why `value` (unstructured) cannot be sent, naming the field under `path`.

    The slow, thorough search, for when a value was refused (by a check, or by
    orjson): it finds the first non-finite float, out-of-range int, value
    nested too deep, non-text object key, or object JSON cannot hold.

    Returns:
        (the field's path, one sentence that starts with it); None when the
        value can be sent after all.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        kind = type(item)
        if isinstance(item, (bool, str, bytes)) or item is None:
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return where, (
                    f"{_shown(where)} is {item!r}: JSON numbers are finite, and tether refuses "
                    "inf and nan rather than send them as null; send a finite number (or None, "
                    "or a str, where the type allows)"
                )
            if kind is float:
                continue
        elif isinstance(item, int):
            if not MIN_INT <= item <= MAX_INT:
                return where, (
                    f"{_shown(where)} is {item}, outside the integers tether carries "
                    f"(-2**63 to 2**64-1, what JSON libraries read exactly); send it as a str"
                )
            if kind is int:
                continue
        elif kind is list or kind is tuple or kind is dict:
            if depth >= MAX_DEPTH:
                return where, too_deep(_shown(where))
            if kind is dict:
                for key, child in reversed(item.items()):
                    if not isinstance(key, str):
                        return where, (
                            f"{_shown(where)} has the key {key!r}: JSON object keys are text; "
                            "declare the dict's key type so that the codec converts it"
                        )
                    stack.append((child, _key_path(where, key), depth + 1))
            else:
                for index in range(len(item) - 1, -1, -1):
                    stack.append((item[index], f"{where}[{index}]", depth + 1))
            continue
        try:
            orjson.dumps(item)
        except TypeError as exc:
            shown = _shown(where)
            return where, f"{shown} is a {kind.__qualname__}, which JSON cannot hold ({exc})"
    return None


# ---------------------------------------------------------------------------
# Checks compiled from declared types


def _check_scalar(value: Any) -> bool:
    """The check of a float slot.

    Every compiled check ends here for a value that is not of its shape (sent
    by mistake): a nan there would arrive as None where None is allowed, and
    anything else not of the declared shape is refused by the receiver.
    """
    return type(value) is not float or value - value == 0.0  # inf - inf, nan - nan: nan


def _check_optional(value: Any) -> bool:
    """The check of a slot that accepts None: a nan sent there by mistake (for an
    `int | None`, say) would arrive as None."""
    return type(value) is not float or value - value == 0.0


_SCALAR_CHECKS = (_check_scalar, _check_optional)


def _sum_is_finite(numbers: Iterable[Any]) -> bool:
    """True when every item is a finite number; False when one may not be.

    One inf or nan makes the sum inf or nan, and summing runs in C. A sum that
    is not finite may also be finite floats adding up past the largest, and
    anything but numbers makes it fail: the caller then looks at each item.
    """
    try:
        total = sum(numbers)
        return bool(total - total == 0.0)
    except Exception:  # not all numbers (Decimal('sNaN') even raises): look at each
        return False


def _check_float_items(value: Any) -> bool:
    if type(value) is not list and type(value) is not tuple:
        return _check_scalar(value)
    return _sum_is_finite(value) or all(map(_check_scalar, value))


def _check_optional_items(value: Any) -> bool:
    if type(value) is not list and type(value) is not tuple:
        return _check_scalar(value)
    # filter(None, ...) drops the None values (and zeros) a sum refuses.
    return _sum_is_finite(filter(None, value)) or all(map(_check_scalar, value))


def _items_check(item: Check) -> Check:
    if item is _check_scalar:
        return _check_float_items
    if item is _check_optional:
        return _check_optional_items
    fields = _SCALAR_FIELDS.get(item)
    if fields is not None:
        return _records_check(item, *fields)

    def check(value: Any) -> bool:
        if type(value) is not list and type(value) is not tuple:
            return _check_scalar(value)
        return all(map(item, value))

    return check


def _records_check(record: Check, plain: tuple[str, ...], optional: tuple[str, ...]) -> Check:
    """A list of records whose checked fields are all scalar slots: each field
    of every record summed in one pass, in C (a Python call per record costs
    as much again as unstructuring it)."""
    plain_getters = [operator.itemgetter(key) for key in plain]
    optional_getters = [operator.itemgetter(key) for key in optional]

    def check(value: Any) -> bool:
        if type(value) is not list and type(value) is not tuple:
            return _check_scalar(value)
        for get in plain_getters:
            if not _sum_is_finite(map(get, value)):
                return all(map(record, value))
        for get in optional_getters:
            if not _sum_is_finite(filter(None, map(get, value))):
                return all(map(record, value))
        return True

    return check


def _values_check(item: Check) -> Check:
    def check(value: Any) -> bool:
        if type(value) is not dict:
            return _check_scalar(value)
        if item is _check_scalar:
            return _check_float_items(list(value.values()))
        if item is _check_optional:
            return _check_optional_items(list(value.values()))
        return all(map(item, value.values()))

    return check


def _positions_check(items: list[tuple[int, Check]], count: int) -> Check:
    def check(value: Any) -> bool:
        if (type(value) is not list and type(value) is not tuple) or len(value) != count:
            return _check_scalar(value)
        return all(item(value[index]) for index, item in items)

    return check


def _record_check(fields: list[tuple[str, Check]]) -> Check:
    if all(field in _SCALAR_CHECKS for _, field in fields):
        keys = tuple(key for key, _ in fields)

        def check_scalars(value: Any) -> bool:
            if type(value) is not dict:
                return _check_scalar(value)
            get = value.get
            for key in keys:  # inline: no call per field
                number = get(key)
                if type(number) is float and number - number != 0.0:
                    return False
            return True

        _SCALAR_FIELDS[check_scalars] = (
            tuple(key for key, field in fields if field is _check_scalar),
            tuple(key for key, field in fields if field is _check_optional),
        )
        return check_scalars

    def check(value: Any) -> bool:
        if type(value) is not dict:
            return _check_scalar(value)
        for key, field in fields:  # noqa: SIM110 - no generator per record: the hot path
            if not field(value.get(key)):
                return False
        return True

    return check


#: The checks of records whose checked fields are all scalar slots, and those
#: fields (float ones, None-accepting ones): a list of such records is checked
#: a field at a time.
_SCALAR_FIELDS: weakref.WeakKeyDictionary[Check, tuple[tuple[str, ...], tuple[str, ...]]] = (
    weakref.WeakKeyDictionary()
)


def _union_check(checks: list[Check]) -> Check:
    # Each check passes what is not its shape, so the value must pass all.
    def check(value: Any) -> bool:
        return all(member(value) for member in checks)

    return check


class _Recursive(Exception):
    """The type refers to itself: its values' depth is not bounded by the type."""


def _record_fields(tp: type) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(tp)
    if attrs.has(tp):
        return [(a.name, hints[a.name]) for a in attrs.fields(tp) if a.init]
    return [(f.name, hints[f.name]) for f in dataclasses.fields(tp) if f.init]


def _plan(tp: Any, records: tuple[type, ...]) -> tuple[Check | None, int]:
    """The check of an unstructured value of `tp` (None: no check needed) and how
    deep `tp` nests.

    Raises:
        _Recursive: `tp` refers to itself.
    """
    if tp is float:
        return _check_scalar, 0
    if tp is None or tp in _SCALARS:
        return None, 0
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _plan(args[0], records)
    if origin is typing.Union or origin is types.UnionType:
        plans = [_plan(arg, records) for arg in args]
        depth = max(depth for _, depth in plans)
        checks = [check for check, _ in plans if check is not None]
        if depth == 0 or not checks:
            # Scalars only, or no member needs a look: a slot that accepts
            # None (a nan sent there by mistake would arrive as None) gets the
            # scalar check, and so does one that accepts a float.
            if type(None) in args:
                return _check_optional, depth
            return (_check_scalar if checks else None), depth
        return (checks[0] if len(checks) == 1 else _union_check(checks)), depth
    if origin is typing.Literal:
        check_enum_values(args, f"{describe_type(tp)}")
        return None, 0
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        check_enum_values(tp, f"enum {tp.__qualname__}")
        return None, 0
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        plans = [_plan(arg, records) for arg in args]
        items = [(index, check) for index, (check, _) in enumerate(plans) if check is not None]
        depth = 1 + max((depth for _, depth in plans), default=0)
        return (_positions_check(items, len(args)) if items else None), depth
    if origin is tuple or origin in _SEQUENCES:
        item, depth = _plan(args[0], records)
        return (None if item is None else _items_check(item)), depth + 1
    if origin in _MAPPINGS:
        item, depth = _plan(args[1], records)
        return (None if item is None else _values_check(item)), depth + 1
    if _is_record(tp):
        if tp in records:
            raise _Recursive
        fields: list[tuple[str, Check]] = []
        depth = 0
        for key, field_type in _record_fields(tp):
            check, field_depth = _plan(field_type, (*records, tp))
            depth = max(depth, field_depth)
            if check is not None:
                fields.append((key, check))
        return (_record_check(fields) if fields else None), depth + 1
    return None, 0  # not carried: check_carriable has refused it already


def value_check(tp: Any) -> tuple[Check | None, bool]:
    """The send-side check of unstructured values of `tp`, compiled once per type.

    Returns:
        (check, deep): `check` is None when no value of `tp` can need one;
        `deep` is True when the type does not bound the depth of its values (a
        recursive type, or one declared deeper than MAX_DEPTH), so a receiver
        must walk a received value before structuring it.
    """
    try:
        check, depth = _plan(tp, ())
    except _Recursive:
        return within_limits, True
    if depth > MAX_DEPTH:
        return within_limits, True
    return check, False


def check_enum_values(values: Iterable[Any], what: str) -> None:
    """Refuse Enum or Literal values that could not cross the wire.

    Raises:
        TypeError: one is a non-finite float or an int out of range.
    """
    for value in values:
        if isinstance(value, enum.Enum):
            value = value.value
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise TypeError(f"{what} has the value {value!r}: JSON numbers are finite")
        if isinstance(value, int) and not MIN_INT <= value <= MAX_INT:
            raise TypeError(
                f"{what} has the value {value}, outside the integers tether carries "
                "(-2**63 to 2**64-1)"
            )


def unsendable(
    values: Iterable[Any], names: Iterable[str] | None, where: str, activity_id: str | None = None
) -> InvalidRequest | None:
    """The error for arguments that cannot be sent, naming the first culprit.

    Args:
        values: The unstructured arguments.
        names: The parameters' names; None for untyped arguments (named
            `args[0]`, `args[1]`, ... then).
        where: What is being called (`Interface.operation`, `channel.method`).
        activity_id: The ActivityId of the call, for the error.

    Returns:
        None when every argument can be sent after all.
    """
    listed = None if names is None else list(names)
    for index, value in enumerate(values):
        name = f"args[{index}]" if listed is None else listed[index]
        found = why_unsendable(value, name)
        if found is not None:
            path, why = found
            details: dict[str, Any] = {"path": path}
            if listed is not None:
                details["parameter"] = name
            return InvalidRequest(
                f"{where}: argument {name!r} cannot be sent: {why}",
                details=details,
                activity_id=activity_id,
            )
    return None


def encode_arguments(
    message: Invoke | Notify, names: tuple[str, ...] | None, *, binary: bool = False
) -> bytes | BinaryMessage:
    """Encode an IPC invoke or notification, refusing arguments the codec cannot carry.

    Args:
        message: The message; its arguments unstructured.
        names: The parameters' names when a typed proxy has checked the
            arguments already; None for untyped ones, checked here.
        binary: Encode for a stream that takes binary (`encode_binary`):
            bytes values raw. Otherwise JSON, bytes as base64.

    Raises:
        InvalidRequest: an argument cannot be sent (a non-finite float, an int
            out of range, nested too deep, not JSON); it names the argument.
    """
    refused = None
    if names is None and not all(map(within_limits, message.args)):
        refused = unsendable(message.args, None, _called(message), message.activity_id)
    if refused is None:
        try:
            return encode_binary(message) if binary else encode(message)
        except TypeError as exc:
            where = _called(message)
            refused = unsendable(message.args, names, where, message.activity_id)
            if refused is None:
                refused = InvalidRequest(
                    f"the arguments of {where} cannot be sent: {exc}",
                    activity_id=message.activity_id,
                )
    raise refused


def _called(message: Invoke | Notify) -> str:
    # Made only for an error: encode_arguments runs for every invoke and notification.
    return f"{message.channel}.{message.method}"
