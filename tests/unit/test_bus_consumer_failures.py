"""How the consumer treats failures, without a broker: the dead-letter producer is a fake and
batches are handed to the processing step directly (the real-broker versions are in
tests/integration/test_bus_poison.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError
from support.waiting import wait_until

from gyre_common.bus import Consumer, ConsumerStalled, DeadLetter, Envelope, Rejected
from gyre_common.bus import headers as h
from gyre_common.bus.consumer import _Listener
from gyre_common.bus.retry import RetryPolicy
from gyre_common.settings import KafkaSettings
from gyre_common.topics import FEATURES_EVENTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev

SETTINGS = KafkaSettings(topic_prefix="u.", max_retries=2, retry_backoff_ms=1)
TOPIC = "u.features.events"


class FakeProducer:
    """Records dead letters; raises the queued errors first."""

    def __init__(self, errors: Sequence[BaseException] = ()) -> None:
        self.sent: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = []
        self.errors = list(errors)

    async def send_and_wait(self, topic: str, value: bytes | None, key: bytes | None = None,
                            headers: list[tuple[str, bytes]] | None = None) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append((key, value, dict(headers or [])))


def record(offset: int, entity: str, *, partition: int = 0, value: bytes | None = None,
           headers: list[tuple[str, bytes]] | None = None) -> ConsumerRecord:
    event = ev.FeatureEvent(feature_view="fv", entity_id=entity)
    body = event.SerializeToString() if value is None else value
    return ConsumerRecord(TOPIC, partition, offset, 1_700_000_000_000, 0, entity.encode(), body, None, 0,
                          len(body), headers if headers is not None else [("ce_id", f"id-{entity}".encode())])


def consumer(producer: FakeProducer, **handlers: object) -> Consumer:
    made = Consumer(SETTINGS, group="g", topics=[FEATURES_EVENTS], service="t", stall_after_s=0.05,
                    retry=RetryPolicy(max_retries=2, backoff_ms=1), **handlers)  # type: ignore[arg-type]
    made._producer = producer  # type: ignore[assignment]
    return made


def batch(*records: ConsumerRecord) -> dict[TopicPartition, list[ConsumerRecord]]:
    out: dict[TopicPartition, list[ConsumerRecord]] = {}
    for rec in records:
        out.setdefault(TopicPartition(rec.topic, rec.partition), []).append(rec)
    return out


async def test_the_reported_ce_time_is_dead_lettered_and_the_rest_is_handled() -> None:
    producer = FakeProducer()
    handled: list[str] = []

    async def handle(envs: list[Envelope]) -> None:
        handled.extend(env.message.entity_id for env in envs)

    c = consumer(producer, batch_handler=handle)
    poison = record(1, "p", value=b'{"featureView": "fv", "entityId": "p"}',
                    headers=[("ce_time", b"9999-12-31T23:59:59-23:59"), ("content-type", b"application/json")])
    await c._process(batch(record(0, "a"), poison, record(2, "b")))
    assert handled == ["a", "b"]
    [(_, value, headers)] = producer.sent
    assert value == poison.value
    assert headers[h.DLQ_REASON] == b"bad_header" and b"out of range" in headers[h.DLQ_ERROR]
    assert c._pending == {TopicPartition(TOPIC, 0): 3}


async def test_a_failing_batch_is_split_until_the_bad_record_is_alone() -> None:
    producer = FakeProducer()
    calls: list[list[str]] = []
    stored: list[str] = []

    async def handle(envs: list[Envelope]) -> None:
        names = [env.message.entity_id for env in envs]
        calls.append(names)
        if "bad" in names:
            raise ValueError("x must be positive")  # permanent: no retries for the isolated record
        stored.extend(names)

    c = consumer(producer, batch_handler=handle)
    records = [record(i, f"e{i}") for i in range(16)]
    records[11] = record(11, "bad")
    await c._process(batch(*records))
    assert sorted(stored) == sorted(f"e{i}" for i in range(16) if i != 11)
    assert len(stored) == 15  # each good record stored exactly once
    assert len(calls) <= 2 * 4 + 1  # log2(16) levels, two calls each, plus the first
    [(_, _, headers)] = producer.sent
    assert headers[h.DLQ_REASON] == b"invalid_content" and headers[h.DLQ_OFFSET] == b"11"
    assert headers[h.DLQ_ATTEMPTS] == b"1"
    assert c.stats.splits == 4 and c.stats.retries == 0
    assert c._pending == {TopicPartition(TOPIC, 0): 16}


async def test_an_unknown_failure_of_the_isolated_record_is_retried_then_dead_lettered() -> None:
    producer = FakeProducer()
    singles = 0

    async def handle(envs: list[Envelope]) -> None:
        nonlocal singles
        if any(env.message.entity_id == "bad" for env in envs):
            singles += len(envs) == 1
            raise RuntimeError("bug")

    c = consumer(producer, batch_handler=handle)
    await c._process(batch(record(0, "a"), record(1, "bad"), record(2, "b")))
    assert singles == 3  # max_retries=2: three calls in all for the isolated record
    [(_, _, headers)] = producer.sent
    assert headers[h.DLQ_REASON] == b"handler_failed" and headers[h.DLQ_ATTEMPTS] == b"3"
    assert headers[h.DLQ_ERROR] == b"RuntimeError: bug"


async def test_rejected_and_dead_letter_keep_their_reasons() -> None:
    producer = FakeProducer()

    async def handle(envs: list[Envelope]) -> list[Rejected]:
        if len(envs) > 1 and any(env.message.entity_id == "refused" for env in envs):
            raise DeadLetter("unknown_feature", "cannot say which")
        return [Rejected(env, "param_conflict", "x") for env in envs if env.message.entity_id == "conflict"]

    c = consumer(producer, batch_handler=handle)
    await c._process(batch(record(0, "a"), record(1, "conflict"), record(2, "refused"), record(3, "b")))
    reasons = sorted(headers[h.DLQ_REASON] for _, _, headers in producer.sent)
    assert reasons == [b"param_conflict"]  # "refused" alone is handled (the batch-level refusal is gone)
    producer.sent.clear()

    async def per_event(env: Envelope) -> None:
        if env.message.entity_id == "refused":
            raise DeadLetter("unknown_feature", "no feature x")

    c = consumer(producer, handler=per_event)
    await c._process(batch(record(0, "refused"), record(1, "a")))
    [(_, _, headers)] = producer.sent
    assert (headers[h.DLQ_REASON], headers[h.DLQ_ERROR]) == (b"unknown_feature", b"no feature x")
    assert c.stats.retries == 0 and c.stats.handled == 1


async def test_an_outage_is_waited_out_never_dead_lettered_and_shows_as_a_stall() -> None:
    producer = FakeProducer()
    down = asyncio.Event()
    down.set()
    calls = 0

    async def handle(envs: list[Envelope]) -> None:
        nonlocal calls
        calls += 1
        if down.is_set():
            raise asyncpg.CannotConnectNowError("the database system is starting up")

    c = consumer(producer, batch_handler=handle)
    task = asyncio.create_task(c._process(batch(record(0, "a"), record(1, "b"))))
    # Well past max_retries: an outage does not use them up.
    await wait_until(lambda: c.stats.transient_waits >= 3, what="waits", interval_s=0.005)
    await wait_until(lambda: c.stalled_s() > 0.05, what="the stall", interval_s=0.005)
    with pytest.raises(ConsumerStalled, match=r"no progress.*CannotConnectNowError"):
        await c.check_progress()
    down.clear()
    await asyncio.wait_for(task, 10)
    assert producer.sent == [] and c.stats.handled == 2 and c.stats.splits == 0
    assert c.stalled_s() == 0.0
    await c.check_progress()


async def test_stop_during_an_outage_leaves_the_records_for_redelivery() -> None:
    async def handle(env: Envelope) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    c = consumer(FakeProducer(), handler=handle)
    task = asyncio.create_task(c._process(batch(record(0, "a"))))
    await wait_until(lambda: c.stats.transient_waits >= 1, what="a wait", interval_s=0.005)
    await c.stop()
    with pytest.raises(Exception) as caught:
        await asyncio.wait_for(task, 10)
    assert type(caught.value).__name__ == "_Abandoned"
    assert c._pending == {}


async def test_a_rebalance_during_an_outage_is_not_blocked_by_the_wait() -> None:
    async def handle(envs: list[Envelope]) -> None:
        raise asyncpg.TooManyConnectionsError("sorry, too many clients already")

    c = consumer(FakeProducer(), batch_handler=handle)

    async def poll_once() -> None:  # what the poll loop does: the batch runs under the batch lock
        async with c._batch_lock:
            await c._process(batch(record(0, "a")))

    task = asyncio.create_task(poll_once())
    await wait_until(lambda: c.stats.transient_waits >= 2, what="waits", interval_s=0.005)
    await asyncio.wait_for(_Listener(c).on_partitions_revoked({TopicPartition(TOPIC, 0)}), 10)
    with pytest.raises(Exception) as caught:
        await task
    assert type(caught.value).__name__ == "_Abandoned"
    assert not c._interrupt.is_set()  # the next batch waits normally again


async def test_a_dead_letter_too_large_for_the_broker_is_cut_not_retried_for_ever() -> None:
    producer = FakeProducer([MessageSizeTooLargeError("broker says no"), MessageSizeTooLargeError("still no")])

    async def handle(env: Envelope) -> None:
        raise DeadLetter("too_big")

    c = consumer(producer, handler=handle)
    big = record(0, "a", value=ev.FeatureEvent(feature_view="fv", entity_id="a",
                                                source="x" * 50_000).SerializeToString(),
                 headers=[("ce_id", b"id-a"), ("tenant", b"y" * 10_000)])
    await c._process(batch(big))
    [(key, value, headers)] = producer.sent  # third try: no value, only CloudEvents and gyre_dlq_* headers
    assert value == b"" and key == b"a"
    assert headers[h.DLQ_REASON] == b"too_big" and "tenant" not in headers and headers["ce_id"] == b"id-a"
    assert b"cut from" in headers[h.DLQ_CUT] and b"MessageSizeTooLargeError" in headers[h.DLQ_CUT]
    assert c.stats.dead_letters_cut == 1 and c._pending == {TopicPartition(TOPIC, 0): 1}


async def test_a_dead_letter_over_the_limit_is_cut_before_sending() -> None:
    producer = FakeProducer()

    async def handle(env: Envelope) -> None:
        raise DeadLetter("too_big")

    c = consumer(producer, handler=handle)
    c._dead_letter_max_bytes = 20_000
    body = ev.FeatureEvent(feature_view="fv", entity_id="a", source="x" * 50_000).SerializeToString()
    await c._process(batch(record(0, "a", value=body)))
    [(_, value, headers)] = producer.sent
    assert value is not None and 10_000 < len(value) < 20_000 and body.startswith(value)
    assert f"cut from {len(body)} to {len(value)} bytes".encode() in headers[h.DLQ_CUT]
    assert headers["ce_id"] == b"id-a"  # the original headers stay when only the value must go


async def test_even_the_last_resort_refused_is_logged_and_skipped() -> None:
    producer = FakeProducer([MessageSizeTooLargeError()] * 3)

    async def handle(env: Envelope) -> None:
        raise DeadLetter("too_big")

    c = consumer(producer, handler=handle)
    await c._process(batch(record(0, "a")))
    assert producer.sent == [] and producer.errors == []
    assert c._pending == {TopicPartition(TOPIC, 0): 1}
