"""Kafka adapter: the ``features.events`` ingester.

Each polled batch becomes one :meth:`FeaturesHandlers.ingest` call (one database transaction for
the batch). Offsets are committed by the bus after the handler returns, i.e. after the
transaction committed; a crash before that means redelivery, which the natural key
(feature_view, entity_id, event_time) makes harmless.

Events that fail validation (unknown view or feature, wrong type, no entity id or event_time) can
never succeed, so they are not retried: they go to the group's dead-letter topic at once, with
``gyre_dlq_reason`` = the validation reason (e.g. ``unknown_feature``) and ``gyre_dlq_error`` =
the explanation, and the batch goes on. Records that cannot be decoded at all are dead-lettered by
the bus itself (reason ``decode_error`` etc.).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from aiokafka import AIOKafkaProducer
from opentelemetry.metrics import Meter

from gyre_common import topics
from gyre_common.bus import Consumer, Envelope, encode_json, producer_config
from gyre_common.bus.headers import JSON, dead_letter_headers
from gyre_common.settings import KafkaSettings
from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_features.convert import raw_event
from gyre_features.handlers import FeaturesHandlers

log = logging.getLogger(__name__)


class FeatureEventsConsumer:
    """Background component (``start()``/``stop()``) ingesting ``features.events`` in batches.

    Args:
        handlers: the use cases.
        kafka: broker settings (batch size = ``batch_max_records``).
        group: consumer group; the dead-letter topic is ``<prefix><group>.dlq``.
        meter: where the ``gyre_features_ingested_events`` counter goes (attribute ``outcome``:
            inserted, merged, replayed, rejected); none when omitted.
        consumer_options: extra ``Consumer`` keyword arguments (tests shorten timeouts).
    """

    def __init__(self, handlers: FeaturesHandlers, kafka: KafkaSettings, group: str = "features",
                 meter: Meter | None = None, **consumer_options: object) -> None:
        self.handlers = handlers
        self._events = meter.create_counter(
            "gyre_features_ingested_events", unit="1",
            description="Feature events consumed, by outcome (inserted, merged, replayed, rejected)",
        ) if meter is not None else None
        self.kafka = kafka
        self.consumer = Consumer(kafka, group=group, topics=[topics.FEATURES_EVENTS], service="features",
                                 batch_handler=self.handle_batch, **consumer_options)  # type: ignore[arg-type]
        self.rejected = 0
        self._producer: AIOKafkaProducer | None = None
        self._stack = AsyncExitStack()

    async def start(self) -> None:
        """Connect the dead-letter producer, join the group and start consuming."""
        producer = AIOKafkaProducer(**producer_config(self.kafka, f"{self.kafka.client_id}-features-dlq"))  # type: ignore[arg-type]
        await producer.start()
        self._stack.push_async_callback(producer.stop)
        self._producer = producer
        await self._stack.enter_async_context(self.consumer)

    async def stop(self) -> None:
        """Finish the in-flight batch, commit its offsets, disconnect."""
        await self._stack.aclose()
        self._producer = None

    async def handle_batch(self, envelopes: list[Envelope]) -> None:
        """Store the valid events of a batch; dead-letter the invalid ones (raises on database errors)."""
        events = []
        for env in envelopes:
            assert isinstance(env.message, events_pb2.FeatureEvent)
            events.append(raw_event(env.message, env.ce_id, env.time))
        report = await self.handlers.ingest(events)
        if report.rejected:
            await asyncio.gather(*(self._dead_letter(envelopes[r.index], r.error.reason, r.error.detail)
                                   for r in report.rejected))
            self.rejected += len(report.rejected)
        if self._events is not None:
            result = report.result
            for outcome, count in (("inserted", result.inserted), ("merged", result.merged),
                                   ("replayed", result.unchanged), ("rejected", len(report.rejected))):
                if count:
                    self._events.add(count, {"outcome": outcome})
        if report.result.inserted or report.result.merged:
            log.debug("ingested %d new, %d merged, %d replayed feature events", report.result.inserted,
                      report.result.merged, report.result.unchanged)

    async def _dead_letter(self, env: Envelope, reason: str, detail: str) -> None:
        producer = self._producer
        assert producer is not None
        # The bus hands over the decoded message, not the record's bytes: re-encode it in the
        # encoding it arrived in (proto3 JSON re-encoding keeps every field, in canonical form).
        payload = encode_json(env.message) if env.content_type == JSON else env.message.SerializeToString()
        headers = dead_letter_headers(list(env.headers.items()), reason=reason, error=detail, topic=env.topic,
                                      partition=env.partition, offset=env.offset, group=self.consumer.group,
                                      attempts=1)
        key = None if env.key is None else env.key.encode("utf-8")
        await producer.send_and_wait(self.consumer.dead_letter_topic, payload, key=key, headers=headers)
        log.warning("dead-lettered feature event %s[%d]@%d: %s: %s", env.topic, env.partition, env.offset,
                    reason, detail)
