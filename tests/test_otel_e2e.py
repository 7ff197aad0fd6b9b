# mypy: disable-error-code="empty-body"
"""tether.otel through real transports: one trace across HTTP, WebSocket and in-process.

frontend -> A (HTTP, `http.serve`) -> B (WebSocket, `websocket.serve`) -> C (in-process
memory), each hop an impl calling the next, exported with the SDK's in-memory exporter
(issue 17.4). Real servers on 127.0.0.1, port 0.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import tether
import tether.otel
from tests.otel_support import Recorded, instrumented
from tether.transports import http, memory, websocket

TIMEOUT = 20.0


@tether.remote_error(name="tests.otel_e2e.OutOfStock")
class OutOfStock(Exception):
    pass


class ShopA(tether.RpcInterface):
    interface_name = "otel.ShopA"
    interface_version = "1.0.0"

    async def buy(self, item: str) -> str: ...


class ShopB(tether.RpcInterface):
    interface_name = "otel.ShopB"
    interface_version = "1.0.0"

    async def buy(self, item: str) -> str: ...


class ShopC(tether.RpcInterface):
    interface_name = "otel.ShopC"
    interface_version = "1.0.0"

    async def buy(self, item: str) -> str: ...


class ShopCImpl(ShopC):
    def __init__(self) -> None:
        self.activity_ids: list[str] = []

    async def buy(self, item: str) -> str:
        context = tether.current_context()
        assert context is not None
        self.activity_ids.append(context.activity_id)
        if item == "nothing":
            raise OutOfStock(f"no {item} left")
        return f"{item} from C"


class ShopBImpl(ShopB):
    def __init__(self, to_c: tether.RpcBackend) -> None:
        self.to_c = to_c

    async def buy(self, item: str) -> str:
        return await self.to_c.get_client(ShopC).buy(item)


class ShopAImpl(ShopA):
    def __init__(self, to_b: Any) -> None:
        self.to_b = to_b

    async def buy(self, item: str) -> str:
        return await self.to_b.get_client(ShopB).buy(item)


Otel = Recorded


@pytest.fixture
def otel() -> Iterator[Otel]:
    with instrumented() as recorded:
        yield recorded


@asynccontextmanager
async def chain() -> AsyncIterator[tuple[tether.RpcBackend, ShopCImpl, str, str]]:
    """The frontend's connection to A, C's impl, and A's and B's URLs."""
    c_impl = ShopCImpl()
    c_manager = tether.RpcManager()
    c_manager.register_impl(ShopC, c_impl)
    async with (
        trio.open_nursery() as nursery,
        memory.connect(c_manager, interfaces=[ShopC]) as to_c,
    ):
        b_manager = tether.RpcManager()
        b_manager.register_impl(ShopB, ShopBImpl(to_c))
        b_url = await nursery.start(websocket.serve, b_manager)
        async with websocket.connect(b_url, interfaces=[ShopB]) as to_b:
            a_manager = tether.RpcManager()
            a_manager.register_impl(ShopA, ShopAImpl(to_b))
            a_url = await nursery.start(http.serve, a_manager)
            async with http.connect(a_url, interfaces=[ShopA]) as to_a:
                yield to_a, c_impl, a_url, b_url
        nursery.cancel_scope.cancel()


def by_name_and_kind(spans: list[ReadableSpan]) -> dict[tuple[str, SpanKind], ReadableSpan]:
    found = {(span.name, span.kind): span for span in spans}
    assert len(found) == len(spans), [(s.name, s.kind) for s in spans]
    return found


def uuid_form(trace_id: int) -> str:
    h = f"{trace_id:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


EXPECTED_CHAIN = [
    ("otel.ShopA/buy", SpanKind.CLIENT),  # the frontend
    ("otel.ShopA/buy", SpanKind.SERVER),  # A, over HTTP
    ("otel.ShopB/buy", SpanKind.CLIENT),  # A's impl
    ("otel.ShopB/buy", SpanKind.SERVER),  # B, over WebSocket
    ("otel.ShopC/buy", SpanKind.CLIENT),  # B's impl
    ("otel.ShopC/buy", SpanKind.SERVER),  # C, in-process
]


async def test_a_chain_over_http_websocket_and_memory_is_one_trace(otel: Otel) -> None:
    with trio.fail_after(TIMEOUT):
        async with chain() as (to_a, c_impl, a_url, b_url):
            assert await to_a.get_client(ShopA).buy("tea") == "tea from C"

    spans = by_name_and_kind(otel.spans())
    assert set(spans) == set(EXPECTED_CHAIN)
    ordered = [spans[key] for key in EXPECTED_CHAIN]
    frontend = ordered[0]
    assert frontend.parent is None
    assert frontend.context is not None
    trace_id = frontend.context.trace_id
    for parent, child in itertools.pairwise(ordered):
        assert child.context is not None
        assert child.context.trace_id == trace_id, child.name
        assert child.parent is not None, child.name
        assert parent.context is not None
        assert child.parent.span_id == parent.context.span_id, (child.name, child.kind)
    # The ActivityId of the user action is the trace id, on every tier.
    assert c_impl.activity_ids == [uuid_form(trace_id)]
    for span in ordered:
        assert span.attributes is not None
        assert span.attributes["rpc.tether.activity_id"] == uuid_form(trace_id)
        assert span.attributes["rpc.system"] == "tether"
        assert span.attributes["rpc.tether.status_code"] == "ok"
        assert span.status.status_code is StatusCode.UNSET
    a_port = int(a_url.split(":")[2].split("/")[0])
    b_port = int(b_url.split(":")[2].split("/")[0])
    assert frontend.attributes is not None
    assert frontend.attributes["rpc.service"] == "otel.ShopA"
    assert frontend.attributes["rpc.method"] == "buy"
    assert frontend.attributes["server.address"] == "127.0.0.1"
    assert frontend.attributes["server.port"] == a_port
    b_client = ordered[2]
    assert b_client.attributes is not None
    assert b_client.attributes["server.port"] == b_port

    # Metrics: one call of each on each side, none left in flight.
    durations = {
        (side, point.attributes["rpc.service"]): point
        for side in ("client", "server")
        for point in otel.metric_points(f"rpc.{side}.duration")
    }
    assert sorted(durations) == sorted(
        (side, f"otel.Shop{x}") for side in ("client", "server") for x in "ABC"
    )
    assert all(point.count == 1 for point in durations.values())
    assert all(point.sum > 0 for point in durations.values())
    for side in ("client", "server"):
        assert {p.value for p in otel.metric_points(f"rpc.{side}.active_requests")} == {0}


async def test_an_application_error_in_c_marks_every_span_of_the_chain(otel: Otel) -> None:
    with trio.fail_after(TIMEOUT):
        async with chain() as (to_a, _c_impl, _a_url, _b_url):
            with pytest.raises(OutOfStock, match="no nothing left"):
                await to_a.get_client(ShopA).buy("nothing")

    spans = by_name_and_kind(otel.spans())
    assert set(spans) == set(EXPECTED_CHAIN)
    for key in EXPECTED_CHAIN:
        span = spans[key]
        assert span.attributes is not None
        assert span.attributes["rpc.tether.status_code"] == "application", key
        assert span.attributes["error.type"] == "application"
        assert span.status.status_code is StatusCode.ERROR, key
    (c_server,) = [spans[("otel.ShopC/buy", SpanKind.SERVER)]]
    (exception,) = c_server.events
    assert exception.name == "exception"
    assert exception.attributes is not None
    assert exception.attributes["exception.message"] == "no nothing left"
    for point in otel.metric_points("rpc.server.duration"):
        assert point.attributes["rpc.tether.status_code"] == "application"
