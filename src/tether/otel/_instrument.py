"""`instrument()`: trace and measure every call of the process, in one call."""

from __future__ import annotations

import threading

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ..contexts import _context
from ..runtime._interceptors import Installed, install_interceptor
from ._attributes import uuid_of_trace_id
from ._interceptor import OtelInterceptor

__all__ = ["instrument"]

_SCOPE = "tether"
_lock = threading.Lock()
_current: _Instrumentation | None = None


def _active_trace_id() -> str | None:
    """The active span's trace id as an ActivityId, or None when no span is active."""
    span_context = trace.get_current_span().get_span_context()
    return uuid_of_trace_id(span_context.trace_id) if span_context.is_valid else None


class _Instrumentation(Installed):
    """The handle `instrument()` returns: an `Installed` that also undoes the ActivityId hook."""

    __slots__ = ("_inner",)

    def __init__(self, interceptor: OtelInterceptor, inner: Installed) -> None:
        # Nothing for the base to remove itself: `inner` holds the installation.
        super().__init__(interceptor, client=False, server=False)
        self._inner = inner

    def __repr__(self) -> str:
        return f"<tether.otel instrumentation {self._inner!r}>"

    def uninstall(self) -> None:
        """Stop tracing and measuring calls; calls already running finish traced. Idempotent."""
        global _current
        with _lock:
            self._inner.uninstall()
            if _current is self:
                _current = None
                _context._activity_id_source = None


def instrument(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> Installed:
    """Trace and measure every tether call of this process, RPC and IPC, both sides.

    Every call made or served (every transport) gets a span following the
    OpenTelemetry RPC conventions, and its duration is recorded in the
    `rpc.client.duration` / `rpc.server.duration` histograms (ms); the
    `rpc.client.active_requests` / `rpc.server.active_requests` counters hold
    the calls in flight. A call carries its client span's `traceparent` to the
    server, whose span is its child. While a span is active, a new ActivityId is
    the span's trace id (in UUID form).

    Args:
        tracer_provider: Where spans go; by default OpenTelemetry's global one
            (`opentelemetry.trace.set_tracer_provider`).
        meter_provider: Where metrics go; by default the global one.

    Returns:
        A handle: `uninstall()` (or leaving `with handle:`) stops it.

    Raises:
        RuntimeError: the process is already instrumented (uninstall that first).
    """
    global _current
    with _lock:
        if _current is not None:
            raise RuntimeError(
                "tether.otel is already instrumenting this process; calls would be traced "
                "twice: uninstall() the handle instrument() returned first"
            )
        tracer = trace.get_tracer(_SCOPE, _version(), tracer_provider)
        meter = metrics.get_meter(_SCOPE, _version(), meter_provider)
        interceptor = OtelInterceptor(tracer, meter)
        handle = _Instrumentation(interceptor, install_interceptor(interceptor))
        _current = handle
        _context._activity_id_source = _active_trace_id
    return handle


def _version() -> str:
    from .. import __version__

    return __version__
