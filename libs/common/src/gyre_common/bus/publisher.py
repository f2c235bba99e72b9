"""Typed publishing of Gyre events to Kafka (aiokafka producer, CloudEvents headers, tracing)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from google.protobuf.message import Message
from opentelemetry.trace import SpanKind, StatusCode, TracerProvider

from gyre_common.bus import headers as h
from gyre_common.bus import tracing
from gyre_common.bus.codec import topic_spec
from gyre_common.settings import KafkaSettings
from gyre_common.topics import full_name

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Published:
    """Where the broker stored a published event (after ``acks=all``)."""

    ce_id: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class _Route:
    """Everything constant about publishing to one base topic, computed once."""

    topic: str
    event_type: str
    template: h.HeaderTemplate
    attributes: dict[str, str]


def producer_config(settings: KafkaSettings, client_id: str) -> dict[str, object]:
    """aiokafka producer keyword arguments every Gyre producer uses.

    ``acks="all"`` without idempotence: Tansu has no InitProducerId, and consumers dedupe anyway.
    """
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": False,
        "linger_ms": settings.linger_ms,
        "request_timeout_ms": settings.request_timeout_ms,
        "retry_backoff_ms": settings.retry_backoff_ms,
    }


class Publisher:
    """Publishes protobuf events to Gyre topics.

    Use as ``async with Publisher(settings, service="serving") as pub: await pub.publish(...)``, or
    call :meth:`start` / :meth:`stop`. Each record gets CloudEvents binary-mode headers (``ce_id``,
    ``ce_type``, ``ce_source``, ``ce_time``, ``ce_specversion``, ``content-type``) and a W3C
    ``traceparent``; with a real tracer provider each publish runs in a PRODUCER span whose context
    that is, without one the current (incoming) trace context or a fresh random root.

    Errors: bad input (unknown topic, wrong message type, reserved header) raises ``ValueError``
    before anything is sent; broker failures raise ``aiokafka.errors.KafkaError`` subclasses
    (``KafkaTimeoutError`` after ``request_timeout_ms``).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        service: str,
        producer: AIOKafkaProducer | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        """
        Args:
            settings: broker address, topic prefix, producer tuning.
            service: name of the publishing service; becomes ``ce_source``.
            producer: an aiokafka producer to use instead of making one (tests, sharing).
            tracer_provider: where spans go; the global provider when omitted.
        """
        self.settings = settings
        self.service = service
        self._producer = producer
        self._owns_producer = producer is None
        self._routes: dict[str, _Route] = {}
        self._tracer = tracing.LiveTracer(tracer_provider)
        self._client_id = f"{settings.client_id}-{service}"

    @property
    def producer(self) -> AIOKafkaProducer:
        """The underlying aiokafka producer (after :meth:`start`)."""
        if self._producer is None:
            raise RuntimeError("Publisher is not started: use `async with` or await start()")
        return self._producer

    async def start(self) -> None:
        """Connect to the broker. Raises ``KafkaConnectionError`` when it cannot be reached."""
        if self._producer is None:
            self._producer = AIOKafkaProducer(**producer_config(self.settings, self._client_id))  # type: ignore[arg-type]
        await self._producer.start()

    async def stop(self) -> None:
        """Flush what is buffered, wait for its acknowledgements, disconnect."""
        if self._producer is not None:
            await self._producer.stop()
            if self._owns_producer:
                self._producer = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _route(self, topic_base: str, message: Message) -> _Route:
        route = self._routes.get(topic_base)
        if route is None:
            spec = topic_spec(topic_base)
            topic = full_name(topic_base, self.settings.topic_prefix)
            route = _Route(
                topic=topic,
                event_type=spec.event_type,
                template=h.HeaderTemplate.for_event(spec.event_type, self.service),
                attributes={
                    tracing.MESSAGING_SYSTEM: "kafka",
                    tracing.MESSAGING_DESTINATION: topic,
                    tracing.MESSAGING_OPERATION_TYPE: "send",
                    tracing.MESSAGING_OPERATION_NAME: "send",
                    tracing.MESSAGING_CLIENT_ID: self._client_id,
                    tracing.CLOUDEVENTS_TYPE: spec.event_type,
                },
            )
            self._routes[topic_base] = route
        name = message.DESCRIPTOR.full_name
        if name != route.event_type:
            raise ValueError(
                f"topic {topic_base!r} carries {route.event_type}, not {name}: "
                "publish each event type to its own topic (see gyre_common.topics.TOPICS)"
            )
        return route

    async def _send(
        self,
        topic_base: str,
        message: Message,
        key: str | bytes | None,
        headers: Mapping[str, str | bytes] | None,
        event_id: str | None,
        time: datetime | None,
    ) -> tuple[asyncio.Future[Any], str]:
        """Validate, encode and hand one record to aiokafka: (its delivery future, ce_id)."""
        route = self._route(topic_base, message)
        ce_id = event_id or h.new_event_id()
        record_headers = route.template.build(
            ce_id, h.format_time(time) if time is not None else h.now_bytes(), h.normalise_extra(headers)
        )
        key_bytes = key.encode() if isinstance(key, str) else key
        tracer = self._tracer.get()
        if tracer is None:
            # Tracing off: no span (a no-op span still costs ~1 µs), but the record still carries a
            # traceparent: the current one (an incoming request's) or a fresh root.
            record_headers.extend(tracing.trace_headers())
            delivery = await self.producer.send(
                route.topic, message.SerializeToString(), key=key_bytes, headers=record_headers
            )
            return delivery, ce_id
        # The span covers the hand-off to the producer; delivery is awaited by the caller. It is
        # never made current: nothing runs inside it, and skipping the context switch matters at
        # tens of thousands of records per second.
        span = tracer.start_span(f"send {route.topic}", kind=SpanKind.PRODUCER, attributes=route.attributes)
        try:
            if span.is_recording():
                span.set_attribute(tracing.MESSAGING_MESSAGE_ID, ce_id)
                span.set_attribute(tracing.CLOUDEVENTS_ID, ce_id)
                if isinstance(key, str):
                    span.set_attribute(tracing.MESSAGING_KAFKA_KEY, key)
            record_headers.extend(tracing.trace_headers(span))
            delivery = await self.producer.send(
                route.topic, message.SerializeToString(), key=key_bytes, headers=record_headers
            )
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR, str(exc))
            raise
        finally:
            span.end()
        return delivery, ce_id

    async def send(
        self,
        topic_base: str,
        message: Message,
        key: str | bytes | None = None,
        *,
        headers: Mapping[str, str | bytes] | None = None,
        event_id: str | None = None,
        time: datetime | None = None,
    ) -> asyncio.Future[Published]:
        """Hand one event to the producer without waiting for the broker; await the result for that.

        Records sent this way are batched by aiokafka (``linger_ms``). The returned future resolves
        to :class:`Published` once the broker acknowledged the record (``acks=all``) or raises the
        delivery error. Returns only after the record is in the producer's buffer, so memory stays
        bounded. Arguments and errors as for :meth:`publish`.
        """
        delivery, ce_id = await self._send(topic_base, message, key, headers, event_id, time)
        return _published(delivery, ce_id)

    async def publish(
        self,
        topic_base: str,
        message: Message,
        key: str | bytes | None = None,
        *,
        headers: Mapping[str, str | bytes] | None = None,
        event_id: str | None = None,
        time: datetime | None = None,
    ) -> Published:
        """Publish one event and return once the broker acknowledged it (``acks=all``).

        Args:
            topic_base: topic name without prefix, one of :data:`gyre_common.topics.TOPICS`.
            message: the protobuf event; its type must be the topic's ``event_type``.
            key: the entity whose order matters (model name, entity id, prediction id).
            headers: extra headers; ``ce_*``, ``content-type`` and trace headers are refused.
            event_id: ``ce_id`` to use (a random UUID when omitted); reuse it when re-publishing the
                same logical event so consumers dedupe it.
            time: ``ce_time``, an aware datetime (now, UTC, when omitted).

        Raises:
            ValueError: unknown topic, wrong message type, reserved header, naive ``time``.
            aiokafka.errors.KafkaError: the broker did not acknowledge the record.
        """
        delivery, ce_id = await self._send(topic_base, message, key, headers, event_id, time)
        meta = await delivery
        return Published(ce_id, meta.topic, meta.partition, meta.offset)

    async def publish_many(
        self,
        topic_base: str,
        items: Iterable[tuple[str | bytes | None, Message]],
        *,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> list[Published]:
        """Publish many events to one topic, letting the producer batch them, and wait for all.

        ``items`` are ``(key, message)`` pairs. Returns the results in input order once every
        record is acknowledged. Raises like :meth:`publish`; on a delivery error some records may
        already be stored (at-least-once: consumers dedupe on ``ce_id``).
        """
        sent = [await self._send(topic_base, message, key, headers, None, None) for key, message in items]
        metas = await asyncio.gather(*(delivery for delivery, _ in sent))
        return [
            Published(ce_id, meta.topic, meta.partition, meta.offset)
            for (_, ce_id), meta in zip(sent, metas, strict=True)
        ]

    async def send_batch(
        self, topic_base: str, records: Sequence[tuple[str | bytes | None, Message, str | None]]
    ) -> asyncio.Future[int]:
        """Hand many events for one topic to the producer as ready-made record batches; await the
        result for the broker's acknowledgement of all of them.

        ``records`` are ``(key, message, event_id)``; ``event_id`` None gets a random ``ce_id``.
        Records are partitioned as :meth:`send` does (murmur2 of the key, Kafka's default), so a key
        keeps its partition whichever method sent it, and keep their order within a partition.
        Headers are the same as :meth:`send`'s, with one ``ce_time`` for the call. This is about
        half the producer CPU of :meth:`send` per record (no per-record future or accumulator
        lookup), for callers that publish in chunks (serving's inference events).

        With tracing on, each record is sent with :meth:`send` instead, so it keeps its own
        PRODUCER span. The returned future resolves to the number of records once every batch is
        acknowledged (``acks=all``), or raises the first delivery error: then some records may be
        stored and others not (at-least-once: re-send them all, consumers dedupe on ``ce_id``).

        Raises:
            ValueError: unknown topic, wrong message type, or a record larger than a batch.
        """
        count = len(records)
        if self._tracer.get() is not None:
            sent = [await self._send(topic_base, message, key, None, event_id, None)
                    for key, message, event_id in records]
            return _counted(asyncio.gather(*(delivery for delivery, _ in sent)), count)
        producer = self.producer
        # Every record's type first: a wrong one anywhere refuses the call before anything is sent.
        route: _Route | None = None
        for _, message, _ in records:
            route = self._route(topic_base, message)
        if route is None:
            return _counted(asyncio.gather(), 0)
        partitions = sorted(await producer.partitions_for(route.topic))
        single = partitions[0] if len(partitions) == 1 else None
        stamp = h.now_bytes()
        builders: dict[int, Any] = {}
        deliveries: list[asyncio.Future[Any]] = []
        for key, message, event_id in records:
            key_bytes = key.encode() if isinstance(key, str) else key
            partition = single if single is not None else _PARTITIONER(key_bytes, partitions, partitions)
            headers = route.template.build(event_id or h.new_event_id(), stamp)
            headers.extend(tracing.trace_headers())
            value = message.SerializeToString()
            builder = builders.get(partition)
            if builder is None:
                builder = builders[partition] = producer.create_batch()
            if builder.append(key=key_bytes, value=value, timestamp=None, headers=headers) is None:
                # Full: send it and start the partition's next batch with this record.
                deliveries.append(await producer.send_batch(builder, route.topic, partition=partition))
                builder = builders[partition] = producer.create_batch()
                if builder.append(key=key_bytes, value=value, timestamp=None, headers=headers) is None:
                    raise ValueError(f"a record of {len(value)} bytes does not fit in a producer batch "
                                     f"(max_batch_size); publish it with send()")
        for partition, builder in builders.items():
            deliveries.append(await producer.send_batch(builder, route.topic, partition=partition))
        return _counted(asyncio.gather(*deliveries), count)

    async def flush(self) -> None:
        """Send whatever the producer holds back for batching, and wait until it is sent."""
        await self.producer.flush()


_PARTITIONER = DefaultPartitioner()
"""What aiokafka's producer uses for keyed records unless told otherwise (Kafka's murmur2)."""


def _counted(deliveries: asyncio.Future[list[Any]], count: int) -> asyncio.Future[int]:
    """A future of ``count`` once ``deliveries`` (all of them) succeeded."""
    return _mapped(deliveries, lambda _: count)


def _published(delivery: asyncio.Future[Any], ce_id: str) -> asyncio.Future[Published]:
    """Map aiokafka's RecordMetadata future to a :class:`Published` future."""
    return _mapped(delivery, lambda meta: Published(ce_id, meta.topic, meta.partition, meta.offset))


def _mapped(source: asyncio.Future[Any], convert: Callable[[Any], T]) -> asyncio.Future[T]:
    """A future of ``convert(result)`` once ``source`` is done; its error or cancellation passes through."""
    result: asyncio.Future[T] = asyncio.get_running_loop().create_future()

    def done(fut: asyncio.Future[Any]) -> None:
        if result.cancelled():
            return
        if fut.cancelled():
            result.cancel()
        elif (error := fut.exception()) is not None:
            result.set_exception(error)
        else:
            result.set_result(convert(fut.result()))

    source.add_done_callback(done)
    return result
