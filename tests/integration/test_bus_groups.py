"""Consumer groups on a real Tansu broker: redelivery, shared partitions, clean shutdown.

Every test runs under a deadline (:func:`deadline`): a group join that never completes under load
must fail the test, not hang the suite.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from support.kafka import fast_kafka
from support.waiting import wait_until

from gyre_common.bus import Consumer, Envelope, Publisher
from gyre_common.settings import KafkaSettings
from gyre_common.topics import FEATURES_EVENTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev

pytestmark = pytest.mark.integration

PARTITIONS = 4
DEADLINE_S = 120.0
"""Longest one test may take (they take seconds; the margin is for a loaded CI machine)."""

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def deadline(test: F) -> F:
    """Run an async test under ``asyncio.timeout(DEADLINE_S)``."""

    @functools.wraps(test)
    async def bounded(*args: Any, **kwargs: Any) -> Any:
        async with asyncio.timeout(DEADLINE_S):
            return await test(*args, **kwargs)

    return bounded  # type: ignore[return-value]


@pytest.fixture
def settings(bootstrap_servers: str, unique: str) -> KafkaSettings:
    return fast_kafka(bootstrap_servers, f"t{unique}.", default_partitions=PARTITIONS, retry_backoff_ms=10)


@pytest.fixture
async def publisher(settings: KafkaSettings) -> AsyncIterator[Publisher]:
    async with Publisher(settings, service="test-producer") as pub:
        yield pub


async def committed_total(settings: KafkaSettings, group: str) -> int:
    """Sum of the group's committed offsets over the topic's partitions (0 where none)."""
    probe = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"{settings.topic_prefix}{group}",
        enable_auto_commit=False,
    )
    # aiokafka retries a coordinator lookup forever; under load that must fail, not hang.
    async with asyncio.timeout(30):
        await probe.start()
        try:
            topic = f"{settings.topic_prefix}{FEATURES_EVENTS}"
            offsets = [await probe.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)]
        finally:
            await probe.stop()
    return sum(o or 0 for o in offsets)


def events(count: int) -> list[tuple[str, ev.FeatureEvent]]:
    return [(f"k{i}", ev.FeatureEvent(feature_view="fv", entity_id=f"e{i}")) for i in range(count)]


@deadline
async def test_records_not_committed_before_a_crash_are_redelivered(
    settings: KafkaSettings, publisher: Publisher
) -> None:
    sent = await publisher.publish_many(FEATURES_EVENTS, events(12))
    seen_by_first: list[str] = []
    never = asyncio.Event()

    async def stuck(env: Envelope) -> None:
        seen_by_first.append(env.ce_id)
        await never.wait()  # the process "hangs" and then dies before committing

    first = Consumer(settings, group="g", topics=[FEATURES_EVENTS], service="t", handler=stuck)
    await first.start()
    await wait_until(lambda: len(seen_by_first) == 1, what="the first delivery")
    await first.abort()
    assert await committed_total(settings, "g") == 0

    seen_by_second: list[str] = []

    async def handle(env: Envelope) -> None:
        seen_by_second.append(env.ce_id)

    async with Consumer(settings, group="g", topics=[FEATURES_EVENTS], service="t", handler=handle):
        await wait_until(lambda: len(seen_by_second) >= 12, what="redelivery")
    assert seen_by_first[0] in seen_by_second
    assert sorted(seen_by_second) == sorted(r.ce_id for r in sent)


@deadline
async def test_two_members_share_the_partitions_of_a_group(settings: KafkaSettings, publisher: Publisher) -> None:
    got: dict[str, list[str]] = {"a": [], "b": []}

    def handler(name: str) -> Callable[[Envelope], asyncio.Future[None] | object]:
        async def handle(env: Envelope) -> None:
            got[name].append(env.ce_id)

        return handle

    async with Consumer(settings, group="g", topics=[FEATURES_EVENTS], service="a", handler=handler("a")) as a:  # type: ignore[arg-type]
        await a.wait_assigned()
        async with Consumer(
            settings, group="g", topics=[FEATURES_EVENTS], service="b", handler=handler("b")  # type: ignore[arg-type]
        ) as b:
            await wait_until(
                lambda: len(a.assignment) + len(b.assignment) == PARTITIONS
                and not a.assignment & b.assignment
                and bool(a.assignment) and bool(b.assignment),
                what="the rebalance",
            )
            sent = await publisher.publish_many(FEATURES_EVENTS, events(80))
            await wait_until(lambda: len(got["a"]) + len(got["b"]) >= 80, what="all events")
            await asyncio.sleep(0)  # let nothing else in: the counts below are final in steady state
    assert got["a"] and got["b"]
    union = got["a"] + got["b"]
    assert len(union) == len(set(union)) == 80
    assert set(union) == {r.ce_id for r in sent}


@deadline
async def test_stop_finishes_the_in_flight_batch_and_commits(settings: KafkaSettings, publisher: Publisher) -> None:
    await publisher.publish_many(FEATURES_EVENTS, events(10))
    handled: list[str] = []
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow(env: Envelope) -> None:
        if not handled:
            entered.set()
            await release.wait()  # the first record is still being handled when stop() is called
        handled.append(env.ce_id)

    consumer = Consumer(settings, group="g", topics=[FEATURES_EVENTS], service="t", handler=slow)
    await consumer.start()
    await asyncio.wait_for(entered.wait(), 30)
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # waits for the handler
    release.set()
    await asyncio.wait_for(stopping, 30)
    assert handled, "the in-flight record was finished"
    assert await committed_total(settings, "g") == len(handled)

    rest: list[str] = []

    async def handle(env: Envelope) -> None:
        rest.append(env.ce_id)

    async with Consumer(settings, group="g", topics=[FEATURES_EVENTS], service="t", handler=handle):
        await wait_until(lambda: len(handled) + len(rest) == 10, what="the rest")
    assert not set(handled) & set(rest), "nothing committed is delivered again"
