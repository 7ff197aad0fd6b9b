"""The interceptor that traces and measures every call, on both sides."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import attrs
from opentelemetry.context import Context
from opentelemetry.metrics import Histogram, Meter, UpDownCounter
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .. import contexts
from ._attributes import (
    CANCELLED,
    OK,
    is_server_fault,
    peer_attributes,
    status_code_of,
    uuid_of_trace_id,
)

if TYPE_CHECKING:
    from ..runtime._interceptors import CallInfo, Direction, Proceed, StreamMessages

__all__ = ["OtelInterceptor"]

_KINDS = {
    ("client", False): SpanKind.CLIENT,
    ("server", False): SpanKind.SERVER,
    # A notification is one-way: its sender produces a message that its receiver consumes.
    ("client", True): SpanKind.PRODUCER,
    ("server", True): SpanKind.CONSUMER,
}
_MESSAGE_TYPES = {"sent": "SENT", "received": "RECEIVED"}
_MAX_STATUS_DESCRIPTION = 256


class OtelInterceptor:
    """A span and the duration and in-flight metrics of each call it wraps.

    Installed process-wide for both sides (`instrument`), it tells them apart by
    `call.side`. On a client it puts its span's `traceparent` in the context the
    call is sent with; on a server it takes the received one as the span's parent
    and keeps the span current while the impl runs, so the impl's own calls are
    its children.
    """

    __slots__ = (
        "_client_active",
        "_client_duration",
        "_propagator",
        "_server_active",
        "_server_duration",
        "_tracer",
    )

    def __init__(self, tracer: Tracer, meter: Meter) -> None:
        self._tracer = tracer
        self._propagator = TraceContextTextMapPropagator()
        self._client_duration: Histogram = meter.create_histogram(
            "rpc.client.duration",
            unit="ms",
            description="How long each outgoing call took, as its caller saw it.",
        )
        self._server_duration: Histogram = meter.create_histogram(
            "rpc.server.duration",
            unit="ms",
            description="How long each incoming call took to serve.",
        )
        self._client_active: UpDownCounter = meter.create_up_down_counter(
            "rpc.client.active_requests",
            unit="{request}",
            description="Outgoing calls in flight.",
        )
        self._server_active: UpDownCounter = meter.create_up_down_counter(
            "rpc.server.active_requests",
            unit="{request}",
            description="Incoming calls being served.",
        )

    def __repr__(self) -> str:
        return "<tether.otel interceptor>"

    async def __call__(self, call: CallInfo, proceed: Proceed) -> Any:
        """Run `call` inside a span of its own, and measure it."""
        client = call.side == "client"
        metric_attributes: dict[str, str | int] = {
            "rpc.system": "tether",
            "rpc.service": call.interface,
            "rpc.method": call.operation,
        }
        peer = peer_attributes(call.peer, call.side)
        if client:
            # The server's address is few-valued; a server's peer (each client's
            # address and port) would make one time series per connection.
            metric_attributes.update(peer)
            parent: Context | None = None  # the active span, if any
            traceparent = call.context.traceparent
            if traceparent and not get_current_span().get_span_context().is_valid:
                # No span here, but the activity continues a trace from elsewhere
                # (`tether.activity(traceparent=...)`): the span joins it.
                parent = self._propagator.extract({"traceparent": traceparent})
            duration, active = self._client_duration, self._client_active
        else:
            traceparent = call.context.traceparent
            # Only what the call carries is the parent, never the dispatching task's
            # own context (an in-process server's tasks inherit whatever was current).
            carrier = {"traceparent": traceparent} if traceparent else {}
            parent = self._propagator.extract(carrier, context=Context())
            duration, active = self._server_duration, self._server_active
        span_attributes: dict[str, str | int | bool] = {**metric_attributes, **peer}
        span_attributes["rpc.tether.kind"] = call.kind
        if call.version is not None:
            span_attributes["rpc.tether.interface_version"] = call.version
        if call.stream is not None:
            span_attributes["rpc.tether.stream"] = call.stream
        if call.notification:
            span_attributes["rpc.tether.notification"] = True

        code = OK
        active.add(1, metric_attributes)
        start = time.perf_counter()
        try:
            with self._tracer.start_as_current_span(
                f"{call.interface}/{call.operation}",
                context=parent,
                kind=_KINDS[call.side, call.notification],
                attributes=span_attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                if client:
                    call = self._outgoing(call, span)
                span.set_attribute("rpc.tether.activity_id", call.context.activity_id)
                if call.messages is not None:
                    _report_messages(call.messages, span)
                try:
                    return await proceed(call)
                except BaseException as exc:
                    code = status_code_of(exc)
                    _record_failure(span, exc, code, error=client or is_server_fault(code))
                    raise
                finally:
                    span.set_attribute("rpc.tether.status_code", code)
        finally:
            active.add(-1, metric_attributes)
            metric_attributes["rpc.tether.status_code"] = code
            duration.record((time.perf_counter() - start) * 1000.0, metric_attributes)

    def _outgoing(self, call: CallInfo, span: Span) -> CallInfo:
        """`call`, its context carrying `span` as the parent of the server's span."""
        span_context = span.get_span_context()
        if not span_context.is_valid:  # no tracing configured and no trace to continue
            return call
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=set_span_in_context(span))
        changes: dict[str, Any] = {}
        traceparent = carrier.get("traceparent")
        if traceparent is not None:
            changes["traceparent"] = traceparent
        if contexts.current() is None:
            # Outside any request or activity, the call's ActivityId was made for
            # this call alone: let it be the trace id, so logs and traces meet.
            changes["activity_id"] = uuid_of_trace_id(span_context.trace_id)
        if not changes:
            return call
        return attrs.evolve(call, context=attrs.evolve(call.context, **changes))


def _report_messages(messages: StreamMessages, span: Span) -> None:
    """A `message` event on `span` for each message of a stream (the RPC conventions)."""

    def on_message(direction: Direction, index: int) -> None:
        span.add_event(
            "message",
            {"message.type": _MESSAGE_TYPES[direction], "message.id": index + 1},
        )

    messages.add_listener(on_message)


def _record_failure(span: Span, exc: BaseException, code: str, *, error: bool) -> None:
    """Mark `span` as failed with `exc` when `error`; a cancellation never is."""
    if code == CANCELLED or not error:
        return
    span.set_attribute("error.type", code)
    description = f"{type(exc).__name__}: {exc}"
    span.set_status(Status(StatusCode.ERROR, description[:_MAX_STATUS_DESCRIPTION]))
    span.record_exception(exc)
