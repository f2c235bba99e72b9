"""The registry's outbox keeps events while the broker is away and publishes them when it returns.

Uses a Tansu of its own (the session broker must not go down). Tansu keeps everything in memory,
so after the restart the topic is created again and only events published afterwards are there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from google.protobuf import json_format
from support.waiting import wait_until

from gyre_common.artifacts import LocalArtifactStore
from gyre_common.bus import Envelope, decode_record, ensure_topics
from gyre_common.outbox import OutboxRelay
from gyre_common.runner import ServiceRunner
from gyre_common.settings import DatabaseSettings, KafkaSettings, TelemetrySettings
from gyre_common.topics import REGISTRY_EVENTS, full_name
from gyre_contracts.gyre.events.v1 import common_pb2
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.gyre.registry.v1 import registry_service_pb2 as pb
from gyre_registry.bootstrap import bootstrap
from gyre_registry.service import SPEC
from gyre_registry.settings import RegistrySettings
from gyre_stack.broker import start_broker, start_broker_on_free_port

pytestmark = pytest.mark.integration


async def read_events(kafka: KafkaSettings, until: Callable[[list[ev.RegistryEvent]], bool],
                      within_s: float = 30.0) -> list[Envelope]:
    """Read registry.events from the beginning until ``until(events)`` holds."""
    consumer = AIOKafkaConsumer(full_name(REGISTRY_EVENTS, kafka.topic_prefix),
                                bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    envelopes: list[Envelope] = []
    try:
        deadline = time.monotonic() + within_s
        while not until([e.message for e in envelopes]):  # type: ignore[misc]
            assert time.monotonic() < deadline, f"events so far: {[e.message for e in envelopes]}"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                envelopes.extend(decode_record(r, kafka.topic_prefix) for r in records)
    finally:
        await consumer.stop()
    return envelopes


def has(kind: int, version: int) -> Callable[[list[ev.RegistryEvent]], bool]:
    return lambda events: any(e.kind == kind and e.version == version for e in events)


def registration(store: LocalArtifactStore, model: str, accuracy: float) -> pb.CreateModelVersionRequest:
    ref = store.put(f"model {model} {accuracy}".encode())
    return pb.CreateModelVersionRequest(
        model_name=model,
        artifact=common_pb2.ArtifactRef(uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size, format="skops"),
        lineage=common_pb2.Lineage(metrics={"holdout_accuracy": accuracy}),
        evaluation=pb.HoldoutEvaluation(primary_metric="holdout_accuracy", holdout_id="h" * 64),
    )


async def test_events_written_while_the_broker_is_down_arrive_after_it_returns(
        database_url: str, tmp_path: Path, unique: str) -> None:
    broker = start_broker_on_free_port(tmp_path / "tansu.log")
    port = broker.port
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", topic_prefix=f"o{unique}.", default_partitions=1,
                          request_timeout_ms=3000, linger_ms=1, retry_backoff_ms=50)
    settings = RegistrySettings(http_port=0, grpc_port=0, readiness_interval_s=0.2, shutdown_grace_s=3,
                                outbox_poll_interval_s=0.2, outbox_max_backoff_s=0.5)
    runner = ServiceRunner(SPEC, bootstrap, settings=settings, kafka=kafka,
                           database=DatabaseSettings(url=database_url), telemetry_settings=TelemetrySettings())
    store = LocalArtifactStore(tmp_path / "artifacts")
    model = f"outage-{unique}"
    db = await asyncpg.connect(database_url)
    try:
        await ensure_topics(kafka, [REGISTRY_EVENTS])
        await runner.start()
        assert runner.context is not None
        relay = dict(runner.context.tasks)["outbox-relay"]
        assert isinstance(relay, OutboxRelay)
        # The gRPC API is covered elsewhere; this test registers through the REST mirror.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.http_port}") as http:

            async def register(accuracy: float) -> int:
                body = json_format.MessageToDict(registration(store, model, accuracy))
                reply = await http.post(f"/api/v1/registered-models/{model}/versions", json=body)
                assert reply.status_code == 201, reply.text
                return int(reply.json()["modelVersion"]["version"])

            async def unsent() -> int:
                return int(await db.fetchval("SELECT count(*) FROM registry.outbox WHERE published_at IS NULL"))

            async def drained() -> bool:
                return await unsent() == 0

            assert await register(0.8) == 1
            await read_events(kafka, has(ev.REGISTRY_EVENT_KIND_ALIAS_SET, 1))
            await wait_until(drained, 10, "the outbox to drain")

            broker.stop()
            assert await register(0.9) == 2  # the registry keeps working without the broker
            assert await unsent() == 2  # VERSION_CREATED and ALIAS_SET of version 2 wait in the outbox

            # Wait until the relay gave up on its in-flight batch: Tansu keeps topics in memory, and
            # a batch still being retried when it comes back would land in a topic that no longer
            # exists (real Kafka answers UNKNOWN_TOPIC_OR_PARTITION instead of losing it).
            await wait_until(lambda: relay.last_error is not None, 20, "the relay to notice the outage")
            assert await unsent() == 2

            broker = start_broker(port, tmp_path / "tansu.log")  # in-memory: a fresh, empty broker
            await ensure_topics(kafka, [REGISTRY_EVENTS])
            envelopes = await read_events(
                kafka,
                lambda events: has(ev.REGISTRY_EVENT_KIND_VERSION_CREATED, 2)(events)
                and has(ev.REGISTRY_EVENT_KIND_ALIAS_SET, 2)(events),
            )
            alias_set = next(e.message for e in envelopes if e.message.kind == ev.REGISTRY_EVENT_KIND_ALIAS_SET)  # type: ignore[attr-defined]
            assert (alias_set.version, alias_set.previous_version) == (2, 1)  # type: ignore[attr-defined]
            published_ids = {e.ce_id for e in envelopes}
            rows = await db.fetch("SELECT event_id FROM registry.outbox ORDER BY seq DESC LIMIT 2")
            assert {r["event_id"] for r in rows} <= published_ids  # ce_id is the outbox event id
            await wait_until(drained, 10, "the outbox to drain")
    finally:
        await runner.stop()
        await db.close()
        broker.stop()


async def test_an_undecodable_row_is_set_aside_and_the_rows_after_it_are_published(
        database_url: str, bootstrap_servers: str, unique: str) -> None:
    """gyre_common.outbox (shared by every service): a poison row must not block the rows after it."""
    from gyre_common.bus import Publisher
    from gyre_common.outbox import DEAD_EVENTS, OUTBOX_DDL, add_events, unsent_events
    from gyre_common.outbox import OutboxEvent as Queued

    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=f"p{unique}.", default_partitions=1,
                          linger_ms=1)
    await ensure_topics(kafka, [REGISTRY_EVENTS])
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    relay = OutboxRelay(pool, lambda: Publisher(kafka, service="test"), poll_interval_s=0.1)
    try:
        await pool.execute(OUTBOX_DDL)
        async with pool.acquire() as conn, conn.transaction():
            await add_events(conn, [Queued(REGISTRY_EVENTS, ev.RegistryEvent(model_name="m", version=1), "m", "e1"),
                                   Queued(REGISTRY_EVENTS, b"\xff\xff\xff", "m", "poison")])
            await conn.execute("INSERT INTO outbox (event_id, topic, event_type, message_key, payload, occurred_at) "
                               "VALUES ('stray', 'no.such.topic', 'x.Y', 'm', '', now())")
            await add_events(conn, [Queued(REGISTRY_EVENTS, ev.RegistryEvent(model_name="m", version=v), "m",
                                           f"e{v}") for v in (2, 3)] + [
                Queued(REGISTRY_EVENTS, ev.RegistryEvent(model_name="m", version=1), "m", "e1")])  # a repeat
        with pytest.raises(ValueError, match="carries"):
            async with pool.acquire() as conn:
                await add_events(conn, [Queued(REGISTRY_EVENTS, ev.TrainingEvent(), "m")])
        before = DEAD_EVENTS.labels("outbox", REGISTRY_EVENTS)._value.get()
        assert await relay.relay_once() == 3
        assert relay.dead_events == 2 and await relay.dead() == 2 and await relay.pending() == 0
        assert DEAD_EVENTS.labels("outbox", REGISTRY_EVENTS)._value.get() == before + 1
        failed = await pool.fetch("SELECT event_id, error FROM outbox WHERE failed_at IS NOT NULL ORDER BY seq")
        assert [r["event_id"] for r in failed] == ["poison", "stray"] and "DecodeError" in failed[0]["error"]
        assert await unsent_events(pool) == []
        events = await read_events(kafka, has(ev.REGISTRY_EVENT_KIND_UNSPECIFIED, 3))
        assert [(e.ce_id, e.message.version) for e in events] == [("e1", 1), ("e2", 2), ("e3", 3)]  # type: ignore[attr-defined]
    finally:
        await relay.stop()
        await pool.close()
