"""The OpenAPI of operation policies: `x-tether-policy`, and the GET of a cacheable operation.

Every operation that declares a policy carries it as `x-tether-policy`, the
same object as in `GET {prefix}/` (`OperationPolicy.to_json()`). A cacheable
operation's path has a `get` besides its `post`: the same call, its
arguments in the `args` query parameter (docs/http.md, "Cached reads").
"""

from __future__ import annotations

import copy
from typing import Any

from ...runtime import Operation
from ._cache import MAX_GET_TARGET

__all__ = ["POLICY_SCHEMA", "cached_get", "with_policy"]

#: The schema of one operation's policy, as `GET {prefix}/` describes it.
POLICY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "idempotent": {"const": True},
        "cache": {
            "type": "object",
            "required": ["max_age"],
            "properties": {"max_age": {"type": "number"}, "immutable": {"const": True}},
        },
        "long_running": {
            "type": "object",
            "properties": {
                "poll_interval": {"type": "number"},
                "ready_within": {"type": "number"},
                "keep_result": {"type": "number"},
            },
        },
    },
}

_CACHE_HEADERS: dict[str, Any] = {
    "Cache-Control": {
        "description": "`public, max-age=N` (the declared max-age, whole seconds), or "
        "`public, max-age=31536000, immutable`; `private` instead of `public` when the "
        "request carried Authorization.",
        "schema": {"type": "string"},
    },
    "ETag": {
        "description": "A strong validator of the body: send it back in If-None-Match.",
        "schema": {"type": "string"},
    },
    "Vary": {"description": "`Authorization, baggage`.", "schema": {"type": "string"}},
}


def with_policy(out: dict[str, Any], op: Operation) -> dict[str, Any]:
    """`out` (an operation object) with `x-tether-policy` when `op` declares a policy."""
    policy = op.policy.to_json()
    if policy:
        out["x-tether-policy"] = policy
    return out


def cached_get(op: Operation, post: dict[str, Any], operation_id: str) -> dict[str, Any]:
    """The `get` of a cacheable operation, made from its `post` (not a stream's).

    Args:
        op: The operation (`op.policy.cache` is set).
        post: Its POST operation object, whose JSON body schema the query's
            `args` takes.
        operation_id: A unique `operationId` for the GET.
    """
    cache = op.policy.cache
    assert cache is not None
    body = post["requestBody"]["content"]["application/json"]["schema"]
    get = {key: copy.deepcopy(value) for key, value in post.items() if key != "requestBody"}
    get["operationId"] = operation_id
    lifetime = (
        "never changes for given arguments (cached a year, `immutable`)"
        if cache.immutable
        else f"may be reused for {cache.max_age:g} s"
    )
    get["description"] = (
        f"{post.get('description') or post.get('summary') or ''}\n\n"
        f"Cacheable: the result {lifetime}. The same call as the POST, its arguments "
        "in the `args` query parameter; a URL longer than "
        f"{MAX_GET_TARGET} bytes is sent as the POST instead."
    ).lstrip()
    get["parameters"] = [
        {
            "name": "args",
            "in": "query",
            "required": op.required > 0,
            "description": "The JSON array of the arguments (the POST's body), "
            'percent-encoded: `?args=%5B%22m1%22%2C10%5D` is `["m1",10]`.',
            "content": {"application/json": {"schema": copy.deepcopy(body)}},
        },
        *get["parameters"],
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "An ETag from an earlier answer: 304 if the result is the same.",
            "schema": {"type": "string"},
        },
    ]
    responses = get["responses"]
    ok = responses["200"]
    ok["headers"] = {**ok.get("headers", {}), **copy.deepcopy(_CACHE_HEADERS)}
    responses["304"] = {
        "description": "Not Modified: the result's ETag is in If-None-Match (the call ran).",
        "headers": copy.deepcopy(_CACHE_HEADERS),
    }
    return get
