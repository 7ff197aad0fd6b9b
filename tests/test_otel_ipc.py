# mypy: disable-error-code="empty-body"
"""tether.otel on IPC: a session invoke and the notification its handler sends back (issue 17.4).

Over the in-process transport and a real WebSocket server on 127.0.0.1, port 0,
exported with the SDK's in-memory exporter.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio
from opentelemetry.trace import SpanKind, StatusCode

import tether
import tether.otel
from tests.otel_support import Recorded, instrumented
from tether.transports import memory, websocket

TIMEOUT = 20.0


class EditorIpc(tether.IpcInterface):
    channel_name = "otel-editor"
    version = "1.0.0"

    async def move(self, element_id: str, dx: float) -> float: ...


class EditorEvents(tether.NotificationInterface):
    channel_name = "otel-editor-events"

    async def moved(self, element_id: str, x: float) -> None: ...


class EditorHandler(tether.IpcHandler, EditorIpc):
    async def move(self, element_id: str, dx: float) -> float:
        if dx < 0:
            raise tether.InvalidRequest("dx must not be negative")
        await tether.current_session().notifier(EditorEvents).moved(element_id, dx)
        return dx


Otel = Recorded


@pytest.fixture
def otel() -> Iterator[Otel]:
    with instrumented() as recorded:
        yield recorded


@asynccontextmanager
async def frontend_of(transport: str) -> AsyncIterator[tether.FrontendIpc]:
    backend = tether.BackendIpc()
    backend.register(EditorHandler)
    if transport == "memory":
        async with memory.connect_ipc(backend) as frontend:
            yield frontend
        return
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(websocket.serve, ipc=backend))
        async with websocket.connect_ipc(url) as frontend:
            yield frontend
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("transport", ["memory", "websocket"])
async def test_an_invoke_and_the_notification_it_sends_are_traced(
    otel: Otel, transport: str
) -> None:
    received = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with frontend_of(transport) as frontend:
            frontend.add_listener("otel-editor-events", lambda method, *args: received.set())
            assert await frontend.proxy(EditorIpc).move("e1", 2.0) == 2.0
            await received.wait()

    spans = {(span.name, span.kind): span for span in otel.spans()}
    assert set(spans) == {
        ("otel-editor/move", SpanKind.CLIENT),
        ("otel-editor/move", SpanKind.SERVER),
        ("otel-editor-events/moved", SpanKind.PRODUCER),
        ("otel-editor-events/moved", SpanKind.CONSUMER),
    }
    client = spans["otel-editor/move", SpanKind.CLIENT]
    server = spans["otel-editor/move", SpanKind.SERVER]
    producer = spans["otel-editor-events/moved", SpanKind.PRODUCER]
    consumer = spans["otel-editor-events/moved", SpanKind.CONSUMER]
    assert client.context is not None
    assert server.context is not None
    # The invoke carries the frontend's traceparent; the handler's notification is
    # sent inside the server span.
    assert server.parent is not None
    assert server.parent.span_id == client.context.span_id
    assert producer.parent is not None
    assert producer.parent.span_id == server.context.span_id
    activity_id = client.attributes["rpc.tether.activity_id"] if client.attributes else None
    h = f"{client.context.trace_id:032x}"
    assert activity_id == f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    for span in (server, producer, consumer):
        assert span.attributes is not None
        assert span.attributes["rpc.tether.activity_id"] == activity_id, span.kind
        assert span.attributes["rpc.tether.kind"] == "ipc"
        assert span.attributes["rpc.system"] == "tether"
    assert consumer.attributes is not None
    assert consumer.attributes["rpc.tether.notification"] is True
    assert consumer.attributes["rpc.service"] == "otel-editor-events"
    assert consumer.attributes["rpc.method"] == "moved"

    services = {
        (side, point.attributes["rpc.service"])
        for side in ("client", "server")
        for point in otel.metric_points(f"rpc.{side}.duration")
    }
    assert services == {
        (side, channel)
        for side in ("client", "server")
        for channel in ("otel-editor", "otel-editor-events")
    }


async def test_a_refused_invoke_is_an_error_on_the_client_only(otel: Otel) -> None:
    with trio.fail_after(TIMEOUT):
        async with frontend_of("memory") as frontend:
            with pytest.raises(tether.InvalidRequest, match="must not be negative"):
                await frontend.proxy(EditorIpc).move("e1", -1.0)
    spans = {span.kind: span for span in otel.spans()}
    assert set(spans) == {SpanKind.CLIENT, SpanKind.SERVER}
    for span in spans.values():
        assert span.attributes is not None
        assert span.attributes["rpc.tether.status_code"] == "bad-request"
    assert spans[SpanKind.CLIENT].status.status_code is StatusCode.ERROR
    assert spans[SpanKind.SERVER].status.status_code is StatusCode.UNSET
