"""Kafka helpers for tests: settings tuned for a fast test broker and readers of whole topics (tests only)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from gyre_common.bus import Envelope, decode_record, ensure_topics
from gyre_common.settings import KafkaSettings
from gyre_common.topics import full_name


def fast_kafka(bootstrap_servers: str, topic_prefix: str, **overrides: Any) -> KafkaSettings:
    """KafkaSettings for a test: its own topic prefix, 2 partitions, and a short session timeout
    (Tansu holds a join for about half of it waiting for other members); ``overrides`` win."""
    fields: dict[str, Any] = dict(default_partitions=2, session_timeout_ms=2000, heartbeat_interval_ms=300,
                                  linger_ms=1)
    fields.update(overrides)
    return KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix, **fields)


async def read_topic(settings: KafkaSettings, topic: str, count: int, within_s: float = 20.0, *,
                     exact: bool = False) -> list[ConsumerRecord]:
    """The records of ``topic`` (full name) from the beginning, without a group, once ``count`` are there.

    Raises:
        AssertionError: fewer than ``count`` records within ``within_s`` seconds (with ``exact``,
            any number other than ``count``).
    """
    reader = AIOKafkaConsumer(topic, bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest",
                              enable_auto_commit=False)
    records: list[ConsumerRecord] = []
    async with asyncio.timeout(within_s + 10):  # start/stop may hang on a broker that went away
        await reader.start()
        try:
            deadline = time.monotonic() + within_s
            while len(records) < count and time.monotonic() < deadline:
                for batch in (await reader.getmany(timeout_ms=200)).values():
                    records.extend(batch)
        finally:
            await reader.stop()
    if exact:
        assert len(records) == count, f"{topic}: {len(records)} records, expected {count}"
    else:
        assert len(records) >= count, f"{topic}: {len(records)} of {count} records"
    return records


async def read_all(kafka: KafkaSettings, base: str, within_s: float = 10.0) -> list[Envelope]:
    """Every record on topic ``base`` (created if missing) up to its end offsets now, decoded."""
    await ensure_topics(kafka, [base])
    topic = full_name(base, kafka.topic_prefix)
    reader = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False,
                              auto_offset_reset="earliest")
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
        ends = await reader.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + within_s
        while len(records) < sum(ends.values()):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for batch in (await reader.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return [decode_record(r, kafka.topic_prefix) for r in records]
    finally:
        await reader.stop()
