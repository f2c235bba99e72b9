"""Following ``registry.events`` on every replica, and reading the registry's state at start-up.

Every serving replica must see every registry event, so this is not a consumer-group member: it
assigns itself all partitions of the topic (no group, no offsets committed, no dead-letter topic)
and starts at their end. The state before that point comes from the registry itself: once the
positions are fixed, it asks the registry (gRPC) which version the alias points at for each model.
Anything that changed after the positions were fixed arrives as an event and is applied after the
snapshot, so a restart never depends on replaying the topic. The snapshot is re-read every
``resync_interval_s`` to heal events missed while the broker was away.

Nothing a record holds can stop the follower (serving has no business dead-lettering the
registry's events); each record ends in one ``gyre_serving_registry_events{outcome}``:

* ``undecodable``: not a ``RegistryEvent`` (bad payload, headers, content type, or a decoder bug);
* ``invalid``: decoded, but naming no model, a version below 1, or an artifact sha256 that is
  not 64 hex digits;
* ``failed``: applying it raised (a bug, or the registry lookup failed);
* ``applied`` / ``ignored``: it concerned what this replica serves, or not. A version that cannot
  be loaded (missing artifact, sha256 mismatch, not a model) is ``applied`` here and refused by
  the :class:`ModelManager`, which counts it in ``gyre_serving_model_loads{outcome}``.

In every case but ``applied`` the version already served keeps serving. Errors while reading
the topic or applying the registry's snapshot are logged and retried with back-off.
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
from gyre_common.retry import backoff_s
from gyre_common.settings import KafkaSettings
from gyre_common.topics import REGISTRY_EVENTS, full_name
from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_serving import metrics
from gyre_serving.convert import change_from_event
from gyre_serving.models import AliasManagers, ModelManager

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
                except Exception:  # not the broker's usual failures: log it whole, but keep following
                    failures += 1
                    log.exception("reading %s failed unexpectedly, backing off", self.topic)
                    await asyncio.sleep(self._delay(failures))
                    continue
                for partition in sorted(batch, key=lambda tp: tp.partition):
                    for record in batch[partition]:
                        await self._handle(record)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _delay(self, failures: int) -> float:
        return backoff_s(failures, first_s=self._retry_delay_s, max_s=5.0)

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
        try:
            await self.manager.sync(snapshot, complete=self._complete)
        except Exception:  # a bug on one model must not stop the following of the others
            log.exception("applying the registry's aliases failed; retrying, following events meanwhile")
            return self._retry_delay_s * 4
        if not self.synced:
            log.info("registry state applied (alias %r)", self.manager.alias)
        self.synced = True
        return self._resync_s if self._resync_s > 0 else math.inf

    async def _handle(self, record: ConsumerRecord) -> None:
        """Apply one record; never raises (see the module docstring for what is counted how)."""
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        try:
            envelope = decode_record(record, self.kafka.topic_prefix)
            event = envelope.message
            if not isinstance(event, events_pb2.RegistryEvent):
                raise EventDecodeError("type_mismatch", f"{type(event).__name__}, not a RegistryEvent")
        except Exception as exc:  # EventDecodeError, or a decoder bug: the record is unusable either way
            metrics.REGISTRY_EVENTS.labels("undecodable").inc()
            log.error("skipping undecodable record %s: %s", where, exc)
            return
        problem = event_problem(event)
        if problem is not None:
            metrics.REGISTRY_EVENTS.labels("invalid").inc()
            log.error("skipping registry event %s (%s): %s; keeping what is served", envelope.ce_id, where, problem)
            return
        try:
            applied = await self.manager.apply(change_from_event(event))
        except Exception:  # a bug on one event must not stop the following of the others
            metrics.REGISTRY_EVENTS.labels("failed").inc()
            log.exception("applying registry event %s (%s) failed; keeping what is served", envelope.ce_id, where)
            return
        metrics.REGISTRY_EVENTS.labels("applied" if applied else "ignored").inc()


_VERSIONED = frozenset({events_pb2.REGISTRY_EVENT_KIND_VERSION_CREATED, events_pb2.REGISTRY_EVENT_KIND_ALIAS_SET,
                        events_pb2.REGISTRY_EVENT_KIND_VERSION_ARCHIVED})
_HEX = frozenset("0123456789abcdefABCDEF")


def event_problem(event: events_pb2.RegistryEvent) -> str | None:
    """Why ``event`` cannot be about anything serving could load, or None when it may be."""
    if not event.model_name:
        return "it names no model"
    if event.kind in _VERSIONED and event.version < 1:
        return f"version {event.version} of {event.model_name!r}: versions start at 1"
    sha256 = event.artifact.sha256 if event.HasField("artifact") else ""
    # An empty sha256 is left to the loader, which refuses to load what it cannot verify.
    if sha256 and not (len(sha256) == 64 and set(sha256) <= _HEX):
        return f"the artifact's sha256 {sha256[:80]!r} is not 64 hex digits"
    return None


def _short(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    code = getattr(exc, "code", None)
    if callable(details) and callable(code):
        return f"{code()}: {details()}"
    return repr(exc)
