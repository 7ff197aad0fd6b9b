"""OpenTelemetry traces and metrics for every tether call: `tether.otel.instrument()`.

Needs the `opentelemetry-api` package (`pip install tether[otel]`); the SDK and
exporters are the application's choice.
"""

try:
    import opentelemetry.metrics
    import opentelemetry.trace  # noqa: F401
except ImportError as exc:  # pragma: no cover - tested in a subprocess that hides the package
    raise ImportError(
        "tether.otel needs the opentelemetry-api package, which is not installed: "
        "pip install tether[otel]"
    ) from exc

from ._instrument import instrument as instrument

__all__ = ["instrument"]
