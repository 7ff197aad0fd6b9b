"""The OpenAPI 3.1 document of the HTTP wire, generated from the served interfaces.

`GET {prefix}/openapi.json` answers with `openapi_document(manager)`. Schemas
describe the JSON that tether's codec (`tether.runtime.CONVERTER` followed by
orjson) produces and accepts, not the Python types: bytes are base64 text,
sets are arrays, int dict keys are decimal text, enums are their values.
"""

from __future__ import annotations

import collections.abc
import copy
import datetime
import enum
import inspect
import re
import sys
import types
import typing
import uuid
from typing import Any
from urllib.parse import quote

import orjson

from ...runtime import CONVERTER, PROTOCOL_VERSION, Operation, RpcManager
from ...runtime._codec import _INT_TEXT, _MAPPINGS, _is_record, describe_type, dumps
from ...runtime._limits import MAX_DEPTH, MAX_INT, MIN_INT
from ...runtime._records import (
    NO_DEFAULT,
    class_doc,
    literal_value,
    record_fields,
    union_discriminator,
)
from ._openapi_cache import POLICY_SCHEMA, cached_get, with_policy
from ._openapi_streams import (
    stream_kind,
    stream_request_body,
    stream_responses,
    two_way_operation,
)

__all__ = ["json_schema", "openapi_document"]

_SCHEMAS_REF = "#/components/schemas/"

_SEQUENCES: frozenset[Any] = frozenset(
    {list, collections.abc.Sequence, collections.abc.MutableSequence}
)
_SETS: frozenset[Any] = frozenset({set, frozenset, collections.abc.Set, collections.abc.MutableSet})

# What the codec writes for each scalar type. bytes travel in JSON as standard
# base64 (RFC 4648 section 4: that alphabet, padded), all the codec accepts.
_BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_SCALARS: dict[Any, dict[str, Any]] = {
    type(None): {"type": "null"},
    bool: {"type": "boolean"},
    # The codec's limits: ints orjson carries, finite doubles (JSON has no inf or nan).
    int: {"type": "integer", "minimum": MIN_INT, "maximum": MAX_INT},
    float: {"type": "number", "minimum": -sys.float_info.max, "maximum": sys.float_info.max},
    str: {"type": "string"},
    bytes: {
        "type": "string",
        "contentEncoding": "base64",
        "pattern": _BASE64,
        "description": (
            "bytes, standard base64 (RFC 4648, padded); a request or response in "
            "application/vnd.tether.frame carries them raw instead"
        ),
    },
    # datetime before date: a datetime is a date.
    datetime.datetime: {
        "type": "string",
        "format": "date-time",
        "description": (
            "ISO 8601 (datetime.isoformat); a datetime without a timezone is sent without "
            "a UTC offset"
        ),
    },
    datetime.date: {"type": "string", "format": "date"},
    uuid.UUID: {"type": "string", "format": "uuid"},
}
# The decimal text the codec writes for an int dict key (and accepts back).
_INT_KEY = {"type": "string", "pattern": f"^{_INT_TEXT.pattern}$"}
_JSON_TYPES: dict[type, str] = {str: "string", bool: "boolean", int: "integer", float: "number"}
# Component names must match ^[a-zA-Z0-9.\-_]+$ (OpenAPI 3.1, Components Object).
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")


def json_schema(tp: Any, components: dict[str, Any]) -> dict[str, Any]:
    """Return the JSON Schema of the JSON that the codec makes of a `tp` value.

    Named types (attrs classes, dataclasses, Enums) are added to
    `components["schemas"]` under their class name and referenced as
    `{"$ref": "#/components/schemas/Name"}`, so recursive classes are fine. A
    name already in `components["schemas"]` is taken to be the same type's (so
    several calls can share one `components`); two types with the same name met
    in one call are told apart by their module-qualified names.

    Args:
        tp: A type annotation that an interface operation may use.
        components: The OpenAPI `components` object to add named schemas to.

    Returns:
        A JSON Schema (draft 2020-12, as OpenAPI 3.1 uses it).

    Raises:
        TypeError: `tp` is not a type the codec carries; the message names it.
    """
    return _Schemas(components).of(tp)


class _Schemas:
    """Builds schemas into one `components`, remembering which class got which name."""

    def __init__(self, components: dict[str, Any]) -> None:
        self.schemas: dict[str, Any] = components.setdefault("schemas", {})
        self.names: dict[type, str] = {}

    def of(self, tp: Any) -> dict[str, Any]:
        """Return the schema of `tp`.

        Raises:
            TypeError: `tp` is not a type the codec carries.
        """
        if tp is None:
            return {"type": "null"}
        if tp in _SCALARS:
            return copy.deepcopy(_SCALARS[tp])
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            return self.of(args[0])
        if origin is typing.Union or origin is types.UnionType:
            return self._union(args)
        if origin is typing.Literal:
            values = [literal_value(arg) for arg in args]
            return {"const": values[0]} if len(values) == 1 else {"enum": values}
        if origin is tuple and args:
            if len(args) == 2 and args[1] is Ellipsis:
                return {"type": "array", "items": self.of(args[0])}
            return {
                "type": "array",
                "prefixItems": [self.of(arg) for arg in args],
                "minItems": len(args),
                "maxItems": len(args),
                "items": False,
            }
        if origin in _SEQUENCES and args:
            return {"type": "array", "items": self.of(args[0])}
        if origin in _SETS and args:
            # Sets are written as lists of distinct items; a client's
            # duplicates are accepted and merged, but the codec never sends any.
            return {"type": "array", "items": self.of(args[0]), "uniqueItems": True}
        if origin in _MAPPINGS and len(args) == 2:
            return self._mapping(args[0], args[1])
        if _is_record(tp) or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
            return {"$ref": _SCHEMAS_REF + self._named(tp)}
        raise TypeError(f"{describe_type(tp)} has no JSON schema: tether's codec does not carry it")

    # -- named types -------------------------------------------------------------

    def _named(self, tp: type) -> str:
        name = self.names.get(tp)
        if name is not None:
            return name
        name = tp.__name__
        if name in self.names.values():
            # Another class of this name came first: qualify this one.
            base = _NOT_IN_NAME.sub("_", f"{tp.__module__}.{tp.__qualname__}")
            name, n = base, 2
            while name in self.names.values():
                name, n = f"{base}_{n}", n + 1
        self.names[tp] = name
        if name not in self.schemas:
            # The placeholder first, so a class that refers to itself finds it.
            self.schemas[name] = {}
            try:
                schema = _enum_schema(tp) if issubclass(tp, enum.Enum) else self._record(tp)
            except BaseException:
                del self.schemas[name], self.names[tp]
                raise
            self.schemas[name] = schema
        return name

    def _record(self, tp: type) -> dict[str, Any]:
        hints = typing.get_type_hints(tp, include_extras=True)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field, has_default, default in record_fields(tp):
            schema = self.of(hints[field])
            if not has_default:
                required.append(field)
            elif default is not NO_DEFAULT:
                encoded = _encoded(default, hints[field])
                if encoded is not NO_DEFAULT:
                    schema = {**schema, "default": encoded}
            properties[field] = schema
        # No additionalProperties: false, because the codec ignores unknown keys.
        schema = {"type": "object", "properties": properties, "required": required}
        doc = class_doc(tp)
        if doc:
            schema["description"] = doc
        return schema

    # -- unions and mappings ---------------------------------------------------

    def _union(self, args: tuple[Any, ...]) -> dict[str, Any]:
        records = [arg for arg in args if _is_record(arg)]
        tag = union_discriminator(records) if len(records) > 1 else None
        if tag is None:
            return {"anyOf": [self.of(arg) for arg in args]}
        field, values = tag
        refs = [self.of(record) for record in records]
        tagged = {
            "oneOf": refs,
            "discriminator": {
                "propertyName": field,
                "mapping": {value: ref["$ref"] for value, ref in zip(values, refs, strict=True)},
            },
        }
        others = [self.of(arg) for arg in args if not _is_record(arg)]
        return {"anyOf": [tagged, *others]} if others else tagged

    def _mapping(self, key: Any, value: Any) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object", "additionalProperties": self.of(value)}
        # JSON object keys are text: the codec writes int keys and the values of
        # enum keys as text (`str(value)` unless the value is already a str).
        if key is int:
            schema["propertyNames"] = dict(_INT_KEY)
        elif key is uuid.UUID:
            schema["propertyNames"] = {"format": "uuid"}
        elif isinstance(key, type) and issubclass(key, enum.Enum):
            names = [m.value if type(m.value) is str else str(m.value) for m in key]
            schema["propertyNames"] = {"enum": names}
        elif key is not str:
            raise TypeError(
                f"dict key type {describe_type(key)} has no JSON schema: tether's codec "
                "does not carry it"
            )
        return schema


def _encoded(value: Any, tp: Any) -> Any:
    """`value` as the codec writes it, or NO_DEFAULT when it cannot be written."""
    try:
        return orjson.loads(dumps(CONVERTER.unstructure(value, tp)))
    except Exception:  # a default of another type than declared; leave it undocumented
        return NO_DEFAULT


def _enum_schema(tp: type[enum.Enum]) -> dict[str, Any]:
    # Iterating the class gives the members the codec accepts: a Flag's
    # combinations (and aliases) are written as their value but refused when read.
    values = [member.value for member in tp]
    schema: dict[str, Any] = {}
    kinds = {_JSON_TYPES.get(type(value)) for value in values}
    if len(kinds) == 1 and None not in kinds:
        schema["type"] = kinds.pop()
    schema["enum"] = values
    doc = class_doc(tp)
    if doc:
        schema["description"] = doc
    return schema


# ---------------------------------------------------------------------------
# The document


#: (status, code, when) of every error the HTTP wire answers (DESIGN.md section 5).
_ERRORS: tuple[tuple[int, str, str], ...] = (
    (
        400,
        "bad-request",
        "Malformed JSON, or arguments that do not fit the signature "
        "(`details` names the parameter and the path of each bad field).",
    ),
    (401, "unauthorized", "The server's authorize hook refused the request."),
    (
        403,
        "incompatible-version",
        "The interface version in the path is not compatible with the one the server serves.",
    ),
    (404, "not-found", "Unknown interface or operation."),
    (413, "payload-too-large", "The body is over the server's limit."),
    (
        422,
        "application",
        "The operation raised an application exception registered as "
        "remote-capable; `name` is its registered name and `details` holds its fields.",
    ),
    (429, "too-many-requests", "The server is overloaded; retry after `Retry-After` seconds."),
    (
        500,
        "internal",
        "The operation raised any other exception; `name` is its type name "
        "(the traceback is in `details` only in development mode).",
    ),
    (
        503,
        "unavailable",
        "The server is shutting down or unavailable; retry after `Retry-After` seconds.",
    ),
    (
        504,
        "deadline-exceeded",
        "The deadline the client propagated (X-Timeout-Ms) passed while the server worked.",
    ),
)

_HEADERS: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    (
        "CorrelationId",
        "X-Correlation-ID",
        {"type": "string", "maxLength": 200},
        "The ActivityId of the user action this request belongs to; generated by the server "
        "when absent (from `traceparent` when that is sent), and always echoed back. Longer "
        "than 200 characters is a 400.",
    ),
    ("SessionId", "X-Session-Id", {"type": "string"}, "The client's session id."),
    ("ApplicationId", "X-Application-Id", {"type": "string"}, "The calling application."),
    (
        "ApplicationVersion",
        "X-Application-Version",
        {"type": "string"},
        "The calling application's version.",
    ),
    (
        "ProtocolVersion",
        "X-Protocol-Version",
        {"type": "integer", "const": PROTOCOL_VERSION},
        "The tether protocol version the client speaks; another one than the server's is a 403.",
    ),
    (
        "TimeoutMs",
        "X-Timeout-Ms",
        {"type": "integer", "minimum": 0},
        "Milliseconds left before the client's deadline; the server runs the operation "
        "under it and answers 504 when it passes. Anything but a whole number >= 0 is a 400.",
    ),
    (
        "Traceparent",
        "traceparent",
        {"type": "string"},
        "W3C Trace Context, so that an OpenTelemetry trace and the ActivityId line up. "
        "The impl reads it as `current_context().traceparent`; an invalid value is ignored.",
    ),
    (
        "Baggage",
        "baggage",
        {"type": "string", "maxLength": 8192},
        "W3C Baggage: the request's metadata as `key=value` members separated by commas, "
        "values percent-encoded; the impl reads them as `current_context().metadata`. A "
        "malformed member is skipped; more than 64 entries, a value over 1024 bytes or a "
        "header over 8192 bytes is a 400.",
    ),
)

_SECURITY_SCHEME = "authorization"

_DESCRIBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["protocol", "interfaces"],
    "properties": {
        "protocol": {"type": "integer"},
        "interfaces": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["version", "operations"],
                "properties": {
                    "version": {"type": "string"},
                    "operations": {"type": "array", "items": {"type": "string"}},
                    "streams": {
                        "type": "object",
                        "description": "The stream operations (others are unary): "
                        "operation -> `server`, `client` or `two-way` (not carried over "
                        "HTTP: 404).",
                        "additionalProperties": {"enum": ["server", "client", "two-way"]},
                    },
                    "policies": {
                        "type": "object",
                        "description": "The operations that declare a policy: operation -> "
                        "its policy (also each operation's `x-tether-policy`).",
                        "additionalProperties": POLICY_SCHEMA,
                    },
                },
            },
        },
        "ipc": {
            "type": "object",
            "required": ["channels"],
            "properties": {
                "channels": {
                    "type": "object",
                    "description": "channel name -> version",
                    "additionalProperties": {"type": "string"},
                }
            },
        },
    },
}

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error answer: what went wrong, and the ActivityId it happened in.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "status", "name", "message", "details", "activity_id"],
            "properties": {
                "code": {
                    "type": "string",
                    "description": "What kind of error: "
                    + ", ".join(code for _, code, _ in _ERRORS)
                    + ".",
                },
                "status": {"type": "integer", "description": "The HTTP status, repeated."},
                "name": {
                    "type": "string",
                    "description": "The error class, or the application exception's "
                    "registered name.",
                },
                "message": {"type": "string"},
                "details": {
                    "type": "object",
                    "description": "Structured facts about the error, for programs.",
                },
                "activity_id": {"type": ["string", "null"]},
            },
        }
    },
}


def openapi_document(
    manager: RpcManager,
    *,
    prefix: str = "/rpc",
    title: str = "tether backend",
    version: str = "0",
) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of what `manager` serves over HTTP.

    Each operation of each registered interface is
    `POST {prefix}/{interface_name}/{interface_version}/{operation}`, whose body
    is the JSON array of its positional arguments; a cacheable one is a `GET`
    of the same path too, with that array in its `args` query parameter; an
    operation with a policy carries it as `x-tether-policy`. The document also has
    `GET {prefix}/`, `{prefix}/health` and `{prefix}/openapi.json`.

    Args:
        manager: The manager whose registered impls are served.
        prefix: The path the HTTP app is mounted at (`""` for the root).
        title: `info.title`.
        version: `info.version`: the version of the document, not of tether.

    Returns:
        The document as JSON values, ready for `orjson.dumps`.

    Raises:
        TypeError: an operation uses a type the codec does not carry (which an
            interface's own checks rule out).
    """
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    components: dict[str, Any] = {
        "schemas": {"Error": copy.deepcopy(_ERROR_SCHEMA)},
        "parameters": {
            key: {
                "name": header,
                "in": "header",
                "required": False,
                "schema": schema,
                "description": description,
            }
            for key, header, schema, description in _HEADERS
        },
        "headers": {
            "CorrelationId": {
                "description": "The request's ActivityId (the one sent, or a new one).",
                "schema": {"type": "string"},
            },
            "RetryAfter": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer", "minimum": 0},
            },
        },
        "responses": {},
        "securitySchemes": {
            _SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "The Authorization header is not checked by tether itself: "
                "the server passes it on, as RequestContext.authorization, to its "
                "authorize hook, which accepts or refuses the request (401). Any scheme "
                "the hook understands can be used.",
            }
        },
    }
    schemas = _Schemas(components)
    schemas.names[_ErrorName] = "Error"
    correlation: dict[str, Any] = {
        "X-Correlation-ID": {"$ref": "#/components/headers/CorrelationId"}
    }
    error_responses: dict[str, Any] = {}
    for status, code, when in _ERRORS:
        key = f"Error{status}"
        headers: dict[str, Any] = dict(correlation)
        if status in (429, 503):
            headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
        elif status == 401:
            headers["WWW-Authenticate"] = {
                "description": "`Bearer`",
                "schema": {"type": "string"},
            }
        components["responses"][key] = {
            "description": f"`{code}`: {when}",
            "headers": headers,
            "content": {"application/json": {"schema": {"$ref": _SCHEMAS_REF + "Error"}}},
        }
        error_responses[str(status)] = {"$ref": f"#/components/responses/{key}"}

    paths: dict[str, Any] = {}
    tags: list[dict[str, Any]] = []
    operation_ids: set[str] = set()
    served = manager.describe()
    for name, info in served.items():
        registration = manager.lookup(name)
        if registration is None:  # unregistered while we were looking
            continue
        tag: dict[str, Any] = {"name": name}
        doc = class_doc(registration.interface)
        tag["description"] = (
            f"{doc}\n\nVersion {info.version}." if doc else f"Version {info.version}."
        )
        tags.append(tag)
        for op_name, op in registration.operations.items():
            operation_id = f"{name}.{op_name}"
            # Dotted interface names could make two ids equal ("a.b"+"c", "a"+"b.c").
            unique, n = operation_id, 2
            while unique in operation_ids:
                unique, n = f"{operation_id}-{n}", n + 1
            operation_ids.add(unique)
            path = f"{prefix}/{_segment(name)}/{_segment(info.version)}/{_segment(op_name)}"
            if stream_kind(op) == "two-way":
                post = two_way_operation(unique, name, error_responses["404"])
            else:
                post = _operation(op, unique, name, schemas, correlation, error_responses)
            paths[path] = {"post": with_policy(post, op)}
            if op.policy.cache is not None:
                get_id, n = f"{unique}.get", 2
                while get_id in operation_ids:
                    get_id, n = f"{unique}.get-{n}", n + 1
                operation_ids.add(get_id)
                paths[path]["get"] = cached_get(op, post, get_id)

    interfaces_example = {name: info.to_json() for name, info in served.items()}
    paths[f"{prefix}/"] = {
        "get": {
            "operationId": "describe",
            "tags": ["tether"],
            "summary": "What this server serves",
            "description": "The tether protocol version, and an object of interface name -> "
            "its version and the names of its operations (clients compare it with theirs "
            "when they connect); `ipc` lists the IPC channels when the server serves IPC.",
            "responses": {
                "200": {
                    "description": "The served interfaces.",
                    "content": {
                        "application/json": {
                            "schema": copy.deepcopy(_DESCRIBE_SCHEMA),
                            "examples": {
                                "served": {
                                    "value": {
                                        "protocol": PROTOCOL_VERSION,
                                        "interfaces": interfaces_example,
                                    }
                                }
                            },
                        }
                    },
                }
            },
        }
    }
    health_body = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"enum": ["ok", "shutting-down"]}},
    }
    paths[f"{prefix}/health"] = {
        "get": {
            "operationId": "health",
            "tags": ["tether"],
            "summary": "Liveness",
            "responses": {
                "200": {
                    "description": 'The server is live: `{"status": "ok"}`.',
                    "content": {"application/json": {"schema": health_body}},
                },
                "503": {
                    "description": 'The server is shutting down: `{"status": "shutting-down"}`.',
                    "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
                    "content": {"application/json": {"schema": health_body}},
                },
            },
        }
    }
    paths[f"{prefix}/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "tags": ["tether"],
            "summary": "This document",
            "responses": {
                "200": {
                    "description": "The OpenAPI 3.1 document of this server.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    tags.append({"name": "tether", "description": "What every tether HTTP server answers."})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Generated by tether from the RpcInterfaces this server serves. "
            "Each operation is a POST whose body is the JSON array of its positional "
            "arguments; trailing arguments with defaults may be left out. A cacheable "
            "operation (see `x-tether-policy`) is also a GET with that array, "
            "percent-encoded, in its `args` query parameter. Numbers are "
            "finite (JSON has no inf or nan), integers are within [-2**63, 2**64-1], and "
            f"an argument or result nests at most {MAX_DEPTH} arrays and objects deep: "
            "anything else is refused with a 400.",
        },
        "tags": tags,
        "paths": paths,
        "components": components,
    }


class _ErrorName:
    """Stands for the Error schema, so that no class named Error can take its name."""


def _segment(text: str) -> str:
    # Everything a path segment may hold unescaped stays; "{" and "}" do not.
    return quote(text, safe="!$&'()*+,;=:@")


def _operation(
    op: Operation,
    operation_id: str,
    interface_name: str,
    schemas: _Schemas,
    correlation: dict[str, Any],
    error_responses: dict[str, Any],
) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    parameters = list(op.signature.parameters.values())[1:]  # drop self
    for index, (param, tp) in enumerate(zip(parameters, op.param_types, strict=True)):
        if index == op.stream_param:
            # Its items follow the arguments, which hold null in its place.
            item = {"type": "null", "title": param.name}
            items.append(item)
            continue
        item = {**schemas.of(tp), "title": param.name}
        if param.default is not param.empty:
            encoded = _encoded(param.default, tp)
            if encoded is not NO_DEFAULT:
                item["default"] = encoded
        items.append(item)
    listed = ", ".join(
        f"{name}: {describe_type(tp)}"
        for name, tp in zip(op.param_names, op.param_types, strict=True)
    )
    body: dict[str, Any] = {"type": "array", "minItems": op.required, "maxItems": len(items)}
    if items:
        # An empty prefixItems is not valid JSON Schema (2020-12 wants one or more).
        body["prefixItems"] = items
        body["items"] = False
    out: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [interface_name],
    }
    doc = inspect.getdoc(op.function)
    if doc:
        summary, _, rest = doc.partition("\n")
        out["summary"] = summary.strip()
        if rest.strip():
            out["description"] = doc
    out["parameters"] = [{"$ref": f"#/components/parameters/{key}"} for key, *_ in _HEADERS]
    out["security"] = [{_SECURITY_SCHEME: []}, {}]
    out["requestBody"] = {
        "required": True,
        "description": f"The arguments, in order: [{listed}]" if listed else "No arguments: []",
        "content": {"application/json": {"schema": body}},
    }
    if op.stream_param is not None:
        out["requestBody"] = stream_request_body(op, body, schemas.of)
    ok = {
        "description": f"The result: {describe_type(op.return_type)}.",
        "headers": correlation,
        "content": {"application/json": {"schema": schemas.of(op.return_type)}},
    }
    if op.stream_result:
        ok = stream_responses(op, schemas.of, correlation)
    out["responses"] = {"200": ok, **error_responses}
    return out
