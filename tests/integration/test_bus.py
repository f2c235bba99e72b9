"""The bus end to end on a real Tansu broker: headers, tracing, JSON, dead letters, retries."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiokafka import AIOKafkaProducer
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from support.kafka import fast_kafka, read_topic
from support.waiting import wait_until

from gyre_common.bus import Consumer, Envelope, Publisher, ensure_topics
from gyre_common.settings import KafkaSettings
from gyre_common.topics import FEATURES_EVENTS, INFERENCE_EVENTS, TRAINING_REQUESTS, dead_letter_topic
from gyre_contracts.gyre.events.v1 import events_pb2 as ev

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(bootstrap_servers: str, unique: str) -> KafkaSettings:
    return fast_kafka(bootstrap_servers, f"t{unique}.", max_retries=2, retry_backoff_ms=10)


@pytest.fixture
async def publisher(settings: KafkaSettings) -> AsyncIterator[Publisher]:
    async with Publisher(settings, service="test-producer") as pub:
        yield pub


def collector() -> tuple[list[Envelope], Callable[[Envelope], Awaitable[None]]]:
    got: list[Envelope] = []

    async def handle(env: Envelope) -> None:
        got.append(env)

    return got, handle


def feature(entity: str, value: float = 1.0) -> ev.FeatureEvent:
    event = ev.FeatureEvent(feature_view="fv", entity_id=entity, source="test")
    event.values["x"].double_value = value
    return event


async def test_round_trip_sets_cloudevents_headers_and_continues_the_trace(settings: KafkaSettings) -> None:
    provider = TracerProvider()
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    got, handle = collector()
    async with Publisher(settings, service="features", tracer_provider=provider) as pub:
        sent = await pub.publish(FEATURES_EVENTS, feature("e1", 2.5), key="e1", headers={"tenant": "acme"})
        async with Consumer(
            settings, group="g", topics=[FEATURES_EVENTS], service="t", handler=handle, tracer_provider=provider
        ):
            await wait_until(lambda: len(got) == 1, what="the event")

    env = got[0]
    assert env.message == feature("e1", 2.5)
    assert (env.ce_id, env.ce_type) == (sent.ce_id, "gyre.events.v1.FeatureEvent")
    assert (env.source, env.key) == ("features", "e1")
    assert (env.topic, env.partition, env.offset) == (sent.topic, sent.partition, sent.offset)
    assert env.time.tzinfo is not None and abs(time.time() - env.time.timestamp()) < 60
    assert env.headers["ce_specversion"] == b"1.0"
    assert env.headers["content-type"] == b"application/protobuf"
    assert env.headers["ce_time"].endswith(b"Z")
    assert env.headers["tenant"] == b"acme"
    assert env.traceparent is not None

    finished = spans.get_finished_spans()
    producer_span = next(s for s in finished if s.kind == SpanKind.PRODUCER)
    consumer_span = next(s for s in finished if s.kind == SpanKind.CONSUMER)
    assert producer_span.name == f"send {sent.topic}"
    assert producer_span.attributes is not None and consumer_span.attributes is not None
    assert producer_span.attributes["messaging.system"] == "kafka"
    assert producer_span.attributes["messaging.message.id"] == sent.ce_id
    assert consumer_span.attributes["messaging.consumer.group.name"] == f"{settings.topic_prefix}g"
    assert consumer_span.context.trace_id == producer_span.context.trace_id
    assert consumer_span.parent is not None and consumer_span.parent.span_id == producer_span.context.span_id
    assert f"{producer_span.context.trace_id:032x}" in env.traceparent


async def test_json_from_a_plain_producer_without_cloudevents_headers(settings: KafkaSettings) -> None:
    await ensure_topics(settings, [FEATURES_EVENTS])
    topic = f"{settings.topic_prefix}{FEATURES_EVENTS}"
    body = json_format.MessageToJson(feature("e7", 3.0)).encode()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        with_type = await producer.send_and_wait(
            topic, body, key=b"e7", partition=0, headers=[("content-type", b"application/json; charset=utf-8")]
        )
        bare = await producer.send_and_wait(topic, body, key=b"e7", partition=0)  # kcat-style: no headers
    finally:
        await producer.stop()
    got, handle = collector()
    async with Consumer(settings, group="g", topics=[FEATURES_EVENTS], service="t", handler=handle):
        await wait_until(lambda: len(got) == 2, what="both JSON events")
    first, second = got
    assert first.message == feature("e7", 3.0) and second.message == feature("e7", 3.0)
    assert first.content_type == second.content_type == "application/json"
    assert first.offset == with_type.offset and second.offset == bare.offset
    # No ce_id: a deterministic one from the record's coordinates, distinct per record.
    assert first.ce_id != second.ce_id
    from gyre_common.bus.envelope import external_event_id

    assert first.ce_id == external_event_id(topic, 0, with_type.offset)
    assert first.source == f"kafka:{topic}" and first.ce_type == "gyre.events.v1.FeatureEvent"


async def test_json_on_a_protobuf_only_topic_is_dead_lettered(settings: KafkaSettings) -> None:
    await ensure_topics(settings, [INFERENCE_EVENTS], dead_letter_groups=["g"])
    topic = f"{settings.topic_prefix}{INFERENCE_EVENTS}"
    event = ev.InferenceEvent(prediction_id="p1", model_name="m")
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, json_format.MessageToJson(event).encode(), partition=0,
            headers=[("content-type", b"application/json")],
        )
    finally:
        await producer.stop()
    got, handle = collector()
    async with Publisher(settings, service="serving") as pub:
        await pub.publish(INFERENCE_EVENTS, event, key="p1")
        async with Consumer(settings, group="g", topics=[INFERENCE_EVENTS], service="t", handler=handle) as consumer:
            await wait_until(lambda: len(got) == 1 and consumer.stats.dead_lettered == 1, what="DLQ + event")
    assert got[0].message == event
    [dead] = await read_topic(settings, dead_letter_topic("g", settings.topic_prefix), 1)
    headers = dict(dead.headers)
    assert headers["gyre_dlq_reason"] == b"json_not_allowed"
    assert headers["gyre_dlq_topic"] == topic.encode()
    assert headers["content-type"] == b"application/json"  # original headers kept
    assert dead.value == json_format.MessageToJson(event).encode()


@pytest.mark.parametrize("kind", ["handler", "batch_handler"])
async def test_poison_record_goes_to_the_dead_letter_topic_and_the_rest_is_handled(
    settings: KafkaSettings, publisher: Publisher, kind: str
) -> None:
    await ensure_topics(settings, [FEATURES_EVENTS])
    topic = f"{settings.topic_prefix}{FEATURES_EVENTS}"
    raw = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await raw.start()
    try:
        poison = await raw.send_and_wait(
            topic, b"\xff\xff\xff not protobuf", key=b"k", partition=0,
            headers=[("ce_id", b"poison-1"), ("ce_type", b"gyre.events.v1.FeatureEvent")],
        )
    finally:
        await raw.stop()
    await publisher.publish_many(FEATURES_EVENTS, [("k", feature(f"e{i}", i)) for i in range(5)])
    got: list[Envelope] = []

    async def handle(env: Envelope) -> None:
        got.append(env)

    async def handle_batch(envs: list[Envelope]) -> None:
        got.extend(envs)

    group = f"g-{kind}"
    handlers = {"handler": handle} if kind == "handler" else {"batch_handler": handle_batch}
    async with Consumer(settings, group=group, topics=[FEATURES_EVENTS], service="t", **handlers) as consumer:
        await wait_until(lambda: len(got) == 5 and consumer.stats.dead_lettered == 1, what=f"{kind} results")
    assert sorted(env.message.entity_id for env in got) == [f"e{i}" for i in range(5)]
    [dead] = await read_topic(settings, dead_letter_topic(group, settings.topic_prefix), 1)
    headers = dict(dead.headers)
    assert dead.value == b"\xff\xff\xff not protobuf" and dead.key == b"k"
    assert headers["gyre_dlq_reason"] == b"decode_error"
    assert headers["gyre_dlq_offset"] == str(poison.offset).encode()
    assert headers["gyre_dlq_partition"] == b"0"
    assert headers["gyre_dlq_group"] == f"{settings.topic_prefix}{group}".encode()
    assert headers["ce_id"] == b"poison-1"
    assert b"FeatureEvent" in headers["gyre_dlq_error"]


async def test_handler_failing_then_succeeding_is_retried_not_dead_lettered(
    settings: KafkaSettings, publisher: Publisher
) -> None:
    calls: list[str] = []

    async def flaky(env: Envelope) -> None:
        calls.append(env.ce_id)
        if len(calls) <= settings.max_retries:  # fails max_retries times, then the last attempt works
            raise RuntimeError("database briefly away")

    sent = await publisher.publish(FEATURES_EVENTS, feature("e1"), key="e1")
    async with Consumer(settings, group="g", topics=[FEATURES_EVENTS], service="t", handler=flaky) as consumer:
        await wait_until(lambda: consumer.stats.handled == 1, what="the handled event")
        assert consumer.stats.retries == settings.max_retries
        assert consumer.stats.dead_lettered == 0
    assert calls == [sent.ce_id] * (settings.max_retries + 1)


async def test_handler_failing_every_time_is_dead_lettered_with_its_error(
    settings: KafkaSettings, publisher: Publisher
) -> None:
    attempts = 0

    async def broken(env: Envelope) -> None:
        nonlocal attempts
        attempts += 1
        if env.message.entity_id == "bad":
            raise RuntimeError("cannot handle bad")  # an unknown failure: bounded retries

    await publisher.publish(FEATURES_EVENTS, feature("bad"), key="same")
    await publisher.publish(FEATURES_EVENTS, feature("good"), key="same")
    async with Consumer(settings, group="g", topics=[FEATURES_EVENTS], service="t", handler=broken) as consumer:
        await wait_until(lambda: consumer.stats.handled == 1 and consumer.stats.dead_lettered == 1, what="results")
    assert attempts == settings.max_retries + 1 + 1
    [dead] = await read_topic(settings, dead_letter_topic("g", settings.topic_prefix), 1)
    headers = dict(dead.headers)
    assert headers["gyre_dlq_reason"] == b"handler_failed"
    assert b"cannot handle bad" in headers["gyre_dlq_error"]
    assert headers["gyre_dlq_attempts"] == str(settings.max_retries + 1).encode()
    assert ev.FeatureEvent.FromString(dead.value).entity_id == "bad"


async def test_invalid_content_is_dead_lettered_at_once_without_retries(
    settings: KafkaSettings, publisher: Publisher
) -> None:
    calls: list[str] = []

    async def validating(env: Envelope) -> None:
        calls.append(env.message.entity_id)
        if env.message.entity_id == "bad":
            raise ValueError("x must be positive")  # permanent: retrying cannot help

    await publisher.publish(FEATURES_EVENTS, feature("bad"), key="same")
    await publisher.publish(FEATURES_EVENTS, feature("good"), key="same")
    async with Consumer(settings, group="g", topics=[FEATURES_EVENTS], service="t", handler=validating) as consumer:
        await wait_until(lambda: consumer.stats.handled == 1 and consumer.stats.dead_lettered == 1, what="results")
        assert consumer.stats.retries == 0
    assert calls == ["bad", "good"]
    [dead] = await read_topic(settings, dead_letter_topic("g", settings.topic_prefix), 1)
    headers = dict(dead.headers)
    assert headers["gyre_dlq_reason"] == b"invalid_content"
    assert headers["gyre_dlq_error"] == b"ValueError: x must be positive"
    assert headers["gyre_dlq_attempts"] == b"1"


async def test_batch_handler_gets_batches_and_falls_back_to_single_records(
    settings: KafkaSettings, publisher: Publisher
) -> None:
    sizes: list[int] = []
    handled: list[str] = []

    async def handle_batch(envs: list[Envelope]) -> None:
        sizes.append(len(envs))
        if any(env.message.entity_id == "bad" for env in envs):
            raise ValueError("bad in batch")
        handled.extend(env.message.entity_id for env in envs)

    items = [("k", feature(f"e{i}")) for i in range(20)]
    items.insert(7, ("k", feature("bad")))
    results = await publisher.publish_many(FEATURES_EVENTS, items)
    assert len({r.ce_id for r in results}) == 21
    async with Consumer(
        settings, group="g", topics=[FEATURES_EVENTS], service="t", batch_handler=handle_batch
    ) as consumer:
        await wait_until(lambda: len(handled) == 20 and consumer.stats.dead_lettered == 1, what="results")
    assert sorted(handled) == sorted(f"e{i}" for i in range(20))
    assert max(sizes) > 1  # records really arrived in batches


async def test_publish_rejects_unknown_topics_wrong_types_and_reserved_headers(publisher: Publisher) -> None:
    with pytest.raises(ValueError, match=r"unknown topic 'feature.events'.*features\.events"):
        await publisher.publish("feature.events", feature("e1"))
    wrong_type = r"carries gyre\.events\.v1\.TrainingRequest, not gyre\.events\.v1\.FeatureEvent"
    with pytest.raises(ValueError, match=wrong_type):
        await publisher.publish(TRAINING_REQUESTS, feature("e1"))
    with pytest.raises(ValueError, match="set by the bus"):
        await publisher.publish(FEATURES_EVENTS, feature("e1"), headers={"ce_id": "mine"})
    with pytest.raises(ValueError, match="unknown topic"):
        Consumer(publisher.settings, group="g", topics=["nope"], service="t", handler=collector()[1])


def inference(prediction_id: str) -> ev.InferenceEvent:
    return ev.InferenceEvent(prediction_id=prediction_id, model_name="m", model_version=1)


async def test_send_batch_partitions_like_send_and_keeps_ids_headers_and_order(
    settings: KafkaSettings, publisher: Publisher
) -> None:
    await ensure_topics(settings, [INFERENCE_EVENTS])
    # One key through send(), the same key and 199 others through send_batch() (several batches).
    single = await publisher.publish(INFERENCE_EVENTS, inference("p-7"), key="p-7")
    records = [(f"p-{i}", inference(f"p-{i}"), f"ce-{i}") for i in range(200)]
    delivered = await publisher.send_batch(INFERENCE_EVENTS, records)
    assert await delivered == 200

    got = await read_topic(settings, single.topic, 201, exact=True)
    partitions = {record.partition for record in got}
    assert partitions == {0, 1}  # the topic has two partitions and the keys spread over both
    batched = [record for record in got if dict(record.headers)["ce_id"].startswith(b"ce-")]
    by_key = {record.key: record for record in batched}
    assert by_key[b"p-7"].partition == single.partition  # the same key, the same partition as send()
    for partition in partitions:  # in input order within each partition
        ids = [int(r.key.decode()[2:]) for r in batched if r.partition == partition]
        assert ids == sorted(ids)
    first = dict(by_key[b"p-0"].headers)
    assert first["ce_id"] == b"ce-0" and first["ce_type"] == b"gyre.events.v1.InferenceEvent"
    assert first["ce_source"] == b"test-producer" and first["content-type"] == b"application/protobuf"
    assert first["traceparent"].startswith(b"00-")
    assert ev.InferenceEvent.FromString(by_key[b"p-0"].value) == inference("p-0")


async def test_send_batch_refuses_a_wrong_type_anywhere_before_sending(
    settings: KafkaSettings, publisher: Publisher
) -> None:
    await ensure_topics(settings, [INFERENCE_EVENTS])
    mixed: list[tuple[str, Message, str | None]] = [("a", inference("a"), None), ("b", feature("b"), None)]
    wrong_type = r"carries gyre\.events\.v1\.InferenceEvent, not gyre\.events\.v1\.FeatureEvent"
    with pytest.raises(ValueError, match=wrong_type):
        await publisher.send_batch(INFERENCE_EVENTS, mixed)
    marker = await publisher.publish(INFERENCE_EVENTS, inference("marker"), key="a")
    got = await read_topic(settings, marker.topic, 1, exact=True)
    assert got[0].key == b"a" and ev.InferenceEvent.FromString(got[0].value).prediction_id == "marker"
