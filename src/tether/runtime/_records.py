"""What the carried record types look like from outside: their fields,
defaults and docs, and the field that tells a union's records apart.

The OpenAPI document (transports/http) and the TypeScript stubs (cli) both
describe the same types from these, so they agree with each other and with
the codec.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import typing
from typing import Any

import attrs

__all__ = ["NO_DEFAULT", "class_doc", "literal_value", "record_fields", "union_discriminator"]

#: The default of a field whose default is made by a factory (or that has none).
NO_DEFAULT: Any = object()


def record_fields(tp: type) -> list[tuple[str, bool, Any]]:
    """(name, has a default, the default or NO_DEFAULT for a factory) of each field.

    Fields with `init=False` are left out: the codec neither writes nor reads them.
    """
    out: list[tuple[str, bool, Any]] = []
    if attrs.has(tp):
        for a in attrs.fields(tp):
            if not a.init:
                continue
            if a.default is attrs.NOTHING:
                out.append((a.name, False, NO_DEFAULT))
            elif isinstance(a.default, attrs.Factory):  # type: ignore[arg-type]
                out.append((a.name, True, NO_DEFAULT))
            else:
                out.append((a.name, True, a.default))
        return out
    for f in dataclasses.fields(tp):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            out.append((f.name, True, f.default))
        elif f.default_factory is not dataclasses.MISSING:
            out.append((f.name, True, NO_DEFAULT))
        else:
            out.append((f.name, False, NO_DEFAULT))
    return out


def union_discriminator(records: list[type]) -> tuple[str, list[str]] | None:
    """A field every record has as a required one-value str Literal, all values distinct."""
    candidates: dict[str, list[str]] | None = None
    for record in records:
        hints = typing.get_type_hints(record)
        tags: dict[str, str] = {}
        for field, has_default, _ in record_fields(record):
            hint = hints[field]
            if has_default or typing.get_origin(hint) is not typing.Literal:
                continue
            (value, *rest) = typing.get_args(hint)
            value = literal_value(value)
            if not rest and isinstance(value, str):
                tags[field] = value
        if candidates is None:
            candidates = {field: [value] for field, value in tags.items()}
        else:
            candidates = {
                field: [*values, tags[field]]
                for field, values in candidates.items()
                if field in tags
            }
    for field, values in (candidates or {}).items():
        if len(set(values)) == len(values):
            return field, values
    return None


def literal_value(value: Any) -> Any:
    """A `Literal` argument as the codec writes it (an enum member as its value)."""
    return value.value if isinstance(value, enum.Enum) else value


def class_doc(tp: type) -> str | None:
    """A class's own docstring, cleaned; None when it has none worth showing."""
    doc = tp.__dict__.get("__doc__")
    if not isinstance(doc, str):
        return None
    doc = inspect.cleandoc(doc)
    # dataclasses make up a docstring from the signature; it says nothing new.
    if dataclasses.is_dataclass(tp) and doc.startswith(f"{tp.__name__}("):
        return None
    return doc or None
