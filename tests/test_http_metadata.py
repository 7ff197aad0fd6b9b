"""Metadata and traceparent on the HTTP wire: the W3C `baggage` and `traceparent` headers.

Raw requests go through httpx, an independent client, to real hypercorn on
127.0.0.1; the client side is checked by recording what tether's client sends.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import trio
from test_http import raw_client, served_asgi

from tether import RpcManager, contexts
from tether.testing._rpc_metadata_suite import ConformanceMetadata, MetadataImpl
from tether.transports import http
from tether.transports.http import HttpApp

TIMEOUT = 10.0
SEEN = "/tether.conformance.Metadata/1.0.0/seen"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def metadata_manager() -> RpcManager:
    manager = RpcManager()
    manager.register_impl(ConformanceMetadata, MetadataImpl(manager))
    return manager


async def seen_with(headers: list[tuple[str, str]], **options: Any) -> Any:
    with trio.fail_after(TIMEOUT):
        async with raw_client(metadata_manager(), **options) as client:
            return await client.post(SEEN, content=b"[]", headers=headers)


async def test_baggage_becomes_the_impls_metadata_skipping_malformed_members() -> None:
    response = await seen_with(
        [
            ("baggage", "tenant=acme, user = u%201 ;prop=1,no-equals-sign,bad key=x"),
            # A second line adds to the first; a later member wins.
            ("baggage", "region=eu,tenant=beta,odd=%C3%A9%2C%3B,broken=%FF"),
        ]
    )
    assert response.status_code == 200
    assert response.json()["metadata"] == {
        "tenant": "beta",
        "user": "u 1",
        "region": "eu",
        "odd": "é,;",
    }


async def test_baggage_over_a_limit_is_400_naming_the_limit() -> None:
    too_many = ",".join(f"k{i}=v" for i in range(contexts.MAX_METADATA_ENTRIES + 1))
    too_long = "big=" + "v" * (contexts.MAX_METADATA_VALUE_BYTES + 1)
    too_big = "x=" + "v" * contexts.MAX_METADATA_BYTES
    for baggage, limit in [
        (too_many, "MAX_METADATA_ENTRIES"),
        (too_long, "MAX_METADATA_VALUE_BYTES"),
        (too_big, "MAX_METADATA_BYTES"),
    ]:
        response = await seen_with([("baggage", baggage)])
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "bad-request"
        assert error["details"] == {"field": "baggage"}
        assert limit in error["message"]
        assert error["message"].startswith("the baggage header")


async def test_traceparent_header_is_the_impls_and_an_invalid_one_is_ignored() -> None:
    valid = await seen_with([("traceparent", TRACEPARENT)])
    invalid = await seen_with([("traceparent", "00-nope-01")])
    assert valid.json()["traceparent"] == TRACEPARENT
    assert invalid.json()["traceparent"] is None


async def test_cors_preflight_allows_the_baggage_header() -> None:
    headers = [
        ("Origin", "http://app.example"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "baggage, traceparent"),
    ]
    with trio.fail_after(TIMEOUT):
        async with raw_client(metadata_manager(), cors_origins=["http://app.example"]) as client:
            response = await client.options(SEEN, headers=headers)
    assert response.status_code == 204
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"baggage", "traceparent"} <= allowed


async def test_client_sends_percent_encoded_baggage_and_the_contexts_traceparent() -> None:
    seen: list[dict[bytes, bytes]] = []
    app = HttpApp(metadata_manager())

    async def recording(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            seen.append(dict(scope["headers"]))
        await app(scope, receive, send)

    with trio.fail_after(TIMEOUT):
        async with (
            served_asgi(recording) as origin,
            http.connect(f"{origin}/rpc", interfaces=[ConformanceMetadata]) as backend,
        ):
            client = backend.get_client(ConformanceMetadata)
            with contexts.activity(traceparent=TRACEPARENT, metadata={"tenant": "a b,c;é"}):
                await client.seen()
            await client.seen()
    with_context, without = seen
    assert with_context[b"baggage"] == b"tenant=a%20b%2Cc%3B%C3%A9"
    assert with_context[b"traceparent"] == TRACEPARENT.encode()
    # No metadata: no baggage header; the traceparent is derived as before.
    assert b"baggage" not in without
    assert without[b"traceparent"] != TRACEPARENT.encode()
