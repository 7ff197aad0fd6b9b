"""No credential in a span: the issue's rule holds with tether.otel instrumented.

A call with a connection credential and one with a credential forwarded from the
caller's context, one answered and one refused by the server's authorize hook, over
HTTP and WebSocket (where the credential travels in a header and in `ctx`): the
secret appears in no span's name, attributes, events or status.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tether
import tether.otel
from tests.otel_support import instrumented
from tether.transports import http, websocket

SECRET = "Bearer s3cr3t-otel-token"
FORWARDED = "Bearer f0rwarded-otel-token"


class Vault(tether.RpcInterface):
    interface_name = "test.Vault"
    interface_version = "1.0.0"

    async def open(self, door: str) -> str: ...


class VaultImpl(Vault):
    async def open(self, door: str) -> str:
        return f"opened {door}"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    with instrumented() as recorded:
        yield recorded.exporter


def _everything(span: Any) -> str:
    parts = [span.name, repr(dict(span.attributes or {})), str(span.status.description)]
    for event in span.events:
        parts += [event.name, repr(dict(event.attributes or {}))]
    return "\n".join(parts)


@pytest.mark.parametrize("transport", ["http", "websocket"])
async def test_no_credential_in_any_span(exporter: InMemorySpanExporter, transport: str) -> None:
    async def authorize(context: tether.RequestContext) -> bool:
        return context.authorization == SECRET

    manager = tether.RpcManager(authorize=authorize)
    manager.register_impl(Vault, VaultImpl)
    serve, connect = (
        (http.serve, http.connect)
        if transport == "http"
        else (
            websocket.serve,
            websocket.connect,
        )
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve, manager)
            async with connect(url, interfaces=[Vault], authorization=SECRET, retry=None) as ok:
                assert await ok.get_client(Vault).open("front") == "opened front"
            async with connect(url, interfaces=[Vault], retry=None) as other:
                with tether.activity(authorization=FORWARDED), pytest.raises(tether.Unauthorized):
                    await other.get_client(Vault).open("back")
            nursery.cancel_scope.cancel()
    spans = exporter.get_finished_spans()
    assert len(spans) >= 4  # a client and a server span for each call
    for span in spans:
        text = _everything(span)
        assert "s3cr3t" not in text
        assert "f0rwarded" not in text
