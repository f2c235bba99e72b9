"""OpenTelemetry spans and W3C context propagation for the bus.

Attribute names follow the OpenTelemetry messaging semantic conventions (Kafka). They are spelled
here rather than imported from ``opentelemetry.semconv._incubating`` because that module is
private and moves between releases; the names themselves are the stable wire contract.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Tracer, TracerProvider

from gyre_common.bus.envelope import Envelope

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


def inject_headers(span: Span, headers: list[tuple[str, bytes]]) -> None:
    """Append ``traceparent``/``tracestate`` of ``span`` to ``headers`` (nothing for a no-op span)."""
    if not span.get_span_context().is_valid:
        # Skips the propagator entirely on the common untraced path (no SDK configured).
        return
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    headers.extend((name, value.encode()) for name, value in carrier.items())


def process_span(tracer_: Tracer, group: str, envelopes: Sequence[Envelope]) -> Span:
    """A CONSUMER span for one handler call.

    For one record (or a batch whose records all share one trace) the producer's context is the
    parent, so the trace continues across Kafka; a mixed batch links to every producer span instead,
    as the messaging conventions recommend.
    """
    first = envelopes[0]
    parent = Context()  # a fresh root unless the records say otherwise, never the caller's context
    links: list[Link] = []
    contexts = [env.trace_context() for env in envelopes if env.traceparent]
    span_contexts = [trace.get_current_span(ctx).get_span_context() for ctx in contexts]
    one_trace = len({sc.trace_id for sc in span_contexts}) == 1
    if one_trace and len(span_contexts) == len(envelopes):
        parent = contexts[0]
    else:
        links = [Link(sc) for sc in span_contexts if sc.is_valid]
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
