"""Throughput of the Gyre bus against raw aiokafka on the same Tansu broker, in one run.

Produce: ``Publisher.publish_many`` (CloudEvents headers, validation, span, protobuf encoding)
versus ``AIOKafkaProducer.send`` of the same pre-encoded bytes; both with ``acks="all"``, no
idempotence and the same ``linger_ms``. Consume: a ``Consumer`` with a batch handler (decode,
envelope, span, commit after each batch) versus ``AIOKafkaConsumer.getmany`` committing after each
batch too. Records are ~200-byte ``FeatureEvent``s. Prints a table and bus/raw ratios (target ≥ 0.80).

    .venv/bin/python bench/bus_throughput.py            # 50k records per case
    .venv/bin/python bench/bus_throughput.py --quick    # 10k, for a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from gyre_common.bus import Consumer, Envelope, Publisher, ensure_topics
from gyre_common.settings import KafkaSettings
from gyre_common.topics import FEATURES_EVENTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_stack.broker import start_broker
from gyre_stack.ports import free_port

TARGET = 0.80


def make_event(i: int) -> ev.FeatureEvent:
    event = ev.FeatureEvent(feature_view="bench_view", entity_id=f"entity-{i:08d}", source="bench")
    for n in range(6):
        event.values[f"feature_{n:02d}"].double_value = i * 0.5 + n
    event.event_time.FromMilliseconds(1_700_000_000_000 + i)
    return event


CE_HEADERS = [
    ("ce_specversion", b"1.0"),
    ("ce_type", b"gyre.events.v1.FeatureEvent"),
    ("ce_source", b"bench"),
    ("content-type", b"application/protobuf"),
]


def traceparent() -> bytes:
    ids = os.urandom(24).hex()
    return f"00-{ids[:32]}-{ids[32:]}-01".encode()


async def produce_raw(
    settings: KafkaSettings, topic: str, items: list[tuple[str, ev.FeatureEvent]], with_headers: bool
) -> float:
    """Raw aiokafka doing the least any producer of these events does: encode key and protobuf."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=False,
        linger_ms=settings.linger_ms, request_timeout_ms=settings.request_timeout_ms,
    )
    await producer.start()
    try:
        start = time.perf_counter()
        if with_headers:
            # The same headers as the bus (the six CloudEvents ones and a traceparent, which the
            # contract requires on every record), made the cheapest way: constant but id/trace.
            futures = [
                await producer.send(
                    topic, event.SerializeToString(), key=key.encode(),
                    headers=[("ce_id", os.urandom(16).hex().encode()), ("ce_time", b"2024-01-01T00:00:00.000000Z"),
                             *CE_HEADERS, ("traceparent", traceparent())],
                )
                for key, event in items
            ]
        else:
            futures = [await producer.send(topic, event.SerializeToString(), key=key.encode()) for key, event in items]
        await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await producer.stop()


async def produce_bus(settings: KafkaSettings, items: list[tuple[str, ev.FeatureEvent]]) -> float:
    async with Publisher(settings, service="bench") as publisher:
        start = time.perf_counter()
        await publisher.publish_many(FEATURES_EVENTS, items)
        return time.perf_counter() - start


async def consume_raw(settings: KafkaSettings, topic: str, count: int, group: str) -> float:
    """Raw aiokafka doing the least any consumer of these events does: parse protobuf, commit per batch."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.bootstrap_servers, group_id=f"{settings.topic_prefix}{group}",
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=settings.batch_max_records,
        session_timeout_ms=settings.session_timeout_ms, heartbeat_interval_ms=settings.heartbeat_interval_ms,
    )
    await consumer.start()
    try:
        seen = 0
        start = 0.0
        while seen < count:
            batch = await consumer.getmany(timeout_ms=200, max_records=settings.batch_max_records)
            if batch and not start:
                start = time.perf_counter()  # from the first record: group joins are not throughput
            for records in batch.values():
                for record in records:
                    seen += 1
                    ev.FeatureEvent.FromString(record.value)
            if batch:
                await consumer.commit()
        return time.perf_counter() - start
    finally:
        await consumer.stop()


async def consume_bus(settings: KafkaSettings, count: int, per_event: bool) -> float:
    seen = 0
    start = 0.0
    done = asyncio.Event()

    async def handle_batch(envs: list[Envelope]) -> None:
        nonlocal seen, start
        if not start:
            start = time.perf_counter()
        seen += len(envs)
        if seen >= count:
            done.set()

    async def handle(env: Envelope) -> None:
        await handle_batch([env])

    handlers = {"handler": handle} if per_event else {"batch_handler": handle_batch}
    group = "bus-event" if per_event else "bus-batch"
    async with Consumer(settings, group=group, topics=[FEATURES_EVENTS], service="bench", **handlers):  # type: ignore[arg-type]
        await asyncio.wait_for(done.wait(), 600)
        return time.perf_counter() - start


async def run(count: int, per_event: bool) -> int:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="gyre-bench-") as folder:
        broker = start_broker(free_port(), Path(folder) / "tansu.log")
        try:
            settings = KafkaSettings(
                bootstrap_servers=broker.bootstrap_servers, topic_prefix="bench.", default_partitions=6,
                session_timeout_ms=2000, heartbeat_interval_ms=300,
            )
            raw_topic = "bench.raw"
            await ensure_topics(settings, [FEATURES_EVENTS])
            from aiokafka.admin import AIOKafkaAdminClient, NewTopic

            admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
            await admin.start()
            await admin.create_topics([NewTopic(name, 6, 1) for name in (raw_topic, "bench.raw-ce")])
            await admin.close()

            keyed = [(event.entity_id, event) for event in map(make_event, range(count))]
            size = sum(len(event.SerializeToString()) for _, event in keyed) / count
            bus_topic = f"{settings.topic_prefix}{FEATURES_EVENTS}"

            # Each figure is events/s; "raw" sends/reads no headers, "raw+ce" the same CloudEvents
            # headers as the bus, so the two ratios separate the cost of the headers themselves
            # (in aiokafka and the broker) from the cost of the bus's own code.
            raw_p = count / await produce_raw(settings, raw_topic, keyed, with_headers=False)
            raw_h = count / await produce_raw(settings, "bench.raw-ce", keyed, with_headers=True)
            bus_p = count / await produce_bus(settings, keyed)
            raw_c = count / await consume_raw(settings, raw_topic, count, "raw")
            raw_hc = count / await consume_raw(settings, bus_topic, count, "raw-ce")
            bus_c = count / await consume_bus(settings, count, per_event=False)
            rows = [("produce", bus_p, raw_p, raw_h), ("consume (batch handler)", bus_c, raw_c, raw_hc)]
            if per_event:
                bus_e = count / await consume_bus(settings, count, True)
                rows.append(("consume (per-event handler)", bus_e, raw_c, raw_hc))
        finally:
            broker.stop()

    print(f"\nbus vs raw aiokafka — {count} records of {size:.0f} B on Tansu, acks=all, linger_ms={settings.linger_ms}")
    print(f"{'case':<30}{'bus ev/s':>10}{'raw ev/s':>10}{'raw+ce ev/s':>13}{'bus/raw':>9}{'bus/raw+ce':>12}")
    for name, bus, raw, raw_ce in rows:
        print(f"{name:<30}{bus:>10,.0f}{raw:>10,.0f}{raw_ce:>13,.0f}{bus / raw:>9.2f}{bus / raw_ce:>12.2f}")
    print(f"target: bus/raw >= {TARGET:.2f} for produce and batch consume (see docs/benchmarks.md)")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k records instead of 50k")
    parser.add_argument("--count", type=int, help="records per case (overrides --quick)")
    parser.add_argument("--per-event", action="store_true", help="also time a per-event handler (informative)")
    args = parser.parse_args()
    count = args.count or (10_000 if args.quick else 50_000)
    sys.exit(asyncio.run(run(count, args.per_event)))


if __name__ == "__main__":
    main()
