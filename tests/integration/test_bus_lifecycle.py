"""Consumer lifecycle and dead-lettering on a real Tansu broker: start() consumes in the background,
a broker that is down at start is waited for, and handlers can dead-letter records at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import pytest
from support.kafka import fast_kafka, read_topic
from support.waiting import wait_until

from gyre_common.bus import Consumer, DeadLetter, Envelope, Publisher, Rejected
from gyre_common.health import BrokerCheck
from gyre_common.settings import KafkaSettings
from gyre_common.topics import FEATURES_EVENTS, dead_letter_topic
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_stack.ports import free_port

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0
"""Longest any one test may take: every wait below is bounded by it or by something shorter."""


@pytest.fixture
def settings(bootstrap_servers: str, unique: str) -> KafkaSettings:
    return fast_kafka(bootstrap_servers, f"t{unique}.", max_retries=2, retry_backoff_ms=10, request_timeout_ms=5000)


@pytest.fixture
async def publisher(settings: KafkaSettings) -> AsyncIterator[Publisher]:
    async with Publisher(settings, service="test-producer") as pub:
        yield pub


def feature(entity: str) -> ev.FeatureEvent:
    return ev.FeatureEvent(feature_view="fv", entity_id=entity, source="test")


async def test_start_returns_at_once_and_consumes_in_the_background(
    settings: KafkaSettings, publisher: Publisher
) -> None:
    got: list[str] = []

    async def handle(env: Envelope) -> None:
        got.append(env.message.entity_id)  # type: ignore[attr-defined]

    consumer = Consumer(settings, group="g", topics=[FEATURES_EVENTS], service="t", handler=handle)
    async with asyncio.timeout(DEADLINE_S):
        began = time.monotonic()
        await consumer.start()  # what the runner's add_task does: no `async with`
        assert time.monotonic() - began < 1.0, "start() must not wait for the group join"
        try:
            await publisher.publish_many(FEATURES_EVENTS, [("k", feature(f"e{i}")) for i in range(5)])
            await wait_until(lambda: len(got) == 5, what="the events")
            assert consumer.connected and consumer.running
        finally:
            await consumer.stop()
        assert not consumer.running
        await consumer.stop()  # twice is fine


class Gate:
    """A TCP port that refuses connections until opened, then forwards to the broker."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.port = free_port()
        self.server: asyncio.Server | None = None

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))


async def test_a_broker_down_at_start_is_waited_for_then_the_consumer_joins(
    settings: KafkaSettings, publisher: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    # Bootstrap through a port where nothing listens yet; Tansu advertises its own address, so once
    # the gate opens the clients talk to the broker directly.
    gate = Gate(settings.bootstrap_servers)
    gated = settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{gate.port}"})
    got: list[str] = []

    async def handle(env: Envelope) -> None:
        got.append(env.message.entity_id)  # type: ignore[attr-defined]

    consumer = Consumer(gated, group="g", topics=[FEATURES_EVENTS], service="t", handler=handle)
    check = BrokerCheck(gated, "t-health", timeout_s=1.0)
    caplog.set_level(logging.WARNING, logger="gyre_common.bus.consumer")
    async with asyncio.timeout(DEADLINE_S):
        began = time.monotonic()
        await consumer.start()
        assert time.monotonic() - began < 1.0, "start() must return while the broker is away"
        try:
            await wait_until(lambda: consumer.stats.connect_attempts >= 2, what="two connection attempts")
            with pytest.raises(Exception):  # noqa: B017 - any failure means "not ready"
                await check()  # readiness says not ready meanwhile
            assert not consumer.connected
            lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
            assert lines and lines[0].startswith(f"broker 127.0.0.1:{gate.port} unreachable, retrying in ")

            await gate.open()
            await check()
            await consumer.wait_assigned(within_s=30)
            await publisher.publish(FEATURES_EVENTS, feature("late"), key="k")
            await wait_until(lambda: got == ["late"], what="the event after the broker came")
        finally:
            await consumer.stop()
            await check.close()
            await gate.close()


async def test_stop_while_the_broker_is_away_returns_promptly(settings: KafkaSettings) -> None:
    nowhere = settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})

    async def handle(env: Envelope) -> None:
        raise AssertionError("nothing to consume")

    consumer = Consumer(nowhere, group="g", topics=[FEATURES_EVENTS], service="t", handler=handle)
    await consumer.start()
    await wait_until(lambda: consumer.stats.connect_attempts >= 1, what="a connection attempt")
    began = time.monotonic()
    await asyncio.wait_for(consumer.stop(), 10)
    assert time.monotonic() - began < 5


async def test_dead_letter_raised_by_a_handler_is_not_retried(settings: KafkaSettings, publisher: Publisher) -> None:
    calls: list[str] = []

    async def handle(env: Envelope) -> None:
        calls.append(env.message.entity_id)  # type: ignore[attr-defined]
        if env.message.entity_id == "bad":  # type: ignore[attr-defined]
            raise DeadLetter("unknown_entity", "entity 'bad' does not exist")

    bad = await publisher.publish(FEATURES_EVENTS, feature("bad"), key="same", headers={"tenant": "acme"})
    await publisher.publish(FEATURES_EVENTS, feature("good"), key="same")
    async with asyncio.timeout(DEADLINE_S):
        async with Consumer(settings, group="g", topics=[FEATURES_EVENTS], service="t", handler=handle) as consumer:
            await wait_until(lambda: consumer.stats.handled == 1 and consumer.stats.dead_lettered == 1,
                             what="results")
            assert consumer.stats.retries == 0
        [dead] = await read_topic(settings, dead_letter_topic("g", settings.topic_prefix), 1)
    assert calls == ["bad", "good"]
    headers = dict(dead.headers)
    assert headers["gyre_dlq_reason"] == b"unknown_entity"
    assert headers["gyre_dlq_error"] == b"entity 'bad' does not exist"
    assert headers["gyre_dlq_attempts"] == b"1"
    assert headers["ce_id"] == bad.ce_id.encode() and headers["tenant"] == b"acme"  # original headers
    assert ev.FeatureEvent.FromString(dead.value) == feature("bad") and dead.key == b"same"
    assert headers["traceparent"].startswith(b"00-")  # on every record, tracing on or off


async def test_a_batch_handler_rejects_single_records_and_the_rest_counts_as_handled(
    settings: KafkaSettings, publisher: Publisher
) -> None:
    calls: list[list[str]] = []

    async def handle_batch(envs: list[Envelope]) -> list[Rejected]:
        names = [env.message.entity_id for env in envs]  # type: ignore[attr-defined]
        calls.append(names)
        return [Rejected(env, "bad_value", f"{name} is invalid")
                for env, name in zip(envs, names, strict=True) if name.startswith("bad")]

    items = [("k", feature(f"e{i}")) for i in range(10)]
    items[3] = ("k", feature("bad-3"))
    items[8] = ("k", feature("bad-8"))
    sent = await publisher.publish_many(FEATURES_EVENTS, items)
    async with asyncio.timeout(DEADLINE_S):
        async with Consumer(settings, group="g", topics=[FEATURES_EVENTS], service="t",
                            batch_handler=handle_batch) as consumer:
            await wait_until(lambda: consumer.stats.handled == 8 and consumer.stats.dead_lettered == 2,
                             what="results")
        dead = await read_topic(settings, dead_letter_topic("g", settings.topic_prefix), 2)
    assert sum(len(c) for c in calls) == 10, "each record was handed over once: no retries"
    by_id = {dict(r.headers)["ce_id"].decode(): r for r in dead}
    assert set(by_id) == {sent[3].ce_id, sent[8].ce_id}
    record = by_id[sent[3].ce_id]
    assert dict(record.headers)["gyre_dlq_reason"] == b"bad_value"
    assert dict(record.headers)["gyre_dlq_error"] == b"bad-3 is invalid"
    assert record.value == feature("bad-3").SerializeToString()


async def test_a_batch_handler_raising_dead_letter_is_asked_record_by_record(
    settings: KafkaSettings, publisher: Publisher
) -> None:
    handled: list[str] = []

    async def handle_batch(envs: list[Envelope]) -> None:
        names = [env.message.entity_id for env in envs]  # type: ignore[attr-defined]
        if "bad" in names:
            raise DeadLetter("bad_batch", "contains 'bad'")
        handled.extend(names)

    await publisher.publish_many(FEATURES_EVENTS, [("k", feature(n)) for n in ("a", "bad", "b", "c")])
    async with asyncio.timeout(DEADLINE_S):
        async with Consumer(settings, group="g", topics=[FEATURES_EVENTS], service="t",
                            batch_handler=handle_batch) as consumer:
            await wait_until(lambda: len(handled) == 3 and consumer.stats.dead_lettered == 1, what="results")
            assert consumer.stats.retries == 0
        [dead] = await read_topic(settings, dead_letter_topic("g", settings.topic_prefix), 1)
    assert sorted(handled) == ["a", "b", "c"]
    assert dict(dead.headers)["gyre_dlq_reason"] == b"bad_batch"
    assert ev.FeatureEvent.FromString(dead.value).entity_id == "bad"
