"""Text and float-vector features (#11) through the running features service, real Tansu + PostgreSQL.

A plain JSON producer and Gyre's protobuf publisher send reviews (text) with their embeddings
(float vectors); the service stores them online and offline, serves them online (gRPC and REST),
returns them in point-in-time training sets (gRPC stream and REST) and profiles them; invalid ones
(wrong dimension, NaN, text over the view's limit, a vector for a text) go to the dead-letter topic.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import httpx
import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from google.protobuf.timestamp_pb2 import Timestamp
from support.kafka import fast_kafka, read_topic
from support.services import fast_settings, running
from support.waiting import wait_until

from gyre_common.bus import Publisher
from gyre_common.runner import ServiceRunner
from gyre_common.settings import KafkaSettings
from gyre_common.topics import FEATURES_EVENTS, dead_letter_topic
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_contracts.gyre.features.v1 import features_service_pb2 as pb
from gyre_contracts.gyre.features.v1 import features_service_pb2_grpc as pb_grpc
from gyre_features.bootstrap import bootstrap
from gyre_features.service import SPEC
from gyre_features.settings import FeaturesSettings

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DIM = 8
REVIEWS = ["great product, works as described", "arrived broken", "ok", "späte Lieferung, aber gut 👍"]


def iso(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def embedding(i: int) -> list[float]:
    rng = np.random.default_rng(i)
    vector = rng.normal(size=DIM)
    return [float(x) for x in vector / np.linalg.norm(vector)]


def f32(values: list[float]) -> list[float]:
    return list(array("f", values))


@pytest.fixture
def kafka(bootstrap_servers: str, unique: str) -> KafkaSettings:
    return fast_kafka(bootstrap_servers, f"tv{unique}.")


@pytest.fixture
async def service(kafka: KafkaSettings, database_url: str) -> AsyncIterator[ServiceRunner]:
    async with running(SPEC, bootstrap, fast_settings(FeaturesSettings), kafka=kafka,
                       database_url=database_url) as runner:
        yield runner


async def test_text_and_vectors_in_events_online_training_sets_and_profiles(
        service: ServiceRunner, kafka: KafkaSettings, database_url: str) -> None:
    base = f"http://127.0.0.1:{service.http_port}/api/v1"
    view = {"name": "reviews", "entity": "review", "features": [
        {"name": "text", "type": "text", "max_text_bytes": 200},
        {"name": "embedding", "type": "float_vector", "dimension": DIM},
        {"name": "stars", "type": "int"},
        {"name": "sentiment", "type": "string"},
    ]}
    async with httpx.AsyncClient(timeout=30) as client:
        # Type parameters are checked: a vector needs its dimension, a text takes no dimension.
        for broken in ({"name": "e", "type": "float_vector"}, {"name": "t", "type": "text", "dimension": 3},
                       {"name": "t", "type": "text", "max_text_bytes": 70_000}):
            answer = await client.post(f"{base}/feature-views", json={**view, "features": [broken]})
            assert answer.status_code == 422, answer.text
        created = await client.post(f"{base}/feature-views", json=view)
        assert created.status_code == 201, created.text
        specs = {f["name"]: f for f in created.json()["feature_view"]["features"]}
        assert specs["embedding"]["dimension"] == DIM and specs["text"]["max_text_bytes"] == 200
        # The dimension is part of the type: changing it is refused like a type change.
        changed = json.loads(json.dumps(view))
        changed["features"][1]["dimension"] = DIM + 1
        assert (await client.post(f"{base}/feature-views", json=changed)).status_code == 409

        # Reviews 0 and 1 as plain JSON from a non-Gyre producer (camelCase proto3 JSON).
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", enable_idempotence=False)
        await producer.start()
        try:
            for i in (0, 1):
                payload = {"featureView": "reviews", "entityId": f"r{i}", "eventTime": iso(i),
                           "values": {"text": {"stringValue": REVIEWS[i]},
                                      "embedding": {"floatVector": {"values": embedding(i)}},
                                      "stars": {"int64Value": str(5 - 4 * i)},
                                      "sentiment": {"stringValue": "pos" if i == 0 else "neg"}}}
                await producer.send_and_wait(f"{kafka.topic_prefix}features.events", json.dumps(payload).encode(),
                                             key=f"r{i}".encode(), headers=[("content-type", b"application/json")])
        finally:
            await producer.stop()

    # Reviews 2 and 3 as protobuf through Gyre's publisher, then four invalid events.
    def event(entity: str, minutes: float, **values: common_pb2.FeatureValue) -> events_pb2.FeatureEvent:
        stamp = Timestamp()
        stamp.FromDatetime(T0 + timedelta(minutes=minutes))
        return events_pb2.FeatureEvent(feature_view="reviews", entity_id=entity, event_time=stamp, values=values)

    def vector(values: list[float]) -> common_pb2.FeatureValue:
        return common_pb2.FeatureValue(float_vector=common_pb2.FloatVector(values=values))

    def text(value: str) -> common_pb2.FeatureValue:
        return common_pb2.FeatureValue(string_value=value)

    good = [event(f"r{i}", i, text=text(REVIEWS[i]), embedding=vector(embedding(i)),
                  stars=common_pb2.FeatureValue(int64_value=3), sentiment=text("neutral")) for i in (2, 3)]
    bad = [
        event("x1", 9, embedding=vector([1.0] * (DIM - 1))),                 # wrong dimension
        event("x2", 9, embedding=vector([float("nan")] * DIM)),              # not finite
        event("x3", 9, text=text("é" * 101)),                                # 202 UTF-8 bytes > 200
        event("x4", 9, text=vector([1.0] * DIM)),                            # a vector for a text
    ]
    async with Publisher(kafka, service="test") as publisher:
        for message in [*good, *bad]:
            await publisher.publish(FEATURES_EVENTS, message, key=message.entity_id)

    dead = await read_topic(kafka, dead_letter_topic("features", kafka.topic_prefix), 4, within_s=30)
    reasons = sorted(dict(r.headers)["gyre_dlq_reason"].decode() for r in dead)
    assert reasons == ["bad_value", "bad_value", "bad_value", "wrong_type"]

    async with httpx.AsyncClient(timeout=30) as client:
        async def all_four() -> dict | None:
            answer = (await client.post(f"{base}/online-features", json={
                "feature_view": "reviews", "entity_ids": ["r0", "r1", "r2", "r3"]})).json()
            return answer if all(row["found"] for row in answer["rows"]) else None

        online = await wait_until(all_four, within_s=30, what="four reviews online")
        for i, row in enumerate(online["rows"]):
            assert row["values"]["text"] == REVIEWS[i]
            # Vectors are float32: what comes back is the float32 rounding of what was sent.
            assert row["values"]["embedding"] == f32(embedding(i))
            assert row["statuses"]["embedding"] == "PRESENT"

        rest_set = (await client.post(f"{base}/training-sets", json={
            "feature_view": "reviews", "label": "sentiment", "features": ["text", "embedding", "stars"]})).json()
        assert rest_set["row_count"] == 4 and rest_set["entity_ids"] == ["r0", "r1", "r2", "r3"]
        assert rest_set["columns"]["text"] == REVIEWS
        assert rest_set["columns"]["embedding"] == [f32(embedding(i)) for i in range(4)]
        assert rest_set["labels"] == ["pos", "neg", "neutral", "neutral"]

        # A text label works too (e.g. a reference answer).
        text_label = (await client.post(f"{base}/training-sets", json={
            "feature_view": "reviews", "label": "text", "features": ["stars"]})).json()
        assert text_label["labels"] == REVIEWS

        profile = (await client.get(f"{base}/feature-views/reviews/profile")).json()
        stats = {f["name"]: f for f in profile["features"]}
        lengths = [len(t) for t in REVIEWS]
        assert stats["text"]["count"] == 4 and stats["text"]["length"]["min"] == min(lengths)
        assert stats["text"]["length"]["max"] == max(lengths)
        assert stats["text"]["length"]["mean"] == pytest.approx(np.mean(lengths))
        assert stats["embedding"]["count"] == 4 and stats["embedding"]["norm"]["mean"] == pytest.approx(1.0, abs=1e-6)
        assert "top" in stats["sentiment"] and "top" not in stats["text"]

    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = pb_grpc.FeaturesServiceStub(channel)
        stored = (await stub.GetFeatureView(pb.GetFeatureViewRequest(name="reviews"))).feature_view
        kinds = {f.name: (f.type, f.dimension, f.max_text_bytes) for f in stored.features}
        assert kinds["embedding"] == (pb.VALUE_TYPE_FLOAT_VECTOR, DIM, 0)
        assert kinds["text"] == (pb.VALUE_TYPE_TEXT, 0, 200)

        rows = (await stub.GetOnlineFeatures(pb.GetOnlineFeaturesRequest(
            feature_view="reviews", entity_ids=["r3", "nobody"], features=["text", "embedding"]))).rows
        assert rows[0].values["text"].string_value == REVIEWS[3]
        assert list(rows[0].values["embedding"].float_vector.values) == f32(embedding(3))
        assert not rows[1].found and rows[1].values["embedding"].WhichOneof("kind") is None

        # An entity dataframe with a row before any event: its vector is missing (zeros, present false).
        spine = [pb.EntityTime(entity_id="r1", event_time=Timestamp(seconds=int((T0 + timedelta(minutes=5))
                                                                                .timestamp()))),
                 pb.EntityTime(entity_id="r3", event_time=Timestamp(seconds=int((T0 - timedelta(minutes=5))
                                                                                .timestamp())))]
        messages = [m async for m in stub.BuildTrainingSet(pb.BuildTrainingSetRequest(
            feature_view="reviews", label="sentiment", features=["text", "embedding"], spine=spine,
            keep_unlabelled=True, window_start=Timestamp(seconds=0)))]
    chunk, summary = messages[0].chunk, messages[-1].summary
    text_column, vector_column = chunk.features
    assert text_column.type == pb.VALUE_TYPE_TEXT and list(text_column.string_values) == [REVIEWS[1], ""]
    assert vector_column.type == pb.VALUE_TYPE_FLOAT_VECTOR and vector_column.dimension == DIM
    matrix = np.asarray(vector_column.float_vector_values, dtype=np.float32).reshape(-1, vector_column.dimension)
    np.testing.assert_array_equal(matrix[0], np.asarray(embedding(1), dtype=np.float32))
    np.testing.assert_array_equal(matrix[1], np.zeros(DIM, dtype=np.float32))
    assert list(vector_column.present) == [True, False] and summary.row_count == 2

    # Compact storage: base64 float32 (4/3 bytes per float32 byte, plus a fixed ~45 bytes of keys
    # and the norm), not a JSONB array of numerics (~10 bytes or more per element).
    conn = await asyncpg.connect(database_url)
    try:
        size, as_array = await conn.fetchrow(
            "SELECT pg_column_size(feature_values -> 'embedding'), pg_column_size(to_jsonb($1::float4[]))"
            " FROM features.offline_events WHERE feature_view = 'reviews' AND entity_id = 'r0'", f32(embedding(0)))
    finally:
        await conn.close()
    assert size <= DIM * 4 * 4 / 3 + 48, size
    assert size - 48 < (as_array - 8) / 2, (size, as_array)
