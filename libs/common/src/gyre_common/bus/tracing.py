"""OpenTelemetry spans and W3C context propagation for the bus.

Attribute names follow the OpenTelemetry messaging semantic conventions (Kafka). They are spelled
here rather than imported from ``opentelemetry.semconv._incubating`` because that module is
private and moves between releases; the names themselves are the stable wire contract.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    Tracer,
    TracerProvider,
    TraceState,
)

from gyre_common.bus.envelope import Envelope
from gyre_common.bus.headers import TRACEPARENT, TRACESTATE

MESSAGING_SYSTEM = "messaging.system"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_CLIENT_ID = "messaging.client.id"
MESSAGING_CONSUMER_GROUP = "messaging.consumer.group.name"
MESSAGING_BATCH_COUNT = "messaging.batch.message_count"
MESSAGING_PARTITION = "messaging.destination.partition.id"
MESSAGING_KAFKA_KEY = "messaging.kafka.message.key"
MESSAGING_KAFKA_OFFSET = "messaging.kafka.offset"
CLOUDEVENTS_ID = "cloudevents.event_id"
CLOUDEVENTS_TYPE = "cloudevents.event_type"

TRACER_NAME = "gyre_common.bus"


def tracer(provider: TracerProvider | None = None) -> Tracer:
    """The bus tracer from ``provider``, by default the global one (a no-op until telemetry is set up)."""
    return trace.get_tracer(TRACER_NAME, tracer_provider=provider)


class LiveTracer:
    """The bus tracer, or None while no real tracer provider is configured.

    Spans of a no-op provider cost about a microsecond each for nothing; the bus skips them (and the
    context switching around handlers) until a real provider is set, globally or explicitly.
    """

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._provider = provider
        self._tracer: Tracer | None = None

    def get(self) -> Tracer | None:
        if self._tracer is None:
            provider = self._provider if self._provider is not None else trace.get_tracer_provider()
            if isinstance(provider, ProxyTracerProvider | NoOpTracerProvider):
                return None  # the global provider may be set later: look again next time
            self._tracer = provider.get_tracer(TRACER_NAME)
        return self._tracer


def format_traceparent(context: SpanContext) -> bytes:
    """W3C ``traceparent`` of a span context (version 00)."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}".encode()


def trace_headers(span: Span | None = None) -> list[tuple[str, bytes]]:
    """``traceparent`` (and ``tracestate``) for a record published from ``span`` or, without one, from
    the current span; when neither is valid (tracing off, no incoming trace), a fresh random root.

    Every record carries a ``traceparent`` (docs/bus.md): a record published with tracing off still
    correlates with what its consumers do. A fresh root is marked sampled so that consumers which do
    trace keep recording the trace (it just has no producer span).
    """
    context = (span if span is not None else trace.get_current_span()).get_span_context()
    if not context.is_valid:
        ids = os.urandom(24).hex()
        return [(TRACEPARENT, f"00-{ids[:32]}-{ids[32:]}-01".encode())]
    headers = [(TRACEPARENT, format_traceparent(context))]
    if context.trace_state:
        headers.append((TRACESTATE, context.trace_state.to_header().encode()))
    return headers


def parse_traceparent(text: str | None, tracestate: str | None = None) -> SpanContext | None:
    """The remote span context in a W3C ``traceparent`` (version 00 layout), None when absent or invalid."""
    if not text or len(text) < 55 or text[2] != "-" or text[35] != "-" or text[52] != "-" or text[:2] == "ff":
        return None
    try:
        trace_id, span_id, flags = int(text[3:35], 16), int(text[36:52], 16), int(text[53:55], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    state = TraceState.from_header([tracestate]) if tracestate else None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags), trace_state=state)


def remote_parent(envelope: Envelope) -> NonRecordingSpan | None:
    """The producer's span of a record as a non-recording span (to make it current), or None."""
    context = parse_traceparent(envelope.traceparent, envelope.tracestate)
    return None if context is None else NonRecordingSpan(context)


def process_span(tracer_: Tracer, group: str, envelopes: Sequence[Envelope]) -> Span:
    """A CONSUMER span for one handler call.

    For one record (or a batch whose records all share one trace) the producer's context is the
    parent, so the trace continues across Kafka; a mixed batch links to every producer span instead,
    as the messaging conventions recommend.
    """
    first = envelopes[0]
    parent = Context()  # a fresh root unless the records say otherwise, never the caller's context
    links: list[Link] = []
    # Trace ids compared as text first: parsing every traceparent is only needed for links.
    parents = [env.traceparent for env in envelopes]
    one_trace = all(parents) and len({tp[3:35] for tp in parents if tp}) == 1
    remote = parse_traceparent(first.traceparent, first.tracestate) if one_trace else None
    if remote is not None:
        parent = trace.set_span_in_context(NonRecordingSpan(remote))
    else:
        links = [Link(sc) for env in envelopes if (sc := parse_traceparent(env.traceparent, env.tracestate))]
    attributes: dict[str, str | int] = {
        MESSAGING_SYSTEM: "kafka",
        MESSAGING_DESTINATION: first.topic,
        MESSAGING_OPERATION_TYPE: "process",
        MESSAGING_OPERATION_NAME: "process",
        MESSAGING_CONSUMER_GROUP: group,
        MESSAGING_PARTITION: str(first.partition),
    }
    if len(envelopes) == 1:
        attributes[MESSAGING_MESSAGE_ID] = first.ce_id
        attributes[MESSAGING_KAFKA_OFFSET] = first.offset
        attributes[CLOUDEVENTS_ID] = first.ce_id
        attributes[CLOUDEVENTS_TYPE] = first.ce_type
        if first.key is not None:
            attributes[MESSAGING_KAFKA_KEY] = first.key
    else:
        attributes[MESSAGING_BATCH_COUNT] = len(envelopes)
    return tracer_.start_span(
        f"process {first.topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes, links=links
    )
