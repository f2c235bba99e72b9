"""Following ``registry.events`` on every replica, and reading the registry's state at start-up.

Every serving replica must see every registry event, so this is not a consumer-group member: it
assigns itself all partitions of the topic (no group, no offsets committed, no dead-letter topic)
and starts at their end. The state before that point comes from the registry itself: once the
positions are fixed, it asks the registry (gRPC) which version the alias points at for each model.
Anything that changed after the positions were fixed arrives as an event and is applied after the
snapshot, so a restart never depends on replaying the topic. The snapshot is re-read every
``resync_interval_s`` to heal events missed while the broker was away.

Records that cannot be decoded are logged, counted (``gyre_serving_registry_events{outcome=
"undecodable"}``) and skipped: serving has no business dead-lettering the registry's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from gyre_common.bus import EventDecodeError, decode_record, ensure_topics
from gyre_common.settings import KafkaSettings
from gyre_common.topics import REGISTRY_EVENTS, full_name
from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_serving import metrics
from gyre_serving.handlers import AliasManagers, ModelManager

log = logging.getLogger(__name__)

Snapshot = Callable[[], Awaitable[Any]]
"""Reads the registry's alias state: model -> version the alias points at (None: no alias) for a
:class:`ModelManager`; alias -> that mapping for :class:`AliasManagers`."""


class RegistryEventsFollower:
    """Keeps :class:`ModelManager` in step with the registry. Run :meth:`run` as a background task.

    Args:
        kafka: broker settings (address, topic prefix, timeouts).
        manager: applies events and snapshots.
        snapshot: reads the registry's state; None when there is no registry to ask (events only).
        snapshot_complete: the snapshot lists every model that has the alias (so served models it
            leaves out lost the alias), i.e. no explicit model list was configured.
        resync_interval_s: seconds between snapshot re-reads after the first success; 0: never.
        retry_delay_s: first wait after a failure (broker or registry), doubling up to 5 s.
        client_id: Kafka client id.
    """

    def __init__(self, kafka: KafkaSettings, manager: ModelManager | AliasManagers, snapshot: Snapshot | None, *,
                 snapshot_complete: bool, resync_interval_s: float, retry_delay_s: float = 0.5,
                 poll_timeout_ms: int = 250, client_id: str = "gyre-serving-registry") -> None:
        self.kafka = kafka
        self.manager = manager
        self._snapshot = snapshot
        self._complete = snapshot_complete
        self._resync_s = resync_interval_s
        self._retry_delay_s = retry_delay_s
        self._poll_timeout_ms = poll_timeout_ms
        self._client_id = client_id
        self.topic = full_name(REGISTRY_EVENTS, kafka.topic_prefix)
        self.positioned = False
        """True once the partitions are assigned and their end positions fixed."""
        self.synced = snapshot is None
        """True once the registry's state was applied (always True without a registry)."""

    async def run(self) -> None:
        """Connect, read the registry's state, then follow the topic until cancelled. Broker and
        registry failures are logged and retried; this only returns by cancellation."""
        consumer = await self._connect()
        loop = asyncio.get_running_loop()
        next_sync = loop.time()
        failures = 0
        try:
            while True:
                if self._snapshot is not None and loop.time() >= next_sync:
                    next_sync = loop.time() + await self._sync()
                try:
                    batch = await consumer.getmany(timeout_ms=self._poll_timeout_ms)
                    failures = 0
                except KafkaError as exc:
                    failures += 1
                    log.warning("reading %s failed, backing off: %r", self.topic, exc)
                    await asyncio.sleep(self._delay(failures))
                    continue
                for partition in sorted(batch, key=lambda tp: tp.partition):
                    for record in batch[partition]:
                        await self._handle(record)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _delay(self, failures: int) -> float:
        return float(min(self._retry_delay_s * 2 ** min(failures - 1, 10), 5.0))

    async def _connect(self) -> AIOKafkaConsumer:
        failures = 0
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.kafka.bootstrap_servers,
                client_id=self._client_id,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="latest",
                request_timeout_ms=self.kafka.request_timeout_ms,
                retry_backoff_ms=self.kafka.retry_backoff_ms,
            )
            try:
                await ensure_topics(self.kafka, [REGISTRY_EVENTS])
                await consumer.start()
                await consumer.topics()  # loads the topic's metadata, so its partitions are known
                partitions = consumer.partitions_for_topic(self.topic) or set()
                if not partitions:
                    raise KafkaError(f"{self.topic} has no partitions yet")
                assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
                consumer.assign(assigned)
                await consumer.seek_to_end(*assigned)
                for tp in assigned:
                    await consumer.position(tp)  # resolve "end" now: later events are ours to apply
            except (KafkaError, OSError) as exc:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                failures += 1
                delay = self._delay(failures)
                log.warning("cannot follow %s yet (%r); retrying in %.1fs", self.topic, exc, delay)
                await asyncio.sleep(delay)
                continue
            self.positioned = True
            log.info("following %s from its end on %d partitions", self.topic, len(assigned))
            return consumer

    async def _sync(self) -> float:
        """Apply the registry's state; returns seconds until the next attempt."""
        assert self._snapshot is not None
        try:
            snapshot = await self._snapshot()
        except Exception as exc:
            log.warning("cannot read the registry's aliases (%s); retrying, following events meanwhile",
                        _short(exc))
            return self._retry_delay_s * 4
        await self.manager.sync(snapshot, complete=self._complete)
        if not self.synced:
            log.info("registry state applied (alias %r)", self.manager.alias)
        self.synced = True
        return self._resync_s if self._resync_s > 0 else math.inf

    async def _handle(self, record: ConsumerRecord) -> None:
        try:
            envelope = decode_record(record, self.kafka.topic_prefix)
        except EventDecodeError as exc:
            metrics.REGISTRY_EVENTS.labels("undecodable").inc()
            log.error("skipping undecodable record %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)
            return
        event = envelope.message
        assert isinstance(event, events_pb2.RegistryEvent)
        try:
            applied = await self.manager.apply_event(event)
        except Exception:  # a bug on one event must not stop the following of the others
            metrics.REGISTRY_EVENTS.labels("failed").inc()
            log.exception("applying registry event %s failed", envelope.ce_id)
            return
        metrics.REGISTRY_EVENTS.labels("applied" if applied else "ignored").inc()


def _short(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    code = getattr(exc, "code", None)
    if callable(details) and callable(code):
        return f"{code()}: {details()}"
    return repr(exc)
