"""tether.otel, one layer: the interceptor's spans and metrics, on fake calls (issue 17.4).

The interceptor is driven with fake `CallInfo`s (the documented shape) and the
OpenTelemetry SDK's in-memory exporter and reader; tests/test_otel_e2e.py runs
it through real transports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any, Literal

import attrs
import pytest
import trio
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

import tether
import tether.otel
from tests.otel_support import Recorded, recording
from tether import contexts
from tether.otel._interceptor import OtelInterceptor


@tether.remote_error(name="tests.otel.OutOfStock")
class OutOfStock(Exception):
    pass


@attrs.frozen
class FakeContext:
    activity_id: str = attrs.field(factory=contexts.new_activity_id)
    traceparent: str | None = None


class FakeMessages:
    """`CallInfo.messages`: listeners told of each message."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[str, int], object]] = []

    def add_listener(self, listener: Callable[[str, int], object]) -> None:
        self.listeners.append(listener)

    def note(self, direction: str, index: int) -> None:
        for listener in self.listeners:
            listener(direction, index)


@attrs.frozen
class FakeCall:
    side: Literal["client", "server"]
    kind: Literal["rpc", "ipc"] = "rpc"
    interface: str = "Shop"
    version: str | None = "1.2.0"
    operation: str = "buy"
    args: tuple[Any, ...] = ()
    context: Any = attrs.field(factory=FakeContext)
    stream: Literal["server", "client", "bidi"] | None = None
    notification: bool = False
    peer: str | None = None
    messages: Any = None


@attrs.frozen
class Otel(Recorded):
    interceptor: OtelInterceptor


@pytest.fixture
def otel() -> Iterator[Otel]:
    with recording() as r:
        interceptor = OtelInterceptor(
            r.tracer_provider.get_tracer("test"), r.meter_provider.get_meter("test")
        )
        yield Otel(r.exporter, r.reader, r.tracer_provider, r.meter_provider, interceptor)


def uuid_form(trace_id: int) -> str:
    h = f"{trace_id:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Recorder:
    """The innermost `proceed`: keeps the call it was given and the span current then."""

    def __init__(self, outcome: Any = "done") -> None:
        self.outcome = outcome
        self.calls: list[Any] = []
        self.spans: list[trace.Span] = []

    async def __call__(self, call: Any) -> Any:
        self.calls.append(call)
        self.spans.append(trace.get_current_span())
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


async def test_client_span_follows_the_rpc_conventions_and_sends_its_traceparent(
    otel: Otel,
) -> None:
    proceed = Recorder()
    call = FakeCall(side="client", peer="http://127.0.0.1:8123/api")
    assert await otel.interceptor(call, proceed) == "done"  # type: ignore[arg-type]

    (span,) = otel.spans()
    assert span.name == "Shop/buy"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    sent = proceed.calls[0]
    assert span.context is not None
    assert dict(span.attributes or {}) == {
        "rpc.system": "tether",
        "rpc.service": "Shop",
        "rpc.method": "buy",
        "server.address": "127.0.0.1",
        "server.port": 8123,
        "rpc.tether.kind": "rpc",
        "rpc.tether.interface_version": "1.2.0",
        "rpc.tether.activity_id": sent.context.activity_id,
        "rpc.tether.status_code": "ok",
    }
    # The server's span will be this one's child, and the ActivityId is the trace id
    # (the call was made outside any activity, so its ActivityId was its own).
    trace_id, span_id = span.context.trace_id, span.context.span_id
    flags = int(span.context.trace_flags)
    assert flags & 1  # sampled
    assert sent.context.traceparent == f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
    assert sent.context.activity_id == uuid_form(trace_id)
    assert proceed.spans[0].get_span_context().span_id == span_id


async def test_a_client_call_inside_an_activity_keeps_its_activity_id(otel: Otel) -> None:
    proceed = Recorder()
    with contexts.activity("from-upstream"):
        await otel.interceptor(FakeCall("client", context=FakeContext("from-upstream")), proceed)  # type: ignore[arg-type]
    assert proceed.calls[0].context.activity_id == "from-upstream"
    (span,) = otel.spans()
    assert span.attributes is not None
    assert span.attributes["rpc.tether.activity_id"] == "from-upstream"


async def test_a_client_span_is_a_child_of_the_active_span(otel: Otel) -> None:
    proceed = Recorder()
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("user action") as user:
        await otel.interceptor(FakeCall("client"), proceed)  # type: ignore[arg-type]
    client = otel.spans()[0]
    assert client.parent is not None
    assert client.parent.span_id == user.get_span_context().span_id
    assert client.context is not None
    assert client.context.trace_id == user.get_span_context().trace_id


async def test_a_client_span_with_no_active_span_continues_the_contexts_traceparent(
    otel: Otel,
) -> None:
    outside = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    proceed = Recorder()
    with contexts.activity("a"):
        await otel.interceptor(  # type: ignore[arg-type]
            FakeCall("client", context=FakeContext("a", traceparent=outside)), proceed
        )
    (span,) = otel.spans()
    assert span.context is not None
    assert span.parent is not None
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert f"{span.parent.span_id:016x}" == "b7ad6b7169203331"
    assert proceed.calls[0].context.traceparent != outside  # now this span's


async def test_server_span_is_the_child_of_the_traceparent_and_current_for_the_impl(
    otel: Otel,
) -> None:
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    proceed = Recorder()
    call = FakeCall(
        "server",
        context=FakeContext("0af76519-16cd-43dd-8448-eb211c80319c", incoming),
        peer="127.0.0.1:50123",
    )
    await otel.interceptor(call, proceed)  # type: ignore[arg-type]
    (span,) = otel.spans()
    assert span.kind is SpanKind.SERVER
    assert span.context is not None
    assert span.parent is not None
    assert span.parent.is_remote
    assert f"{span.parent.span_id:016x}" == "b7ad6b7169203331"
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    # The impl runs with the server span current: its own calls are its children.
    assert proceed.spans[0].get_span_context().span_id == span.context.span_id
    assert proceed.calls[0] is call  # the server passes the call on unchanged
    assert span.attributes is not None
    assert span.attributes["network.peer.address"] == "127.0.0.1"
    assert span.attributes["network.peer.port"] == 50123
    assert "server.address" not in span.attributes


async def test_server_span_without_traceparent_is_a_root_whatever_is_current(
    otel: Otel,
) -> None:
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("the dispatching task's"):
        await otel.interceptor(FakeCall("server"), Recorder())  # type: ignore[arg-type]
    server = otel.spans()[0]
    assert server.kind is SpanKind.SERVER
    assert server.parent is None


@pytest.mark.parametrize(
    ("side", "error", "code", "status"),
    [
        ("client", tether.NotFound("no such shop"), "not-found", StatusCode.ERROR),
        ("client", OutOfStock("none left"), "application", StatusCode.ERROR),
        ("client", tether.Unavailable("restarting"), "unavailable", StatusCode.ERROR),
        # On a server, a caller's mistake is not the server's error (the conventions' rule).
        ("server", tether.InvalidRequest("bad args"), "bad-request", StatusCode.UNSET),
        ("server", tether.Unauthorized("who are you"), "unauthorized", StatusCode.UNSET),
        ("server", OutOfStock("none left"), "application", StatusCode.ERROR),
        ("server", ValueError("a bug"), "internal", StatusCode.ERROR),
        ("server", tether.DeadlineExceeded("too slow"), "deadline-exceeded", StatusCode.ERROR),
    ],
)
async def test_the_tether_error_code_sets_the_status(
    otel: Otel, side: Literal["client", "server"], error: Exception, code: str, status: StatusCode
) -> None:
    with pytest.raises(type(error)) as raised:
        await otel.interceptor(FakeCall(side), Recorder(error))  # type: ignore[arg-type]
    assert raised.value is error
    (span,) = otel.spans()
    assert span.attributes is not None
    assert span.attributes["rpc.tether.status_code"] == code
    assert span.status.status_code is status
    if status is StatusCode.ERROR:
        assert span.attributes["error.type"] == code
        assert span.status.description is not None
        assert str(error) in span.status.description
        assert [event.name for event in span.events] == ["exception"]
    else:
        assert "error.type" not in span.attributes
        assert span.events == ()
    (duration,) = otel.metric_points(f"rpc.{side}.duration")
    assert duration.attributes["rpc.tether.status_code"] == code


async def test_a_cancelled_call_is_not_an_error(otel: Otel) -> None:
    async def wait_forever(call: Any) -> None:
        await trio.sleep_forever()

    with trio.move_on_after(0):
        await otel.interceptor(FakeCall("client"), wait_forever)  # type: ignore[arg-type]
    (span,) = otel.spans()
    assert span.attributes is not None
    assert span.attributes["rpc.tether.status_code"] == "cancelled"
    assert span.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize("side", ["client", "server"])
async def test_stream_messages_are_span_events_numbered_from_1_each_way(
    otel: Otel, side: Literal["client", "server"]
) -> None:
    messages = FakeMessages()

    async def stream(call: Any) -> None:
        for direction, index in [("sent", 0), ("received", 0), ("received", 1), ("sent", 1)]:
            call.messages.note(direction, index)

    call = FakeCall(side, stream="bidi", messages=messages)
    await otel.interceptor(call, stream)  # type: ignore[arg-type]
    (span,) = otel.spans()
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
        ("message", {"message.type": "SENT", "message.id": 1}),
        ("message", {"message.type": "RECEIVED", "message.id": 1}),
        ("message", {"message.type": "RECEIVED", "message.id": 2}),
        ("message", {"message.type": "SENT", "message.id": 2}),
    ]
    assert span.attributes is not None
    assert span.attributes["rpc.tether.stream"] == "bidi"


@pytest.mark.parametrize(
    ("side", "kind"), [("client", SpanKind.PRODUCER), ("server", SpanKind.CONSUMER)]
)
async def test_an_ipc_notification_is_a_producer_then_consumer_span(
    otel: Otel, side: Literal["client", "server"], kind: SpanKind
) -> None:
    call = FakeCall(
        side, kind="ipc", interface="editor", version=None, operation="saved", notification=True
    )
    await otel.interceptor(call, Recorder(None))  # type: ignore[arg-type]
    (span,) = otel.spans()
    assert span.name == "editor/saved"
    assert span.kind is kind
    assert span.attributes is not None
    assert span.attributes["rpc.tether.kind"] == "ipc"
    assert span.attributes["rpc.tether.notification"] is True
    assert "rpc.tether.interface_version" not in span.attributes


async def test_durations_in_ms_and_calls_in_flight(otel: Otel) -> None:
    in_flight: list[int] = []

    async def proceed(call: Any) -> str:
        (point,) = otel.metric_points("rpc.client.active_requests")
        in_flight.append(point.value)
        return "ok"

    call = FakeCall("client", peer="ws://backend.example:9000/ws")
    await otel.interceptor(call, proceed)  # type: ignore[arg-type]
    await otel.interceptor(call, proceed)  # type: ignore[arg-type]
    assert in_flight == [1, 1]
    (after,) = otel.metric_points("rpc.client.active_requests")
    assert after.value == 0
    (duration,) = otel.metric_points("rpc.client.duration")
    assert duration.count == 2
    assert dict(duration.attributes) == {
        "rpc.system": "tether",
        "rpc.service": "Shop",
        "rpc.method": "buy",
        "server.address": "backend.example",
        "server.port": 9000,
        "rpc.tether.status_code": "ok",
    }
    data = otel.reader.get_metrics_data()
    assert data is not None
    units = {
        metric.name: metric.unit
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert units == {"rpc.client.duration": "ms", "rpc.client.active_requests": "{request}"}
    # A server's metrics leave out its peers (one time series per client port otherwise).
    await otel.interceptor(FakeCall("server", peer="127.0.0.1:40000"), proceed)  # type: ignore[arg-type]
    (served,) = otel.metric_points("rpc.server.duration")
    assert "network.peer.port" not in served.attributes


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        (None, {}),
        ("memory://in-process", {"server.address": "in-process"}),
        ("https://api.example/v1", {"server.address": "api.example", "server.port": 443}),
        ("http://[::1]:81/", {"server.address": "::1", "server.port": 81}),
        ("http://host:notaport/", {}),
    ],
)
def test_server_address_from_the_peer_url(peer: str | None, expected: dict[str, Any]) -> None:
    from tether.otel._attributes import peer_attributes

    assert peer_attributes(peer, "client") == expected


async def test_no_sdk_configured_changes_nothing_in_the_call() -> None:
    from opentelemetry.metrics import NoOpMeterProvider

    interceptor = OtelInterceptor(
        trace.NoOpTracerProvider().get_tracer("t"), NoOpMeterProvider().get_meter("t")
    )
    proceed = Recorder()
    call = FakeCall("client")
    await interceptor(call, proceed)  # type: ignore[arg-type]
    assert proceed.calls == [call]


def test_instrument_makes_new_activity_ids_the_active_trace_id(otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("before instrument()") as span, contexts.activity() as before:
        assert before.activity_id != uuid_form(span.get_span_context().trace_id)
    with tether.otel.instrument(
        tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider
    ) as handle:
        with tracer.start_as_current_span("user action") as span:
            trace_id = uuid_form(span.get_span_context().trace_id)
            with contexts.activity() as ctx:
                assert ctx.activity_id == trace_id
            assert contexts.new_activity_id() == trace_id
            assert contexts.RequestContext().activity_id == trace_id
            with contexts.activity("explicit") as explicit:
                assert explicit.activity_id == "explicit"
        # No span active: random, as ever.
        assert contexts.new_activity_id() != contexts.new_activity_id()
        with pytest.raises(RuntimeError, match="already instrumenting"):
            tether.otel.instrument()
        assert isinstance(handle, tether.Installed)
    with tracer.start_as_current_span("after") as span:
        assert contexts.new_activity_id() != uuid_form(span.get_span_context().trace_id)
    handle.uninstall()  # idempotent
    tether.otel.instrument(tracer_provider=otel.tracer_provider).uninstall()


def test_public_surface() -> None:
    assert tether.otel.__all__ == ["instrument"]


def test_import_without_opentelemetry_says_what_to_install() -> None:
    """Without opentelemetry-api, `import tether.otel` says `pip install tether[otel]`."""
    program = textwrap.dedent(
        """
        import sys

        class HideOpenTelemetry:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, HideOpenTelemetry())
        import tether  # the core needs no opentelemetry
        try:
            import tether.otel
        except ImportError as exc:
            print(exc)
        else:
            print("imported")
        """
    )
    src = os.path.join(os.path.dirname(os.path.dirname(tether.__file__)))
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": src},
        check=True,
    )
    assert "pip install tether[otel]" in done.stdout
    assert "imported" not in done.stdout
