"""Kafka adapter: the ``tracking.events`` ingester (fire-and-forget logging from training code).

Each polled batch becomes one :meth:`TrackingHandlers.ingest` call; each event is applied in its
own transaction together with its ``ce_id`` claim in ``processed_events``, so a redelivered event
is skipped, and metric points are idempotent on their natural key (run, key, step, timestamp,
value) even when a producer re-sends the same observations under a new id. Offsets are committed
by the bus after the handler returns, i.e. after the transactions committed.

Events that can never apply (invalid keys or ids, a param conflict, a deleted run) are not
retried: they go to the group's dead-letter topic at once with ``gyre_dlq_reason`` = the
reason (``invalid_argument``, ``param_conflict``, ...) and ``gyre_dlq_error`` = the explanation.
Database errors raise, so the bus retries the batch (applied events are then skipped by id).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from aiokafka import AIOKafkaProducer

from gyre_common import topics
from gyre_common.bus import Consumer, Envelope, encode_json, producer_config
from gyre_common.bus.headers import JSON, dead_letter_headers
from gyre_common.settings import KafkaSettings
from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_tracking.convert import metric_from_proto, optional_time, status_from_proto
from gyre_tracking.domain.errors import InvalidArgument
from gyre_tracking.domain.model import Metric
from gyre_tracking.handlers import RejectedEvent, RunBatch, TrackingEventCommand, TrackingHandlers

log = logging.getLogger(__name__)


def event_command(env: Envelope) -> TrackingEventCommand:
    """The handler command of one decoded ``TrackingEvent``.

    Points without a timestamp get the event's time (``emitted_at``, else the CloudEvents time),
    which is the same on every redelivery, so such points still deduplicate.

    Raises:
        InvalidArgument: an unknown status number.
    """
    message = env.message
    assert isinstance(message, events_pb2.TrackingEvent)
    occurred_at = optional_time(message, "emitted_at") or env.time
    try:
        status = status_from_proto(message.status)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    metrics = []
    for point in message.metrics:
        key, value, step, stamp = metric_from_proto(point, occurred_at)
        assert stamp is not None
        metrics.append(Metric(key, value, step, stamp))
    return TrackingEventCommand(
        event_id=env.ce_id,
        run_id=message.run_id,
        experiment_name=message.experiment_name,
        run_name=message.run_name,
        batch=RunBatch(metrics=metrics, params=[(p.key, p.value) for p in message.params],
                       tags=[(t.key, t.value) for t in message.tags]),
        status=status,
        end_time=optional_time(message, "end_time"),
        occurred_at=occurred_at,
    )


class TrackingEventsConsumer:
    """Background component (``start()``/``stop()``) ingesting ``tracking.events`` in batches.

    Args:
        handlers: the use cases.
        kafka: broker settings (batch size = ``batch_max_records``).
        group: consumer group (also the ``processed_events`` consumer name); the dead-letter
            topic is ``<prefix><group>.dlq``.
        consumer_options: extra ``Consumer`` keyword arguments (tests shorten timeouts).
    """

    def __init__(self, handlers: TrackingHandlers, kafka: KafkaSettings, group: str = "tracking",
                 **consumer_options: object) -> None:
        self.handlers = handlers
        self.kafka = kafka
        self.group = group
        self.consumer = Consumer(kafka, group=group, topics=[topics.TRACKING_EVENTS], service="tracking",
                                 batch_handler=self.handle_batch, **consumer_options)  # type: ignore[arg-type]
        self.applied = 0
        self.duplicates = 0
        self.rejected = 0
        self._producer: AIOKafkaProducer | None = None
        self._stack = AsyncExitStack()

    async def start(self) -> None:
        """Connect the dead-letter producer, join the group and start consuming."""
        producer = AIOKafkaProducer(**producer_config(self.kafka, f"{self.kafka.client_id}-tracking-dlq"))  # type: ignore[arg-type]
        await producer.start()
        self._stack.push_async_callback(producer.stop)
        self._producer = producer
        await self._stack.enter_async_context(self.consumer)

    async def stop(self) -> None:
        """Finish the in-flight batch, commit its offsets, disconnect."""
        await self._stack.aclose()
        self._producer = None

    async def handle_batch(self, envelopes: list[Envelope]) -> None:
        """Apply a batch of events; dead-letter the ones that can never apply (raises on database errors)."""
        commands: list[TrackingEventCommand] = []
        positions: list[int] = []
        rejected: list[RejectedEvent] = []
        for index, env in enumerate(envelopes):
            try:
                commands.append(event_command(env))
                positions.append(index)
            except InvalidArgument as exc:
                rejected.append(RejectedEvent(index, exc.reason, str(exc)))
        report = await self.handlers.ingest(commands, self.group)
        rejected += [RejectedEvent(positions[r.index], r.reason, r.detail) for r in report.rejected]
        if rejected:
            await asyncio.gather(*(self._dead_letter(envelopes[r.index], r.reason, r.detail) for r in rejected))
        self.applied += report.applied
        self.duplicates += report.duplicates
        self.rejected += len(rejected)
        if report.duplicates:
            log.info("skipped %d tracking events already applied", report.duplicates)

    async def _dead_letter(self, env: Envelope, reason: str, detail: str) -> None:
        producer = self._producer
        assert producer is not None
        # The bus hands over the decoded message, not the record's bytes: re-encode it the way it came.
        payload = encode_json(env.message) if env.content_type == JSON else env.message.SerializeToString()
        headers = dead_letter_headers(list(env.headers.items()), reason=reason, error=detail, topic=env.topic,
                                      partition=env.partition, offset=env.offset, group=self.group, attempts=1)
        key = None if env.key is None else env.key.encode("utf-8")
        await producer.send_and_wait(self.consumer.dead_letter_topic, payload, key=key, headers=headers)
        log.warning("dead-lettered tracking event %s[%d]@%d: %s: %s", env.topic, env.partition, env.offset,
                    reason, detail)
