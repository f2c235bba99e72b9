"""At-least-once ingestion: a crash between the database commit and the offset commit, and a
features process killed with SIGKILL mid-stream, neither lose nor double-apply an event."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from support.process import ServiceProcess

from gyre_common.bus import Consumer, ensure_topics
from gyre_common.db import migrate
from gyre_common.settings import KafkaSettings
from gyre_common.topics import FEATURES_EVENTS
from gyre_features.consumers import FeatureEventsAdapter
from gyre_features.domain.events import RawFeatureEvent
from gyre_features.domain.values import ValueType
from gyre_features.domain.views import FeatureSpec, FeatureView
from gyre_features.handlers import FeaturesHandlers, IngestReport
from gyre_features.store import PostgresStore

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 1, tzinfo=UTC)
VIEW = FeatureView("meter", "device", (FeatureSpec("reading", ValueType.FLOAT), FeatureSpec("seq", ValueType.INT)))
ENTITIES = 20


def payload(i: int) -> bytes:
    """Event i: device i % 20, one minute after event i - 20 of the same device."""
    return json.dumps({
        "featureView": "meter", "entityId": f"d{i % ENTITIES}",
        "eventTime": (T0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
        "values": {"reading": {"doubleValue": i / 10}, "seq": {"int64Value": str(i)}},
    }).encode()


async def produce(kafka: KafkaSettings, first: int, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", enable_idempotence=False,
                                linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(f"{kafka.topic_prefix}{FEATURES_EVENTS}", payload(i),
                                       key=f"d{i % ENTITIES}".encode(), headers=[("content-type", b"application/json")])
                   for i in range(first, first + count)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def wait_for_count(pool: asyncpg.Pool, at_least: int, within_s: float = 60.0) -> int:
    deadline = time.monotonic() + within_s
    while True:
        count = int(await pool.fetchval("SELECT count(*) FROM offline_events"))
        if count >= at_least:
            return count
        assert time.monotonic() < deadline, f"{count} of {at_least} events stored"
        await asyncio.sleep(0.02)


async def assert_exact_state(pool: asyncpg.Pool, total: int) -> None:
    rows = await pool.fetch("SELECT entity_id, event_time, feature_values FROM offline_events")
    assert len(rows) == total
    seqs = sorted(json.loads(r["feature_values"])["seq"] for r in rows)
    assert seqs == list(range(total))  # every event once: none lost, none duplicated
    online = await pool.fetch("SELECT entity_id, state FROM online_features")
    latest = {f"d{e}": max(i for i in range(total) if i % ENTITIES == e) for e in range(ENTITIES)}
    assert {r["entity_id"]: json.loads(r["state"])["seq"][0] for r in online} == latest


@pytest.fixture
def kafka(bootstrap_servers: str, unique: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=f"rd{unique}.", default_partitions=2,
                         session_timeout_ms=2000, heartbeat_interval_ms=300, batch_max_records=25)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url, "features", "gyre_features.migrations")
    created = await asyncpg.create_pool(database_url, min_size=1, max_size=4,
                                        server_settings={"search_path": "features, public"})
    await PostgresStore(created).save_view(VIEW)
    try:
        yield created
    finally:
        await created.close()


async def test_a_batch_stored_but_not_committed_is_redelivered_and_not_applied_twice(
        kafka: KafkaSettings, pool: asyncpg.Pool) -> None:
    await ensure_topics(kafka, [FEATURES_EVENTS], dead_letter_groups=["features"])
    await produce(kafka, 0, 100)
    reports: list[IngestReport] = []
    stuck = asyncio.Event()

    class CrashAfterStoring(FeaturesHandlers):
        """Stores the third batch, then hangs before the bus can commit its offsets."""

        async def ingest(self, events: list[RawFeatureEvent]) -> IngestReport:  # type: ignore[override]
            report = await super().ingest(events)
            reports.append(report)
            if len(reports) == 3:
                stuck.set()
                await asyncio.Event().wait()
            return report

    first = Consumer(kafka, group="features", topics=[FEATURES_EVENTS], service="features",
                     batch_handler=FeatureEventsAdapter(CrashAfterStoring(PostgresStore(pool))))
    await first.start()
    await asyncio.wait_for(stuck.wait(), 30)
    stored_before_crash = sum(r.result.inserted for r in reports)
    await first.abort()  # like a crash: nothing more is committed
    await first.stop()

    replays: list[IngestReport] = []

    class Recording(FeaturesHandlers):
        async def ingest(self, events: list[RawFeatureEvent]) -> IngestReport:  # type: ignore[override]
            report = await super().ingest(events)
            replays.append(report)
            return report

    second = Consumer(kafka, group="features", topics=[FEATURES_EVENTS], service="features",
                      batch_handler=FeatureEventsAdapter(Recording(PostgresStore(pool))))
    await second.start()
    try:
        await wait_for_count(pool, 100)
        stuck_batch = reports[-1].result.inserted
        deadline = time.monotonic() + 10
        while sum(r.result.unchanged for r in replays) < stuck_batch:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
    finally:
        await second.stop()
    # The stuck batch was redelivered: its events came back and were recognised as replays.
    assert stuck_batch > 0 and sum(r.result.unchanged for r in replays) == stuck_batch
    assert sum(r.result.inserted for r in replays) == 100 - stored_before_crash
    await assert_exact_state(pool, 100)


async def test_a_killed_service_resumes_without_loss_or_duplicates(
        kafka: KafkaSettings, pool: asyncpg.Pool, database_url: str) -> None:
    total = 3000
    await ensure_topics(kafka, [FEATURES_EVENTS], dead_letter_groups=["features"])
    await produce(kafka, 0, total)
    env = {
        "GYRE_DATABASE_URL": database_url,
        "GYRE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "GYRE_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "GYRE_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "GYRE_KAFKA_HEARTBEAT_INTERVAL_MS": "300",
        "GYRE_KAFKA_BATCH_MAX_RECORDS": "25",
        "GYRE_FEATURES_HTTP_PORT": "0",
        "GYRE_FEATURES_GRPC_PORT": "0",
    }
    first = ServiceProcess("gyre_features", env)
    try:
        first.wait_ready_line(60)
        await wait_for_count(pool, 200)
    finally:
        first.kill()  # SIGKILL: no shutdown, no final commit
    stored = int(await pool.fetchval("SELECT count(*) FROM offline_events"))
    assert stored < total, "the service finished before it was killed; the test proves nothing"

    second = ServiceProcess("gyre_features", env)
    try:
        second.wait_ready_line(60)
        await wait_for_count(pool, total, within_s=120)
    finally:
        second.terminate()
        second.wait(30)
    await assert_exact_state(pool, total)
