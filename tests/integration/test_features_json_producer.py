"""A plain Kafka producer (aiokafka, no Gyre SDK) sends JSON feature events as docs/services/features.md
describes; the features service stores them and serves them online and as a training set.

Data: scikit-learn's breast cancer dataset (569 rows, 30 numeric features, binary target), shipped
with scikit-learn, so no download.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from sklearn.datasets import load_breast_cancer
from support.kafka import read_topic
from support.services import running
from support.waiting import wait_until

from gyre_common.runner import ServiceRunner
from gyre_common.settings import KafkaSettings
from gyre_common.topics import dead_letter_topic
from gyre_contracts.gyre.features.v1 import features_service_pb2 as pb
from gyre_contracts.gyre.features.v1 import features_service_pb2_grpc as pb_grpc
from gyre_features.bootstrap import bootstrap
from gyre_features.service import SPEC
from gyre_features.settings import FeaturesSettings

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@pytest.fixture
async def service(bootstrap_servers: str, unique: str, database_url: str) -> AsyncIterator[ServiceRunner]:
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=f"bc{unique}.", default_partitions=3,
                          session_timeout_ms=2000, heartbeat_interval_ms=300)
    async with running(SPEC, bootstrap, FeaturesSettings(http_port=0, grpc_port=0), kafka=kafka,
                       database_url=database_url) as runner:
        yield runner


async def test_plain_json_producer_breast_cancer(service: ServiceRunner) -> None:
    data = load_breast_cancer()
    names = [snake(str(n)) for n in data.feature_names]
    assert len(names) == 30 and len(set(names)) == 30
    base = f"http://127.0.0.1:{service.http_port}/api/v1"
    view = {"name": "breast_cancer", "entity": "patient", "ttl_seconds": 0,
            "features": [*({"name": n, "type": "float"} for n in names), {"name": "target", "type": "int"}]}
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.post(f"{base}/feature-views", json=view)).status_code == 201

        # Exactly what a producer in any language does: JSON bytes, a content-type header, the key.
        kafka = service.kafka
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", enable_idempotence=False)
        await producer.start()
        try:
            sends = []
            for i, (row, target) in enumerate(zip(data.data, data.target, strict=True)):
                payload = {
                    "featureView": "breast_cancer",
                    "entityId": f"patient-{i}",
                    "eventTime": (T0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
                    "values": {**{n: {"doubleValue": float(v)} for n, v in zip(names, row, strict=True)},
                               "target": {"int64Value": str(int(target))}},
                    "source": "sklearn-breast-cancer",
                }
                sends.append(await producer.send(
                    f"{kafka.topic_prefix}features.events", json.dumps(payload).encode(), key=f"patient-{i}".encode(),
                    headers=[("content-type", b"application/json")]))
            await asyncio.gather(*sends)
        finally:
            await producer.stop()

        deadline = time.monotonic() + 60
        while True:
            profile = (await client.get(f"{base}/feature-views/breast_cancer/profile")).json()
            if profile["rows"] == len(data.data):
                break
            assert time.monotonic() < deadline, f"only {profile['rows']} rows stored"
            await asyncio.sleep(0.1)
        stats = {f["name"]: f for f in profile["features"]}
        assert stats["mean_radius"]["mean"] == pytest.approx(float(np.mean(data.data[:, 0])))
        assert stats["mean_radius"]["std"] == pytest.approx(float(np.std(data.data[:, 0], ddof=1)))
        assert stats["target"]["count"] == 569 and stats["target"]["missing"] == 0

        online = (await client.post(f"{base}/online-features", json={
            "feature_view": "breast_cancer", "entity_ids": ["patient-0", "patient-568"]})).json()
        first, last = online["rows"]
        assert [first["values"][n] for n in names] == [float(v) for v in data.data[0]]
        assert last["values"]["target"] == int(data.target[568])
        assert set(first["statuses"].values()) == {"PRESENT"}

    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = pb_grpc.FeaturesServiceStub(channel)
        messages = [m async for m in stub.BuildTrainingSet(pb.BuildTrainingSetRequest(
            feature_view="breast_cancer", label="target", chunk_size=200))]
    chunks = [m.chunk for m in messages[:-1]]
    assert [len(c.entity_ids) for c in chunks] == [200, 200, 169]
    assert messages[-1].summary.row_count == 569
    features = np.column_stack([
        np.concatenate([np.array(c.features[j].double_values) for c in chunks]) for j in range(30)])
    labels = np.concatenate([np.array(c.label.int64_values) for c in chunks])
    # Rows come in event-time order, which is the dataset's order here: the values are bit-exact.
    np.testing.assert_array_equal(features, data.data)
    np.testing.assert_array_equal(labels, data.target)


async def test_a_poison_ce_time_is_dead_lettered_and_the_events_behind_it_are_stored(service: ServiceRunner) -> None:
    """The reported case: one JSON event with ``ce_time: 9999-12-31T23:59:59-23:59`` used to stop the
    ingester for good (OverflowError, batch read again forever, /readyz still 200)."""
    base = f"http://127.0.0.1:{service.http_port}/api/v1"
    view = {"name": "poison_view", "entity": "thing", "ttl_seconds": 0, "features": [{"name": "x", "type": "float"}]}
    kafka = service.kafka
    topic = f"{kafka.topic_prefix}features.events"

    def event(entity: str) -> bytes:
        return json.dumps({"featureView": "poison_view", "entityId": entity, "eventTime": "2025-01-01T00:00:00Z",
                           "values": {"x": {"doubleValue": 1.0}}}).encode()

    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.post(f"{base}/feature-views", json=view)).status_code == 201
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", enable_idempotence=False)
        await producer.start()
        try:
            json_type = ("content-type", b"application/json")
            # One partition, so the good events really queue behind the poison one.
            await producer.send_and_wait(topic, event("before"), key=b"k", partition=0, headers=[json_type])
            poison = await producer.send_and_wait(topic, event("poison"), key=b"k", partition=0,
                                                  headers=[json_type, ("ce_time", b"9999-12-31T23:59:59-23:59")])
            await producer.send_and_wait(topic, event("after"), key=b"k", partition=0, headers=[json_type])
        finally:
            await producer.stop()

        async def stored() -> bool:
            profile = (await client.get(f"{base}/feature-views/poison_view/profile")).json()
            return bool(profile["rows"] == 2)

        await wait_until(stored, what="the events before and after the poison")
        online = (await client.post(f"{base}/online-features", json={
            "feature_view": "poison_view", "entity_ids": ["before", "poison", "after"]})).json()
        assert [set(row["statuses"].values()) for row in online["rows"]] == [{"PRESENT"}, {"NOT_FOUND"}, {"PRESENT"}]
        dead = await read_topic(kafka, dead_letter_topic("features", kafka.topic_prefix), 1, exact=True)
        headers = dict(dead[0].headers)
        assert headers["gyre_dlq_reason"] == b"bad_header"
        assert headers["gyre_dlq_offset"] == str(poison.offset).encode()
        ready = await client.get(f"http://127.0.0.1:{service.http_port}/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["consumer:features"]["ok"]
