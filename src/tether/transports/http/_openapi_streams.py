"""What the OpenAPI document says of stream operations (docs/http.md, "Streams").

OpenAPI 3.1 has no schema for the items of a streamed body, so a stream body's
media types get the schema of one of its texts (an NDJSON line, or the
message in a record), and the description says how they follow each other.
A two-way stream is listed with its one answer over HTTP: 404.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

from ...runtime import Operation
from ...runtime._codec import describe_type
from ...runtime._interfaces import stream_item_type

__all__ = [
    "STREAM_KINDS",
    "stream_kind",
    "stream_kinds",
    "stream_request_body",
    "stream_responses",
    "two_way_operation",
]

_SCHEMAS_REF = "#/components/schemas/"
_NDJSON = "application/x-ndjson"
_RECORDS = "application/vnd.tether.stream"
_RECORDS_SCHEMA = {"type": "string", "contentMediaType": _RECORDS}

#: The `streams` entry of an operation in describe: its kind.
STREAM_KINDS = ("server", "client", "two-way")


def stream_kind(op: Operation) -> str | None:
    """`server`, `client` or `two-way` for a stream operation; None for a unary one."""
    if op.stream_result:
        return "two-way" if op.stream_param is not None else "server"
    return "client" if op.stream_param is not None else None


def stream_kinds(operations: Mapping[str, Operation]) -> dict[str, str]:
    """Each stream operation's kind, by name (what describe lists under `streams`)."""
    return {name: kind for name, op in operations.items() if (kind := stream_kind(op)) is not None}


def _item_types(op: Operation) -> tuple[Any, Any]:
    """The item types of the argument and result streams (None where there is none)."""
    hints = typing.get_type_hints(op.function)
    argument = None
    if op.stream_param is not None:
        argument = stream_item_type(op.param_types[op.stream_param])
    return argument, stream_item_type(hints.get("return"))


def stream_responses(op: Operation, schema_of: Any, headers: dict[str, Any]) -> dict[str, Any]:
    """The 200 of a server stream: NDJSON lines (or records) of items, then its end."""
    _, item = _item_types(op)
    line = {
        "oneOf": [
            {
                "type": "object",
                "required": ["t", "value"],
                "properties": {"t": {"const": "item"}, "value": schema_of(item)},
            },
            {
                "type": "object",
                "required": ["t", "value"],
                "properties": {"t": {"const": "result"}, "value": {"type": "null"}},
            },
            {
                "type": "object",
                "required": ["t", "error"],
                "properties": {
                    "t": {"const": "error"},
                    "error": {"$ref": _SCHEMAS_REF + "Error/properties/error"},
                },
            },
        ]
    }
    return {
        "description": (
            f"A stream of {describe_type(item)}, sent as the server makes them (chunked): one "
            'JSON object per line, `{"t": "item", "value": ...}` for each item, then '
            '`{"t": "result", "value": null}` at its end or `{"t": "error", "error": {...}}` '
            "(the error object of an error answer) when it failed after its first item. An "
            "error before the first item is answered with its own status. With `Accept: "
            f"{_RECORDS}`, the same messages as records: a u32 big-endian length, then the "
            "message."
        ),
        "headers": headers,
        "content": {_NDJSON: {"schema": line}, _RECORDS: {"schema": dict(_RECORDS_SCHEMA)}},
    }


def stream_request_body(op: Operation, arguments: dict[str, Any], schema_of: Any) -> dict[str, Any]:
    """A client stream's body: the arguments on the first line, then one item per line."""
    item, _ = _item_types(op)
    name = op.param_names[op.stream_param or 0]
    return {
        "required": True,
        "description": (
            "Chunked, one JSON text per line: first the JSON array of the arguments, "
            f"with null in the place of {name!r}; then each item of {name!r} "
            f"({describe_type(item)}), one per line. The end of the body ends the stream. "
            f"With `Content-Type: {_RECORDS}`, the same texts as records: a u32 big-endian "
            "length, then the text. The answer is the operation's result, as for any call."
        ),
        "content": {
            _NDJSON: {"schema": {"anyOf": [arguments, schema_of(item)]}},
            _RECORDS: {"schema": dict(_RECORDS_SCHEMA)},
        },
    }


def two_way_operation(operation_id: str, tag: str, not_found: dict[str, Any]) -> dict[str, Any]:
    """A two-way stream's entry: HTTP does not carry it, and says so with 404."""
    return {
        "operationId": operation_id,
        "tags": [tag],
        "summary": "A two-way stream: not carried over HTTP",
        "description": (
            "HTTP/1.1 proxies buffer request bodies and browsers cannot read a response "
            "while they stream a request, so this operation is answered 404 (not-found) "
            "here: call it over the memory, WebSocket ({prefix}/ws) or local transport."
        ),
        "responses": {"404": not_found},
    }
