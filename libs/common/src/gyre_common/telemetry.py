"""Traces and metrics for one Gyre process, on the OpenTelemetry SDK.

Who does what:

* ``opentelemetry-sdk``: the :class:`TracerProvider` and :class:`MeterProvider`; the resource's
  ``service.name`` is the service's name unless ``OTEL_SERVICE_NAME`` says otherwise;
* ``opentelemetry-exporter-otlp-proto-grpc``: ships spans to a collector through a
  ``BatchSpanProcessor``, only when ``GYRE_TELEMETRY_OTLP_ENDPOINT`` is set;
* ``opentelemetry-exporter-prometheus``: a metric reader registered in ``prometheus_client``'s
  default registry, so ``/metrics`` (``generate_latest``) shows OpenTelemetry instruments next to
  anything recorded with ``prometheus_client`` directly;
* ``opentelemetry-instrumentation-grpc``: grpc.aio server and client interceptors that read and
  write the W3C ``traceparent`` in gRPC metadata and open a span per call (checked with grpcio 1.85
  and grpc.aio by ``tests/integration/test_runner_tracing.py``).

The propagator is W3C TraceContext + Baggage unless ``OTEL_PROPAGATORS`` names others.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import grpc
from opentelemetry import metrics, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from gyre_common.settings import TelemetrySettings

log = logging.getLogger(__name__)


@dataclass
class Telemetry:
    """The process's tracer and meter providers and what serves them.

    Use :func:`setup_telemetry` to get one. The gRPC interceptors use this object's tracer
    provider explicitly, so they trace even where the global provider was set by someone else.
    """

    service_name: str
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    registry: CollectorRegistry = field(default=REGISTRY)
    closed: bool = False
    exporting: bool = True
    """Whether spans go anywhere (an OTLP endpoint or a test exporter is configured)."""

    def tracer(self, name: str) -> trace.Tracer:
        """A tracer for instrumentation scope ``name`` (usually ``__name__``)."""
        return self.tracer_provider.get_tracer(name)

    @property
    def active_tracer_provider(self) -> TracerProvider | None:
        """The tracer provider when spans go somewhere, else None: give it to the bus (``Publisher``,
        ``Consumer``), which then skips span work per record, yet still propagates trace context."""
        return self.tracer_provider if self.exporting else None

    def meter(self, name: str) -> metrics.Meter:
        """A meter for instrumentation scope ``name``; its instruments appear on ``/metrics``."""
        return self.meter_provider.get_meter(name)

    def grpc_server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """Interceptors for ``grpc.aio.server``: continue the caller's trace, one span per call.

        None when no span goes anywhere: the interceptor records a span per call whatever happens to
        it, about 100 µs of a ~900 µs inference call (docs/profiling/serving.md). Without it, events
        a call publishes start a fresh trace instead of continuing the caller's.
        """
        if not self.exporting:
            return []
        return [aio_server_interceptor(tracer_provider=self.tracer_provider)]

    def grpc_client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """Interceptors for ``grpc.aio.insecure_channel``: one span per call, ``traceparent`` sent."""
        return list(aio_client_interceptors(tracer_provider=self.tracer_provider))

    def metrics_payload(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush pending spans (within ``timeout_s`` seconds) and stop the providers; safe to repeat."""
        global _active
        if self.closed:
            return
        self.closed = True
        millis = int(timeout_s * 1000)
        try:
            self.tracer_provider.force_flush(millis)
        finally:
            self.tracer_provider.shutdown()
            self.meter_provider.shutdown(timeout_millis=millis)
            if _active is self:
                _active = None


_active: Telemetry | None = None
_globals_installed = False
_tracer_installed = False


def setup_telemetry(service_name: str, settings: TelemetrySettings, *,
                    span_exporter: SpanExporter | None = None) -> Telemetry:
    """Set up tracing, metrics and propagation for this process.

    Calling it again while the first :class:`Telemetry` is open returns that same object (tests,
    libraries calling it defensively). After :meth:`Telemetry.shutdown` a new one is built, but the
    OpenTelemetry globals stay with the first (the API allows setting them only once per process).
    The global tracer provider is set only by a set-up that exports spans (an OTLP endpoint or
    ``span_exporter``); without one, the global stays the no-op provider.

    Args:
        service_name: ``service.name`` of the resource, unless ``OTEL_SERVICE_NAME`` is set.
        settings: ``otlp_endpoint`` turns on the OTLP gRPC span exporter.
        span_exporter: an extra exporter fed span by span (tests use an in-memory one).
    """
    global _active, _globals_installed, _tracer_installed
    if _active is not None:
        if _active.service_name != service_name:
            log.warning("telemetry already set up for %s; ignoring %s", _active.service_name, service_name)
        return _active

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    resource = Resource.create(attributes)
    tracer_provider = TracerProvider(resource=resource)
    if settings.otlp_endpoint:
        # Imported here so a process without a collector never loads the exporter's gRPC stack.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    if span_exporter is not None:
        tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    meter_provider = MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()])

    exporting = bool(settings.otlp_endpoint) or span_exporter is not None
    if not _globals_installed:
        metrics.set_meter_provider(meter_provider)
        if not os.environ.get("OTEL_PROPAGATORS"):
            propagate.set_global_textmap(
                CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
            )
        _globals_installed = True
    if exporting and not _tracer_installed:
        # Only a provider whose spans go somewhere becomes the global one: with the API's default
        # no-op provider the bus and instrumentation skip span work on every record and request
        # (an SDK span nobody exports still costs ids, sampling and attributes), while incoming
        # trace context is still propagated to what is published.
        trace.set_tracer_provider(tracer_provider)
        _tracer_installed = True
    _active = Telemetry(service_name, tracer_provider, meter_provider, exporting=exporting)
    return _active
