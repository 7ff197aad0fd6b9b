"""Typed access to a decoded message's JSON object, for the protocol's decoders.

Every misfit (a field missing, or of the wrong type) is an `InvalidRequest`
that names the field, and the message's `id` once it has been read, so that
the receiver fails that one request rather than the connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._errors import InvalidRequest

__all__ = ["MAX_LABEL_LENGTH", "Fields", "is_label"]

#: The longest ActivityId, session id or application id (or version) a message
#: may carry. They end up in every log line of a request: a peer must not be
#: able to write a megabyte, or a line break and a forged line, into them.
MAX_LABEL_LENGTH = 200


def is_label(value: str) -> bool:
    """Whether `value` may be an ActivityId, session id or application id or version.

    Printable text (no line break, tab or other control character) of at most
    `MAX_LABEL_LENGTH` characters.
    """
    return len(value) <= MAX_LABEL_LENGTH and value.isprintable()


class Fields:
    """Typed access to a decoded JSON object, raising InvalidRequest on misfit."""

    __slots__ = ("id", "obj", "tag")

    def __init__(self, obj: Mapping[str, Any], tag: str) -> None:
        self.obj = obj
        self.tag = tag
        self.id: int | None = None

    def _fail(self, key: str, expected: str, value: Any) -> InvalidRequest:
        got = "nothing" if value is None else type(value).__name__
        details: dict[str, Any] = {"field": key}
        if self.id is not None:
            details["id"] = self.id
        return InvalidRequest(
            f"{self.tag!r} message field {key!r} must be {expected}, got {got}", details=details
        )

    def get_int(self, key: str, *, optional: bool = False) -> Any:
        value = self.obj.get(key)
        if value is None and optional:
            return None
        if type(value) is not int or value < 0:
            raise self._fail(key, "a non-negative integer", value)
        return value

    def get_str(self, key: str, *, optional: bool = False) -> Any:
        value = self.obj.get(key)
        if value is None and optional:
            return None
        if type(value) is not str:
            raise self._fail(key, "a string", value)
        return value

    def get_label(self, key: str, *, optional: bool = False) -> Any:
        """A string that ends up in log lines (an ActivityId, an id): see `is_label`."""
        value = self.get_str(key, optional=optional)
        if value is not None and not is_label(value):
            raise self._fail(
                key,
                f"printable text of at most {MAX_LABEL_LENGTH} characters (no line breaks)",
                value,
            )
        return value

    def get_bool(self, key: str) -> bool:
        """An optional boolean: absent (or null) is False."""
        value = self.obj.get(key)
        if value is None:
            return False
        if type(value) is not bool:
            raise self._fail(key, "true or false", value)
        return value

    def get_list(self, key: str) -> list[Any]:
        value = self.obj.get(key)
        if type(value) is not list:
            raise self._fail(key, "an array", value)
        return value

    def get_dict(self, key: str, *, optional: bool = False) -> dict[str, Any]:
        value = self.obj.get(key)
        if value is None and optional:
            return {}
        if type(value) is not dict:
            raise self._fail(key, "an object", value)
        return value

    def get_str_map(self, key: str) -> dict[str, str]:
        value = self.get_dict(key, optional=True)
        if not all(type(v) is str for v in value.values()):
            raise self._fail(key, "an object of strings", value)
        return value

    def sub(self, key: str, *, optional: bool = False) -> Fields:
        sub = Fields(self.get_dict(key, optional=optional), f"{self.tag}.{key}")
        sub.id = self.id
        return sub

    def with_id(self, *, optional: bool = False) -> int | None:
        self.id = self.get_int("id", optional=optional)
        return self.id

    def required_id(self) -> int:
        """The message's `id`, kept for the details of a later field's error."""
        id_: int = self.get_int("id")
        self.id = id_
        return id_
