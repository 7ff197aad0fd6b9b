"""What the OpenTelemetry tests share: the SDK's in-memory exporter and metric
reader behind fresh providers, and `tether.otel` instrumented with them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tether.otel


@attrs.frozen
class Recorded:
    """The spans and metrics the SDK recorded, and the providers that did."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def metric_points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


@contextmanager
def recording() -> Iterator[Recorded]:
    """Fresh providers recording into memory for the block, shut down after it."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    try:
        yield Recorded(exporter, reader, tracer_provider, meter_provider)
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()


@contextmanager
def instrumented() -> Iterator[Recorded]:
    """`tether.otel.instrument()` with `recording()`'s providers, for the block."""
    with (
        recording() as recorded,
        tether.otel.instrument(
            tracer_provider=recorded.tracer_provider, meter_provider=recorded.meter_provider
        ),
    ):
        yield recorded
