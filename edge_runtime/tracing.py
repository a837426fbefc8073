"""OpenTelemetry across NATS: ``traceparent`` travels in NATS headers, so one trace spans
bridge -> broker (stages: cache, route) -> worker -> upstream HTTP.

Only the OpenTelemetry API is required: without an SDK every span is a no-op. Exporting is
opt-in: with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (and ``opentelemetry-sdk`` plus
``opentelemetry-exporter-otlp-proto-http`` installed, the ``otel`` extra) spans go to that
collector over OTLP/HTTP. The ``llm-edge`` command calls :func:`configure` for every service it
runs, with the service's name.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, MutableMapping
from contextlib import AbstractContextManager

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

__all__ = ["configure", "enabled", "extract", "inject", "span", "tracer", "traces_endpoint"]

log = logging.getLogger("llm_edge")

tracer = trace.get_tracer("llm_edge")
_UNKNOWN = object()


def enabled() -> bool:
    """Whether a real tracer provider is installed (spans cost ~4 us each otherwise, for
    nothing, so the request path skips them).

    Asked several times per request: while no provider is set, ``get_tracer_provider()``
    looks up an environment variable each call (3 % of ``llm-edge up``'s CPU at 64
    connections), so the unset global is checked first.
    """
    if getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None:
        return False
    return not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )


def span(
    name: str,
    *,
    parent: Mapping[str, str] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str] | None = None,
) -> AbstractContextManager[object]:
    """A current span (child of ``parent``'s ``traceparent`` when given), or nothing when
    tracing is off."""
    if not enabled():
        return contextlib.nullcontext()
    return tracer.start_as_current_span(
        name, context=extract(parent), kind=kind, attributes=dict(attributes or {})
    )


def extract(carrier: Mapping[str, str] | None) -> Context | None:
    """The remote parent carried in headers (``traceparent``), if any."""
    if not carrier or "traceparent" not in carrier:
        return None
    return propagate.extract(carrier)


def inject(carrier: MutableMapping[str, str]) -> None:
    """Put the current span's ``traceparent`` into outgoing headers (when tracing is on)."""
    if enabled():
        propagate.inject(carrier)


#: OTLP/HTTP's path for spans under the collector's base URL (the OpenTelemetry spec).
TRACES_PATH = "/v1/traces"


def _nothing() -> None:
    """Nothing to flush: tracing is off."""


def traces_endpoint(env: Mapping[str, str]) -> str | None:
    """Where spans go: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as it is, else
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the collector's base URL) plus ``/v1/traces``; ``None``
    when neither is set."""
    if traces := env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return traces
    if base := env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return base.rstrip("/") + TRACES_PATH
    return None


def configure(env: Mapping[str, str], service: str) -> Callable[[], None]:
    """Export spans over OTLP/HTTP when an OTLP endpoint is set; otherwise nothing.

    Args:
        env: the process environment (read at the entry point).
        service: the ``service.name`` resource attribute (``llm-edge-broker`` ...).

    Returns:
        A function that flushes spans still buffered and stops exporting (call it on exit).
    """
    endpoint = traces_endpoint(env)
    if not endpoint:
        return _nothing
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed "
            "(pip install 'llm-edge-broker[otel]'): tracing stays off"
        )
        return _nothing
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    log.info("exporting traces to %s as %s", endpoint, service)
    return provider.shutdown
