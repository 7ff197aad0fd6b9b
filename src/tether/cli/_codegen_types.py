"""`tether codegen typescript`, its type half: Python types as TypeScript types and Shapes.

The TypeScript is what the codec writes (docs/wire.md): records are objects
keyed by their Python field names, enums their values, bytes `Uint8Array` (the
client turns base64 back into bytes where a `Shape` says bytes are), datetime,
date and UUID text, sets and tuples arrays, dict keys text.
"""

from __future__ import annotations

import datetime
import enum
import json
import re
import types
import typing
import uuid
from collections.abc import Iterator
from typing import Any

from ..runtime._codec import _MAPPINGS, _SEQUENCES, _is_record, describe_type
from ..runtime._records import class_doc, literal_value, record_fields, union_discriminator

__all__ = [
    "CodegenError",
    "Names",
    "TypeWriter",
    "doc_comment",
    "literal",
    "shape_text",
]


class CodegenError(Exception):
    """Why the stubs cannot be written (one line; the CLI exits 2 with it)."""


#: Words TypeScript refuses as a parameter or type name (reserved words, strict
#: mode's too, and the predefined type names).
RESERVED = frozenset(
    {
        "any",
        "arguments",
        "await",
        "bigint",
        "boolean",
        "break",
        "case",
        "catch",
        "class",
        "const",
        "continue",
        "debugger",
        "default",
        "delete",
        "do",
        "else",
        "enum",
        "eval",
        "export",
        "extends",
        "false",
        "finally",
        "for",
        "function",
        "if",
        "implements",
        "import",
        "in",
        "instanceof",
        "interface",
        "let",
        "never",
        "new",
        "null",
        "number",
        "object",
        "package",
        "private",
        "protected",
        "public",
        "return",
        "static",
        "string",
        "super",
        "switch",
        "symbol",
        "this",
        "throw",
        "true",
        "try",
        "typeof",
        "undefined",
        "unknown",
        "var",
        "void",
        "while",
        "with",
        "yield",
    }
)
#: Names the stubs use from TypeScript's globals and from the client package: a
#: generated type of the same name would hide them.
TAKEN_TYPES = frozenset(
    {
        "Array",
        "AsyncIterable",
        "CallOptions",
        "HandlerContext",
        "IpcChannelRef",
        "Iterable",
        "NotificationRef",
        "Promise",
        "Record",
        "RpcInterfaceRef",
        "Uint8Array",
    }
)

_SCALAR_TS: dict[Any, str] = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    bytes: "Uint8Array",
    datetime.datetime: "string",
    datetime.date: "string",
    uuid.UUID: "string",
}
_FORMATS: dict[Any, str] = {
    datetime.datetime: "ISO 8601 date and time (`datetime.isoformat()`; no UTC offset when "
    "the datetime has no timezone). @format date-time",
    datetime.date: "ISO 8601 date, `YYYY-MM-DD`. @format date",
    uuid.UUID: "A UUID, as text. @format uuid",
}
_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


def literal(value: Any) -> str:
    """A JSON scalar as TypeScript source (strings as JSON text, ASCII only)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, int) else json.dumps(value)
    return json.dumps(value)


def doc_comment(text: str | None, indent: str = "") -> list[str]:
    """`text` as a JSDoc block (no lines for no text); `*/` inside is broken up."""
    if not text:
        return []
    lines = text.replace("*/", "*\\/").splitlines()
    if len(lines) == 1:
        return [f"{indent}/** {lines[0]} */"]
    body = [f"{indent} *{' ' + line if line else ''}" for line in lines]
    return [f"{indent}/**", *body, f"{indent} */"]


def format_note(tp: Any) -> str | None:
    """What a field or parameter of `tp` (or `tp | None`) holds as text, for its JSDoc."""
    args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
    if _is_union(tp) and len(args) == 1:
        tp = args[0]
    return _FORMATS.get(tp)


def _is_union(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin is typing.Union or origin is types.UnionType


def _top_level_union(text: str) -> bool:
    depth = 0
    for char in text:
        if char in "<([{":
            depth += 1
        elif char in ">)]}":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
    return False


def _is_plain(tp: Any) -> bool:
    """A type whose JSON is a scalar: a Shape for another union arm leaves it alone."""
    return (
        tp is None
        or tp in _SCALAR_TS
        or typing.get_origin(tp) is typing.Literal
        or (isinstance(tp, type) and issubclass(tp, enum.Enum))
    )


def _array(item: str) -> str:
    return f"({item})[]" if _top_level_union(item) else f"{item}[]"


class Names:
    """The names the stubs declare, in TypeScript's two spaces (types and values).

    A name may be declared once per space, by one owner (an interface declares
    `X` in both); a second owner is a `CodegenError` that names both.
    """

    def __init__(self) -> None:
        self._spaces: dict[str, dict[str, tuple[object, str]]] = {"type": {}, "value": {}}

    def claim(self, space: str, name: str, owner: object, what: str) -> None:
        """Declare `name` in `space` ("type" or "value") for `owner` (`what` says it in errors).

        Raises:
            CodegenError: the name is reserved or another owner has it.
        """
        if name in RESERVED or (space == "type" and name in TAKEN_TYPES):
            raise CodegenError(
                f"{what} would be named {name!r} in TypeScript, which is reserved or used by "
                "the stubs themselves: rename it in Python"
            )
        taken = self._spaces[space].get(name)
        if taken is not None and taken[0] is not owner:
            raise CodegenError(
                f"two declarations would be named {name!r} in the TypeScript stubs: "
                f"{taken[1]} and {what}; rename one in Python, or generate each module's "
                "stubs into its own file"
            )
        self._spaces[space][name] = (owner, what)


def _qualified(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


class TypeWriter:
    """Writes TypeScript for Python types, collecting the named ones (records, enums).

    `ts(tp)` names each record and enum it meets; `declarations()` then writes
    them all, in the order they were first met, including the ones met while
    writing others.
    """

    def __init__(self, names: Names) -> None:
        self.names = names
        self._named: dict[type, str] = {}
        self._shapes: dict[type, Any] = {}
        self._shaping: set[type] = set()

    # -- type expressions -------------------------------------------------------

    def ts(self, tp: Any) -> str:
        """The TypeScript type of the JSON that the codec makes of a `tp` value.

        Raises:
            CodegenError: the codec does not carry `tp`, or its name clashes.
        """
        if tp is None:
            return "null"
        if tp in _SCALAR_TS:
            return _SCALAR_TS[tp]
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            return self.ts(args[0])
        if _is_union(tp):
            arms = list(dict.fromkeys(self.ts(arg) for arg in args))
            return " | ".join(arms)
        if origin is typing.Literal:
            return " | ".join(dict.fromkeys(literal(literal_value(arg)) for arg in args))
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return _array(self.ts(args[0]))
            if args == ((),):
                return "[]"
            return f"[{', '.join(self.ts(arg) for arg in args)}]"
        if origin in _SEQUENCES and len(args) == 1:
            return _array(self.ts(args[0]))
        if origin in _MAPPINGS and len(args) == 2:
            # JSON object keys are text: int, UUID and enum keys arrive as text too.
            return f"Record<string, {self.ts(args[1])}>"
        if _is_record(tp) or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
            return self._name(tp)
        raise CodegenError(
            f"{describe_type(tp)} has no TypeScript type: tether's codec does not carry it"
        )

    def _name(self, tp: type) -> str:
        name = self._named.get(tp)
        if name is None:
            name = tp.__name__
            kind = "enum" if issubclass(tp, enum.Enum) else "class"
            what = f"{kind} {_qualified(tp)}"
            self.names.claim("type", name, tp, what)
            if kind == "enum":
                self.names.claim("value", name, tp, what)
            self._named[tp] = name
        return name

    # -- declarations -----------------------------------------------------------

    def declarations(self) -> Iterator[str]:
        """The lines declaring every record and enum named so far (and those they name)."""
        done = 0
        while done < len(self._named):
            tp = list(self._named)[done]
            done += 1
            yield ""
            if issubclass(tp, enum.Enum):
                yield from self._enum(tp)
            else:
                yield from self._record(tp)

    def _record(self, tp: type) -> Iterator[str]:
        name = self._named[tp]
        try:
            hints = typing.get_type_hints(tp, include_extras=True)
        except NameError as exc:
            raise CodegenError(
                f"cannot resolve the field types of {_qualified(tp)}: {exc}"
            ) from None
        yield from doc_comment(class_doc(tp))
        fields = record_fields(tp)
        if not fields:
            yield f"export interface {name} {{}}"
            return
        yield f"export interface {name} {{"
        for field, has_default, _ in fields:
            yield from doc_comment(format_note(hints[field]), "  ")
            optional = "?" if has_default else ""
            yield f"  {self.field_name(field)}{optional}: {self.ts(hints[field])};"
        yield "}"

    def _enum(self, tp: type[enum.Enum]) -> Iterator[str]:
        name = self._named[tp]
        members = list(tp)
        yield from doc_comment(class_doc(tp))
        values = " | ".join(dict.fromkeys(literal(member.value) for member in members))
        yield f"export type {name} = {values or 'never'};"
        yield f"export const {name} = {{"
        for member in members:
            yield f"  {self.field_name(member.name)}: {literal(member.value)},"
        yield "} as const;"

    @staticmethod
    def field_name(name: str) -> str:
        """A property name: bare when it is an identifier, else quoted."""
        return name if _IDENTIFIER.match(name) else json.dumps(name)

    # -- shapes -----------------------------------------------------------------

    def shape(self, tp: Any) -> Any:
        """Where a `tp` value holds bytes, as types.ts `Shape` (a JSON value); None: nowhere.

        Raises:
            CodegenError: a recursive class holds bytes (a Shape is a finite value),
                or a union's arms hold bytes in ways its values cannot tell apart.
        """
        if tp is bytes:
            return "bytes"
        if tp is None or tp in _SCALAR_TS:
            return None
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            return self.shape(args[0])
        if _is_union(tp):
            return self._union_shape(tp, args)
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                item = self.shape(args[0])
                return None if item is None else {"list": item}
            items = [self.shape(arg) for arg in args if arg != ()]
            return {"tuple": items} if any(item is not None for item in items) else None
        if origin in _SEQUENCES and len(args) == 1:
            item = self.shape(args[0])
            return None if item is None else {"list": item}
        if origin in _MAPPINGS and len(args) == 2:
            item = self.shape(args[1])
            return None if item is None else {"dict": item}
        if _is_record(tp):
            return self._record_shape(tp)
        return None

    def _record_shape(self, tp: type) -> Any:
        if tp in self._shapes:
            return self._shapes[tp]
        if tp in self._shaping:
            # A class that holds itself: fine unless bytes are somewhere in the loop.
            if self._holds_bytes(tp, set()):
                raise CodegenError(
                    f"{_qualified(tp)} refers to itself and holds bytes: the TypeScript "
                    "client's Shape cannot describe that; carry the bytes outside the "
                    "recursive class"
                )
            return None
        self._shaping.add(tp)
        try:
            hints = typing.get_type_hints(tp, include_extras=True)
            fields = {}
            for field, _, _ in record_fields(tp):
                field_shape = self.shape(hints[field])
                if field_shape is not None:
                    fields[field] = field_shape
        finally:
            self._shaping.discard(tp)
        result = {"fields": fields} if fields else None
        self._shapes[tp] = result
        return result

    def _holds_bytes(self, tp: Any, seen: set[Any]) -> bool:
        if tp is bytes:
            return True
        if _is_record(tp):
            if tp in seen:
                return False
            seen.add(tp)
            hints = typing.get_type_hints(tp, include_extras=True)
            return any(self._holds_bytes(hints[f], seen) for f, _, _ in record_fields(tp))
        return any(
            self._holds_bytes(arg, seen) for arg in typing.get_args(tp) if arg is not Ellipsis
        )

    def _union_shape(self, tp: Any, args: tuple[Any, ...]) -> Any:
        held = [(arg, shape) for arg in args if (shape := self.shape(arg)) is not None]
        if not held:
            return None
        others = [arg for arg in args if arg not in {a for a, _ in held}]
        if len(held) == 1 and all(_is_plain(arg) for arg in others):
            # The one arm that holds bytes: null and the other arms' values pass through.
            return held[0][1]
        records = [arg for arg in args if _is_record(arg)]
        if all(_is_record(arg) or _is_plain(arg) for arg in args) and len(records) > 1:
            tag = union_discriminator(records)
            if tag is not None:
                return self._tagged(records, tag)
        raise CodegenError(
            f"{describe_type(tp)}: more than one of its arms holds bytes or containers, and "
            "no discriminator (a required one-value str Literal field in every class) tells "
            "them apart, so the TypeScript client could not tell which base64 text is bytes; "
            "add a discriminator field"
        )

    def _tagged(self, records: list[type], tag: tuple[str, list[str]]) -> Any:
        field, values = tag
        cases = {}
        for record, value in zip(records, values, strict=True):
            case = self.shape(record)
            if case is not None:
                cases[value] = case
        return {"union": {"tag": field, "cases": cases}}


def shape_text(shape: Any) -> str:
    """A Shape (a JSON value) as TypeScript source: bare keys where they are identifiers."""
    if shape is None or isinstance(shape, str):
        return literal(shape)
    if isinstance(shape, list):
        return f"[{', '.join(shape_text(item) for item in shape)}]"
    items = ", ".join(
        f"{TypeWriter.field_name(key)}: {shape_text(value)}" for key, value in shape.items()
    )
    return f"{{ {items} }}"
