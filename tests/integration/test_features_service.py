"""The features service in-process on real Tansu + PostgreSQL: gRPC, REST and the Kafka ingester."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest
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


def ts(minutes: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(T0 + timedelta(minutes=minutes))
    return stamp


def view_proto(ttl_seconds: int = 0) -> pb.FeatureView:
    return pb.FeatureView(
        name="customer_stats", entity="customer", ttl_seconds=ttl_seconds, owner="risk", tags={"team": "risk"},
        features=[
            pb.FeatureSpec(name="spend", type=pb.VALUE_TYPE_DOUBLE, description="EUR, 30 days"),
            pb.FeatureSpec(name="orders", type=pb.VALUE_TYPE_INT64),
            pb.FeatureSpec(name="segment", type=pb.VALUE_TYPE_STRING),
            pb.FeatureSpec(name="churned", type=pb.VALUE_TYPE_BOOL),
        ],
    )


def event(entity: str, minutes: float, **values: object) -> events_pb2.FeatureEvent:
    message = events_pb2.FeatureEvent(feature_view="customer_stats", entity_id=entity, event_time=ts(minutes))
    for name, value in values.items():
        target = message.values[name]
        if value is None:
            target.SetInParent()
        elif isinstance(value, bool):
            target.bool_value = value
        elif isinstance(value, int):
            target.int64_value = value
        elif isinstance(value, float):
            target.double_value = value
        else:
            target.string_value = str(value)
    return message


@pytest.fixture
def kafka(bootstrap_servers: str, unique: str) -> KafkaSettings:
    return fast_kafka(bootstrap_servers, f"f{unique}.")


@pytest.fixture
async def service(kafka: KafkaSettings, database_url: str) -> AsyncIterator[ServiceRunner]:
    async with running(SPEC, bootstrap, fast_settings(FeaturesSettings), kafka=kafka,
                       database_url=database_url) as runner:
        yield runner


async def test_grpc_api_end_to_end_with_kafka_ingestion(service: ServiceRunner, kafka: KafkaSettings) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = pb_grpc.FeaturesServiceStub(channel)
        # No TTL: these 2025 events stay valid online (TTL expiry is covered by the REST test).
        created = await stub.RegisterFeatureView(pb.RegisterFeatureViewRequest(feature_view=view_proto()))
        assert created.created and created.feature_view.tags["team"] == "risk"
        assert created.feature_view.created_at.seconds > 0
        again = await stub.RegisterFeatureView(pb.RegisterFeatureViewRequest(feature_view=view_proto()))
        assert not again.created

        bad = view_proto()
        bad.features.add(name="untyped")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RegisterFeatureView(pb.RegisterFeatureViewRequest(feature_view=bad))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        shrunk = view_proto()
        del shrunk.features[0]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RegisterFeatureView(pb.RegisterFeatureViewRequest(feature_view=shrunk))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetFeatureView(pb.GetFeatureViewRequest(name="missing"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        listed = await stub.ListFeatureViews(pb.ListFeatureViewsRequest(page_size=1))
        assert [v.name for v in listed.feature_views] == ["customer_stats"] and listed.next_page_token == ""

        # Events through Kafka (protobuf, our Publisher), including an out-of-order one and bad ones.
        async with Publisher(kafka, service="test") as publisher:
            for message in [
                event("c1", 10, spend=20.0, orders=2, segment="gold", churned=False),
                event("c1", 5, spend=10.0, orders=1, segment="silver", churned=True),  # late, older
                event("c2", 0, spend=1.0, orders=1, segment="new", churned=None),
                event("c1", 11, colour="red"),  # unknown feature
                event("c2", 12, orders=2.5),  # wrong type
                events_pb2.FeatureEvent(feature_view="customer_stats", entity_id="c3",
                                        values={"orders": common_pb2.FeatureValue(int64_value=1)}),  # no event_time
                event("", 3, orders=1),  # no entity id
                event("c1", 20, orders=3),
            ]:
                await publisher.publish(FEATURES_EVENTS, message, key=message.entity_id or "none")

        async def c1_has_orders_3() -> bool:
            reply = await stub.GetOnlineFeatures(pb.GetOnlineFeaturesRequest(
                feature_view="customer_stats", entity_ids=["c1"], features=["orders"]))
            return reply.rows[0].values["orders"].int64_value == 3

        await wait_until(c1_has_orders_3, what="the ingester to apply c1's last event")
        dead = await read_topic(kafka, dead_letter_topic("features", kafka.topic_prefix), 4, exact=True)
        reasons = sorted(dict(r.headers)["gyre_dlq_reason"].decode() for r in dead)
        assert reasons == ["missing_entity_id", "missing_event_time", "unknown_feature", "wrong_type"]
        errors = {dict(r.headers)["gyre_dlq_reason"].decode(): dict(r.headers)["gyre_dlq_error"].decode() for r in dead}
        assert "'colour'" in errors["unknown_feature"] and "'orders'" in errors["wrong_type"]
        assert events_pb2.FeatureEvent.FromString(dead[0].value).feature_view == "customer_stats"

        # Online: the late older event did not overwrite; statuses per feature like Feast.
        reply = await stub.GetOnlineFeatures(pb.GetOnlineFeaturesRequest(
            feature_view="customer_stats", entity_ids=["c1", "c2", "ghost"]))
        c1, c2, ghost = reply.rows
        assert c1.found and c1.values["spend"].double_value == 20.0 and c1.values["segment"].string_value == "gold"
        assert set(c1.statuses.values()) == {pb.FEATURE_STATUS_PRESENT}
        assert c1.event_time == ts(20)
        assert c2.statuses["churned"] == pb.FEATURE_STATUS_NULL_VALUE
        assert not c2.values["churned"].HasField("bool_value")
        assert not ghost.found and set(ghost.statuses.values()) == {pb.FEATURE_STATUS_NOT_FOUND}
        assert not ghost.values["spend"].HasField("double_value")

        # Training set over the window: one row per valid event, features as of each row's time.
        chunks = [m async for m in stub.BuildTrainingSet(pb.BuildTrainingSetRequest(
            feature_view="customer_stats", label="churned", window_start=ts(0), window_end=ts(30), chunk_size=2))]
        summary = chunks[-1].summary
        assert summary.row_count == 3 and summary.unlabelled_rows_dropped == 1 and summary.label == "churned"
        assert list(summary.features) == ["spend", "orders", "segment"] and len(summary.fingerprint) == 64
        entity_ids = [e for m in chunks[:-1] for e in m.chunk.entity_ids]
        times = [t for m in chunks[:-1] for t in m.chunk.event_times_unix_us]
        orders = [v for m in chunks[:-1] for v in m.chunk.features[1].int64_values]
        labels = [v for m in chunks[:-1] for v in m.chunk.label.bool_values]
        assert entity_ids == ["c1", "c1", "c1"]  # c2's row (t=0) has a null label: dropped
        assert times == [int((T0 + timedelta(minutes=m)).timestamp() * 1_000_000) for m in (5, 10, 20)]
        assert orders == [1, 2, 3] and labels == [True, False, False]

        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.BuildTrainingSet(pb.BuildTrainingSetRequest(feature_view="customer_stats",
                                                                            label="nope")):
                pass
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        # Synchronous writes: all or nothing.
        written = await stub.WriteFeatures(pb.WriteFeaturesRequest(events=[event("c9", 1, orders=9)]))
        assert written.written == 1
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.WriteFeatures(pb.WriteFeaturesRequest(events=[event("c9", 2, orders=8), event("c9", 3, x=1)]))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "event 1" in (info.value.details() or "")


async def test_rest_api(service: ServiceRunner) -> None:
    base = f"http://127.0.0.1:{service.http_port}/api/v1"
    now = datetime.now(UTC).replace(microsecond=0)
    view = {"name": "session_stats", "entity": "session", "ttl_seconds": 600,
            "features": [{"name": "clicks", "type": "int"}, {"name": "device", "type": "string"},
                         {"name": "converted", "type": "bool"}, {"name": "dwell_s", "type": "float"}]}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{base}/feature-views", json=view)
        assert response.status_code == 201, response.text
        assert (await client.post(f"{base}/feature-views", json=view)).status_code == 200
        assert (await client.post(f"{base}/feature-views", json={**view, "name": "Bad Name"})).status_code == 422
        assert (await client.get(f"{base}/feature-views/nope")).status_code == 404

        def stamp(seconds_ago: float) -> str:
            return (now - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")

        events = [
            {"featureView": "session_stats", "entityId": "s1", "eventTime": stamp(900),
             "values": {"clicks": {"int64Value": "1"}, "device": {"stringValue": "ios"},
                        "dwell_s": {"doubleValue": 1.5}, "converted": {"boolValue": False}}},
            {"featureView": "session_stats", "entityId": "s1", "eventTime": stamp(60),
             "values": {"clicks": {"int64Value": "4"}, "converted": {"boolValue": True}}},
            {"featureView": "session_stats", "entityId": "s2", "eventTime": stamp(30),
             "values": {"clicks": {"int64Value": "2"}, "device": {"stringValue": "web"}, "dwell_s": {}}},
        ]
        response = await client.post(f"{base}/feature-events", json={"events": events})
        assert response.json() == {"written": 3}
        bad = await client.post(f"{base}/feature-events", json={"events": [{**events[0], "values": {"zzz": {}}}]})
        assert bad.status_code == 422 and "zzz" in bad.json()["detail"]

        online = (await client.post(f"{base}/online-features", json={
            "feature_view": "session_stats", "entity_ids": ["s1", "s2", "s3"]})).json()
        s1, s2, s3 = online["rows"]
        assert s1["values"] == {"clicks": 4, "device": None, "converted": True, "dwell_s": None}
        assert s1["statuses"] == {"clicks": "PRESENT", "device": "OUTSIDE_TTL", "converted": "PRESENT",
                                  "dwell_s": "OUTSIDE_TTL"}
        assert s2["statuses"]["dwell_s"] == "NULL_VALUE" and s2["statuses"]["converted"] == "NOT_FOUND"
        assert not s3["found"] and s3["event_time"] is None
        missing = await client.post(f"{base}/online-features", json={"feature_view": "session_stats",
                                                                      "entity_ids": ["s1"], "features": ["nope"]})
        assert missing.status_code == 404

        training = (await client.post(f"{base}/training-sets", json={
            "feature_view": "session_stats", "label": "converted", "features": ["clicks", "device"],
            "entity_rows": [{"entity_id": "s1", "timestamp": stamp(400)}, {"entity_id": "s1", "timestamp": stamp(0)},
                            {"entity_id": "s2", "timestamp": stamp(0)}],
            "keep_unlabelled": True})).json()
        assert training["entity_ids"] == ["s1", "s1", "s2"]
        assert training["columns"] == {"clicks": [1, 4, 2], "device": ["ios", None, "web"]}
        assert training["labels"] == [False, True, None] and training["row_count"] == 3
        naive = await client.post(f"{base}/training-sets", json={
            "feature_view": "session_stats", "label": "converted", "window_start": "2025-01-01T00:00:00"})
        assert naive.status_code == 422

        profile = (await client.get(f"{base}/feature-views/session_stats/profile")).json()
        assert profile["rows"] == 3 and profile["entities"] == 2
        stats = {f["name"]: f for f in profile["features"]}
        assert (stats["clicks"]["count"], stats["clicks"]["mean"], stats["clicks"]["max"]) == (3, 7 / 3, 4)
        assert (stats["dwell_s"]["count"], stats["dwell_s"]["missing"]) == (1, 2)
        assert stats["device"]["top"] == [{"value": "ios", "count": 1}, {"value": "web", "count": 1}]
        window = await client.get(f"{base}/feature-views/session_stats/profile",
                                  params={"start": stamp(120), "end": stamp(-1)})
        assert window.json()["rows"] == 2
