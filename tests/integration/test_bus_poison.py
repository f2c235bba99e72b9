"""The bus never stalls on one record, on a real Tansu broker: poison records, a batch that fails
for one record, an outage that is waited out, and a dead letter too large for the broker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from google.protobuf import json_format
from support.kafka import fast_kafka, read_topic
from support.waiting import wait_until

from gyre_common.bus import Consumer, ConsumerStalled, DeadLetter, Envelope, Publisher, ensure_topics
from gyre_common.settings import KafkaSettings
from gyre_common.topics import FEATURES_EVENTS, dead_letter_topic
from gyre_contracts.gyre.events.v1 import events_pb2 as ev

pytestmark = pytest.mark.integration

REPORTED_CE_TIME = b"9999-12-31T23:59:59-23:59"


@pytest.fixture
def settings(bootstrap_servers: str, unique: str) -> KafkaSettings:
    return fast_kafka(bootstrap_servers, f"p{unique}.", max_retries=2, retry_backoff_ms=10, default_partitions=1)


@pytest.fixture
async def raw(settings: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    """A plain producer, as an outside team would use (no Gyre headers unless given)."""
    await ensure_topics(settings, [FEATURES_EVENTS])
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all",
                                max_request_size=4 * 1024 * 1024)
    await producer.start()
    yield producer
    await producer.stop()


def feature_json(entity: str) -> bytes:
    event = ev.FeatureEvent(feature_view="fv", entity_id=entity)
    event.values["x"].double_value = 1.0
    return json_format.MessageToJson(event, indent=None).encode()


async def test_poison_records_are_dead_lettered_with_their_reason_and_the_consumer_goes_on(
    settings: KafkaSettings, raw: AIOKafkaProducer
) -> None:
    topic = f"{settings.topic_prefix}{FEATURES_EVENTS}"
    json_type = [("content-type", b"application/json")]
    await raw.send_and_wait(topic, feature_json("good-1"), key=b"good-1", headers=json_type)
    bad_time = await raw.send_and_wait(topic, feature_json("bad-time"), key=b"bad-time",
                                       headers=[("ce_time", REPORTED_CE_TIME), *json_type])
    bad_body = await raw.send_and_wait(topic, b"\x08\x96\x01\xff\xff not an event", key=b"bad-body")
    await raw.send_and_wait(topic, feature_json("good-2"), key=b"good-2", headers=json_type)
    stored: list[str] = []

    async def store(envs: list[Envelope]) -> None:
        stored.extend(env.message.entity_id for env in envs)

    async with Consumer(settings, group="ingest", topics=[FEATURES_EVENTS], service="t",
                        batch_handler=store) as consumer:
        await wait_until(lambda: len(stored) == 2 and consumer.stats.dead_lettered == 2, what="good + dead letters")
        # Still running: what comes after the poison is stored too.
        await raw.send_and_wait(topic, feature_json("good-3"), key=b"good-3", headers=json_type)
        await wait_until(lambda: "good-3" in stored, what="the event after the poison")
        assert consumer.running
        await consumer.check_progress()
    assert stored == ["good-1", "good-2", "good-3"]
    dead = await read_topic(settings, dead_letter_topic("ingest", settings.topic_prefix), 2)
    by_offset = {int(dict(d.headers)["gyre_dlq_offset"]): dict(d.headers) for d in dead}
    assert by_offset[bad_time.offset]["gyre_dlq_reason"] == b"bad_header"
    assert REPORTED_CE_TIME in by_offset[bad_time.offset]["gyre_dlq_error"]
    assert by_offset[bad_time.offset]["ce_time"] == REPORTED_CE_TIME  # original headers kept
    assert by_offset[bad_body.offset]["gyre_dlq_reason"] == b"decode_error"
    assert by_offset[bad_body.offset]["gyre_dlq_attempts"] == b"0"


async def test_a_batch_failing_for_one_record_is_split_and_only_that_record_is_dead_lettered(
    settings: KafkaSettings
) -> None:
    names = [f"e{i}" for i in range(40)]
    names[23] = "bad"
    async with Publisher(settings, service="t") as pub:
        await pub.publish_many(FEATURES_EVENTS, [("same-key", ev.FeatureEvent(feature_view="fv", entity_id=n))
                                                 for n in names])
    stored: dict[str, int] = {}
    sizes: list[int] = []

    async def store(envs: list[Envelope]) -> None:
        # All or nothing, like a batch written in one transaction.
        sizes.append(len(envs))
        if any(env.message.entity_id == "bad" for env in envs):
            raise RuntimeError("constraint the handler did not expect")
        for env in envs:
            stored[env.message.entity_id] = stored.get(env.message.entity_id, 0) + 1

    async with Consumer(settings, group="split", topics=[FEATURES_EVENTS], service="t",
                        batch_handler=store) as consumer:
        await wait_until(lambda: len(stored) == 39 and consumer.stats.dead_lettered == 1, what="39 stored + 1 DLQ")
    assert set(stored) == set(names) - {"bad"}
    assert set(stored.values()) == {1}  # a failed batch wrote nothing, so each good record landed once
    assert max(sizes) > 1 and consumer.stats.splits >= 1
    [dead] = await read_topic(settings, dead_letter_topic("split", settings.topic_prefix), 1)
    headers = dict(dead.headers)
    assert ev.FeatureEvent.FromString(dead.value).entity_id == "bad"
    assert headers["gyre_dlq_reason"] == b"handler_failed"
    assert headers["gyre_dlq_attempts"] == str(settings.max_retries + 1).encode()


async def test_a_database_outage_is_waited_out_not_dead_lettered_and_shows_in_readiness(
    settings: KafkaSettings
) -> None:
    down = True
    stored: list[str] = []

    async def store(env: Envelope) -> None:
        if down:
            raise asyncpg.CannotConnectNowError("the database system is shutting down")
        stored.append(env.message.entity_id)

    async with Publisher(settings, service="t") as pub:
        await pub.publish_many(FEATURES_EVENTS, [("k", ev.FeatureEvent(feature_view="fv", entity_id=f"e{i}"))
                                                 for i in range(3)])
    async with Consumer(settings, group="outage", topics=[FEATURES_EVENTS], service="t", handler=store,
                        stall_after_s=0.3) as consumer:
        await wait_until(lambda: consumer.stats.transient_waits > settings.max_retries + 2, what="waiting")

        async def stalled() -> bool:
            try:
                await consumer.check_progress()
            except ConsumerStalled as exc:
                assert "CannotConnectNowError" in str(exc)
                return True
            return False

        await wait_until(stalled, what="readiness to report the stall")
        assert consumer.stats.dead_lettered == 0
        down = False
        await wait_until(lambda: len(stored) == 3, what="the records once the database is back")
        await consumer.check_progress()
    assert stored == ["e0", "e1", "e2"] and consumer.stats.dead_lettered == 0


async def test_a_dead_letter_too_large_for_the_broker_goes_with_its_value_cut(
    settings: KafkaSettings, raw: AIOKafkaProducer
) -> None:
    topic = f"{settings.topic_prefix}{FEATURES_EVENTS}"
    # Near aiokafka's 1 MiB request limit: with the gyre_dlq_* headers added it would not fit.
    event = ev.FeatureEvent(feature_view="fv", entity_id="huge", source="x" * 1_045_000)
    body = event.SerializeToString()
    sent = await raw.send_and_wait(topic, body, key=b"huge", headers=[("ce_id", b"huge-1")])

    async def refuse(env: Envelope) -> None:
        raise DeadLetter("too_big_to_store", "source is over the column limit")

    async with Consumer(settings, group="big", topics=[FEATURES_EVENTS], service="t", handler=refuse,
                        max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=8 * 1024 * 1024) as consumer:
        await wait_until(lambda: consumer.stats.dead_lettered == 1, what="the dead letter")
        assert consumer.stats.dead_letters_cut == 1
    [dead] = await read_topic(settings, dead_letter_topic("big", settings.topic_prefix), 1)
    headers = dict(dead.headers)
    assert headers["gyre_dlq_reason"] == b"too_big_to_store"
    assert headers["gyre_dlq_offset"] == str(sent.offset).encode() and headers["ce_id"] == b"huge-1"
    assert dead.value is not None and 0 < len(dead.value) < len(body) and body.startswith(dead.value)
    assert f"cut from {len(body)}".encode() in headers["gyre_dlq_cut"]


async def test_stop_while_waiting_out_an_outage_is_prompt_and_commits_nothing_unhandled(
    settings: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    async def store(env: Envelope) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    async with Publisher(settings, service="t") as pub:
        await pub.publish(FEATURES_EVENTS, ev.FeatureEvent(feature_view="fv", entity_id="e"), key="k")
    consumer = Consumer(settings, group="stop", topics=[FEATURES_EVENTS], service="t", handler=store)
    await consumer.start()
    await wait_until(lambda: consumer.stats.transient_waits >= 2, what="waiting")
    await consumer.stop(grace_s=30)
    # The wait ended at the stop request instead of running into the grace period.
    assert "did not finish within" not in caplog.text
    assert consumer.stats.dead_lettered == 0 and consumer.stats.commits == 0
