# mypy: disable-error-code="empty-body"
"""tether.otel on RPC streams: each message is a `message` event on both spans (issue 17.4).

Over a real WebSocket server on 127.0.0.1, port 0, exported with the SDK's
in-memory exporter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import tether
import tether.otel
from tether.transports import websocket

TIMEOUT = 20.0


class Numbers(tether.RpcInterface):
    interface_name = "otel.Numbers"
    interface_version = "1.0.0"

    def count(self, n: int) -> tether.Stream[int]: ...
    def scale(self, factor: int, values: tether.Stream[int]) -> tether.Stream[int]: ...


class NumbersImpl(Numbers):
    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    async def scale(self, factor: int, values: tether.Stream[int]) -> AsyncIterator[int]:
        async for value in values:
            yield value * factor


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tether.otel.instrument(tracer_provider=tracer_provider):
        yield exporter
    tracer_provider.shutdown()


def messages(span: ReadableSpan) -> list[tuple[str, int]]:
    found = []
    for event in span.events:
        assert event.name == "message"
        assert event.attributes is not None
        found.append((str(event.attributes["message.type"]), int(event.attributes["message.id"])))  # type: ignore[arg-type]
    return found


async def test_stream_messages_are_events_on_the_client_and_server_spans(
    exporter: InMemorySpanExporter,
) -> None:
    manager = tether.RpcManager()
    manager.register_impl(Numbers, NumbersImpl())

    async def three() -> AsyncIterator[int]:
        for value in (1, 2, 3):
            yield value

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(websocket.serve, manager)
            async with websocket.connect(url, interfaces=[Numbers]) as backend:
                numbers = backend.get_client(Numbers)
                async with tether.open_stream(numbers.count(3)) as items:
                    assert [item async for item in items] == [0, 1, 2]
                async with tether.open_stream(numbers.scale(10, three())) as items:
                    assert [item async for item in items] == [10, 20, 30]
            nursery.cancel_scope.cancel()

    spans = {(span.name, span.kind): span for span in exporter.get_finished_spans()}
    assert set(spans) == {
        (f"otel.Numbers/{op}", kind)
        for op in ("count", "scale")
        for kind in (SpanKind.CLIENT, SpanKind.SERVER)
    }
    received = [("RECEIVED", n) for n in (1, 2, 3)]
    sent = [("SENT", n) for n in (1, 2, 3)]
    assert messages(spans["otel.Numbers/count", SpanKind.CLIENT]) == received
    assert messages(spans["otel.Numbers/count", SpanKind.SERVER]) == sent
    # Both ways: the order of the two directions depends on scheduling, each counts on its own.
    client_scale = messages(spans["otel.Numbers/scale", SpanKind.CLIENT])
    server_scale = messages(spans["otel.Numbers/scale", SpanKind.SERVER])
    for found in (client_scale, server_scale):
        assert sorted(found) == sorted(received + sent)
        assert [m for m in found if m[0] == "SENT"] == sent
        assert [m for m in found if m[0] == "RECEIVED"] == received
    count_client = spans["otel.Numbers/count", SpanKind.CLIENT]
    count_server = spans["otel.Numbers/count", SpanKind.SERVER]
    assert count_server.parent is not None
    assert count_client.context is not None
    assert count_server.parent.span_id == count_client.context.span_id
    assert count_client.attributes is not None
    assert count_client.attributes["rpc.tether.stream"] == "server"
    scale_server = spans["otel.Numbers/scale", SpanKind.SERVER]
    assert scale_server.attributes is not None
    assert scale_server.attributes["rpc.tether.stream"] == "bidi"
