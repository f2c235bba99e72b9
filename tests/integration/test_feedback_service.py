"""The feedback service in-process on real Tansu + PostgreSQL: inference events arrive through Kafka as
serving publishes them, feedback over HTTP (httpx), gRPC and straight to Kafka; rows, FeedbackEvents,
quality numbers, late attribution, invalid input, and the quality-drop retraining request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from support.kafka import fast_kafka, read_all, read_topic
from support.services import fast_settings, running
from support.waiting import wait_until

from gyre_common.bus import Envelope, Publisher, ensure_topics
from gyre_common.runner import ServiceRunner
from gyre_common.settings import KafkaSettings
from gyre_common.topics import (
    FEEDBACK_EVENTS,
    INFERENCE_EVENTS,
    MONITOR_ALERTS,
    REGISTRY_EVENTS,
    TRAINING_REQUESTS,
    dead_letter_topic,
    full_name,
)
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_contracts.gyre.feedback.v1 import feedback_service_pb2 as pb
from gyre_contracts.gyre.feedback.v1 import feedback_service_pb2_grpc as pb_grpc
from gyre_feedback.bootstrap import bootstrap
from gyre_feedback.service import SPEC
from gyre_feedback.settings import FeedbackSettings

pytestmark = pytest.mark.integration

MODEL = "churn"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def inference_event(prediction_id: str, predicted: int, *, version: int = 1, minute: int = 0,
                    alias: str = "production", shadow: bool = False) -> events_pb2.InferenceEvent:
    """An InferenceEvent as serving emits it for one row of a classifier."""
    event = events_pb2.InferenceEvent(prediction_id=prediction_id, model_name=MODEL, model_version=version,
                                      alias=alias, request_id=prediction_id.split(":")[0], shadow=shadow,
                                      latency_ms=1.5)
    event.served_at.FromDatetime(T0 + timedelta(minutes=minute))
    event.inputs["tenure"].double_value = 12.0
    event.outputs["predict"].int64_value = predicted
    event.outputs["proba_1"].double_value = 0.9 if predicted else 0.1
    return event


@pytest.fixture
def kafka(bootstrap_servers: str, unique: str) -> KafkaSettings:
    return fast_kafka(bootstrap_servers, f"fb{unique}.", retry_backoff_ms=20, max_retries=1)


@pytest.fixture
async def service(kafka: KafkaSettings, database_url: str) -> AsyncIterator[ServiceRunner]:
    settings = fast_settings(FeedbackSettings, outbox_poll_interval_s=0.2, retrain_window_labels=4,
                             retrain_accuracy_threshold=0.75, retrain_cooldown_s=3600)
    await ensure_topics(kafka, [INFERENCE_EVENTS, FEEDBACK_EVENTS, REGISTRY_EVENTS, MONITOR_ALERTS,
                                TRAINING_REQUESTS])
    async with running(SPEC, bootstrap, settings, kafka=kafka, database_url=database_url) as runner:
        yield runner


@pytest.fixture
async def http(service: ServiceRunner) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}", timeout=10) as client:
        await wait_until(lambda: _ready(client), what="/readyz")
        yield client


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def publish_inference(kafka: KafkaSettings, events: list[events_pb2.InferenceEvent]) -> None:
    async with Publisher(kafka, service="serving") as pub:
        await pub.publish_many(INFERENCE_EVENTS, [(e.prediction_id, e) for e in events])


async def count(db: asyncpg.Connection, sql: str, *args: Any) -> int:
    return int(await db.fetchval(sql, *args))


async def has_count(db: asyncpg.Connection, sql: str, expected: int) -> bool:
    return await count(db, sql) == expected


async def test_feedback_is_stored_emitted_joined_and_scored(
        service: ServiceRunner, http: httpx.AsyncClient, kafka: KafkaSettings, db: asyncpg.Connection) -> None:
    # Feedback on "late:0" arrives before its inference event: accepted, not yet attributed.
    early = await http.post("/api/v1/feedback", json={"prediction_id": "late:0", "corrected_label": 1,
                                                      "feedback_id": "fb-late"})
    assert early.status_code == 201, early.text
    assert early.json() == {"feedback_id": "fb-late", "duplicate": False, "attributed": False}

    # v1 predicts 1 for p1..p5; v2 predicts 0 for q1; a shadow prediction is never scored.
    await publish_inference(kafka, [inference_event(f"req-{i}", 1, minute=i) for i in range(1, 6)]
                            + [inference_event("q1", 0, version=2, minute=7),
                               inference_event("s1", 0, version=3, minute=8, shadow=True)])
    await wait_until(lambda: has_count(db, "SELECT count(*) FROM feedback.predictions", 7),
                     what="all predictions stored")

    posts = [
        {"prediction_id": "req-1", "corrected_label": "1", "feedback_id": "fb-1"},  # "1" matches int 1
        {"prediction_id": "req-2", "corrected_label": 0, "feedback_id": "fb-2"},  # wrong
        {"prediction_id": "req-3", "stars": 4, "author": "ana"},
        {"prediction_id": "req-3", "stars": 2},
        {"prediction_id": "req-4", "thumbs_up": True},
        {"prediction_id": "req-4", "thumbs_up": False},
        {"prediction_id": "req-5", "score": 0.25, "comment": "meh"},
        {"prediction_id": "req-5", "comment": "just a comment"},
        {"prediction_id": "q1", "corrected_label": 0},
        {"prediction_id": "s1", "corrected_label": 1},
    ]
    for body in posts:
        response = await http.post("/api/v1/feedback", json=body)
        assert response.status_code == 201, response.text
        assert response.json()["attributed"] is True

    # A retry with the same feedback id (in the body or as Idempotency-Key) is stored once.
    retry = await http.post("/api/v1/feedback", json={"prediction_id": "req-1", "corrected_label": "1",
                                                      "feedback_id": "fb-1"})
    assert (retry.status_code, retry.json()["duplicate"]) == (200, True)
    keyed = [await http.post("/api/v1/feedback", json={"prediction_id": "req-2", "stars": 5},
                             headers={"Idempotency-Key": "key-7"}) for _ in range(2)]
    assert [r.status_code for r in keyed] == [201, 200]
    assert keyed[1].json() == {"feedback_id": "key-7", "duplicate": True, "attributed": True}
    assert await count(db, "SELECT count(*) FROM feedback.feedback") == 12
    assert await count(db, "SELECT count(*) FROM feedback.feedback WHERE feedback_id = 'fb-1'") == 1

    # Every stored feedback is published once on feedback.events, keyed by prediction id; model
    # and version are filled in from the join when the prediction was known.
    async def feedback_events() -> list[Envelope] | None:
        found = await read_all(kafka, FEEDBACK_EVENTS)
        return found if len(found) >= 12 else None

    published = await wait_until(feedback_events, what="12 FeedbackEvents")
    by_id = {env.message.feedback_id: env for env in published}
    assert len(published) == len(by_id) == 12
    assert by_id["fb-1"].key == "req-1"
    assert (by_id["fb-1"].message.model_name, by_id["fb-1"].message.model_version) == (MODEL, 1)
    assert by_id["fb-1"].message.corrected_label.string_value == "1"
    assert by_id["fb-late"].message.model_version == 0  # unknown when it was given
    assert by_id["fb-1"].source == "feedback"

    # The late inference event arrives: the waiting feedback is attributed (1 == 1: correct).
    window = {"window_start": (T0 - timedelta(minutes=1)).isoformat(), "window_end": datetime.now(UTC).isoformat()}

    async def v1_quality() -> dict[str, Any]:
        response = await http.get(f"/api/v1/models/{MODEL}/quality", params=window)
        assert response.status_code == 200, response.text
        return {v["model_version"]: v for v in response.json()["versions"]}[1]

    assert (await v1_quality())["labelled_count"] == 2
    await publish_inference(kafka, [inference_event("late:0", 1, minute=6)])

    async def late_joined() -> dict[str, Any] | None:
        quality = await v1_quality()
        return quality if quality["labelled_count"] == 3 else None

    v1 = await wait_until(late_joined, what="late feedback attributed")
    assert v1 == {"model_version": 1, "predictions": 6, "feedback_count": 10, "labelled_count": 3,
                  "accuracy": pytest.approx(2 / 3), "mean_stars": pytest.approx((4 + 2 + 5) / 3),
                  "thumbs_up_rate": 0.5, "mean_score": 0.25}

    response = await http.get(f"/api/v1/models/{MODEL}/quality", params=window)
    versions = response.json()["versions"]
    assert [v["model_version"] for v in versions] == [2, 1]  # newest first; shadow v3 left out
    assert versions[0] == {"model_version": 2, "predictions": 1, "feedback_count": 1, "labelled_count": 1,
                           "accuracy": 1.0, "mean_stars": None, "thumbs_up_rate": None, "mean_score": None}

    # The same over gRPC, plus GetPredictionFeedback and SubmitFeedback.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = pb_grpc.FeedbackServiceStub(channel)
        request = pb.GetQualityRequest(model_name=MODEL, model_version=1)
        request.window_start.FromDatetime(T0 - timedelta(minutes=1))
        reply = await stub.GetQuality(request)
        assert [v.model_version for v in reply.versions] == [1]
        assert reply.versions[0].accuracy == pytest.approx(2 / 3)
        assert reply.versions[0].labelled_count == 3
        assert not reply.versions[0].HasField("bleu")
        listed = await stub.GetPredictionFeedback(pb.GetPredictionFeedbackRequest(prediction_id="req-3"))
        assert [f.stars for f in listed.feedback] == [4, 2]
        submitted = await stub.SubmitFeedback(pb.SubmitFeedbackRequest(feedback=events_pb2.FeedbackEvent(
            prediction_id="req-5", feedback_id="grpc-1",
            corrected_label=common_pb2.FeatureValue(int64_value=1))))
        assert (submitted.feedback_id, submitted.duplicate) == ("grpc-1", False)
        again = await stub.SubmitFeedback(pb.SubmitFeedbackRequest(feedback=events_pb2.FeedbackEvent(
            prediction_id="req-5", feedback_id="grpc-1", stars=1)))
        assert again.duplicate

    # A feedback UI may publish JSON FeedbackEvents straight to the topic.
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        payload = {"feedbackId": "kafka-1", "predictionId": "req-2", "thumbsUp": False, "author": "kiosk"}
        await producer.send_and_wait(full_name(FEEDBACK_EVENTS, kafka.topic_prefix), json.dumps(payload).encode(),
                                     key=b"req-2", headers=[("content-type", b"application/json")])
    finally:
        await producer.stop()
    await wait_until(lambda: count(db, "SELECT count(*) FROM feedback.feedback WHERE feedback_id = 'kafka-1'"),
                     what="feedback consumed from Kafka")
    listed_http = await http.get("/api/v1/predictions/req-2/feedback")
    assert {f["feedback_id"] for f in listed_http.json()["feedback"]} == {"fb-2", "key-7", "kafka-1"}


async def test_invalid_input_gets_clear_errors(service: ServiceRunner, http: httpx.AsyncClient,
                                               db: asyncpg.Connection) -> None:
    bad = await http.post("/api/v1/feedback", json={"prediction_id": "has space", "stars": 9})
    assert bad.status_code == 400
    assert {e["field"] for e in bad.json()["errors"]} == {"prediction_id", "stars"}
    two = await http.post("/api/v1/feedback", json={"prediction_id": "p", "stars": 3, "thumbs_up": True})
    assert two.status_code == 400 and "exactly one" in two.json()["detail"]
    empty = await http.post("/api/v1/feedback", json={"prediction_id": "p"})
    assert empty.status_code == 400
    long_comment = await http.post("/api/v1/feedback", json={"prediction_id": "p", "comment": "x" * 4097})
    assert long_comment.status_code == 400 and long_comment.json()["errors"][0]["field"] == "comment"
    wrong_type = await http.post("/api/v1/feedback", json={"prediction_id": "p", "stars": "five"})
    assert wrong_type.status_code == 422
    unknown = await http.post("/api/v1/feedback", json={"prediction_id": "p", "stars": 3, "rating": 3})
    assert unknown.status_code == 422
    differ = await http.post("/api/v1/feedback", json={"prediction_id": "p", "stars": 3, "feedback_id": "a"},
                             headers={"Idempotency-Key": "b"})
    assert differ.status_code == 400
    assert await count(db, "SELECT count(*) FROM feedback.feedback") == 0

    unseen = await http.get("/api/v1/models/nobody/quality")
    assert unseen.status_code == 404
    backwards = await http.get(f"/api/v1/models/{MODEL}/quality",
                               params={"window_start": "2025-01-02T00:00:00Z", "window_end": "2025-01-01T00:00:00Z"})
    assert backwards.status_code == 400

    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = pb_grpc.FeedbackServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SubmitFeedback(pb.SubmitFeedbackRequest(feedback=events_pb2.FeedbackEvent(
                prediction_id="p", score=1.5)))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "score" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetQuality(pb.GetQualityRequest(model_name="nobody"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetPredictionFeedback(pb.GetPredictionFeedbackRequest())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_invalid_feedback_from_kafka_is_dead_lettered_at_once_and_the_rest_is_stored(
        service: ServiceRunner, http: httpx.AsyncClient, kafka: KafkaSettings, db: asyncpg.Connection) -> None:
    invalid = events_pb2.FeedbackEvent(prediction_id="has space", feedback_id="fb-bad", stars=9)
    valid = events_pb2.FeedbackEvent(prediction_id="p-ok", feedback_id="fb-ok", stars=4)
    async with Publisher(kafka, service="ui") as pub:
        await pub.publish(FEEDBACK_EVENTS, invalid, key=invalid.prediction_id)
        await pub.publish(FEEDBACK_EVENTS, valid, key=valid.prediction_id)
    await wait_until(lambda: has_count(db, "SELECT count(*) FROM feedback.feedback WHERE feedback_id = 'fb-ok'", 1),
                     what="the valid feedback behind the invalid one")
    dead = await read_topic(kafka, dead_letter_topic("feedback", kafka.topic_prefix), 1, exact=True)
    headers = dict(dead[0].headers)
    assert headers["gyre_dlq_reason"] == b"invalid_feedback"
    assert headers["gyre_dlq_attempts"] == b"1"  # no retry loop for content that cannot succeed
    assert b"prediction_id" in headers["gyre_dlq_error"] and b"stars" in headers["gyre_dlq_error"]
    # Each consumer's progress is part of readiness, and the dead letter is counted.
    checks = (await http.get("/readyz")).json()["checks"]
    assert {"consumer:feedback", "consumer:feedback-inference", "consumer:feedback-registry"} <= set(checks)
    metrics = (await http.get("/metrics")).text
    group = f"{kafka.topic_prefix}feedback"
    dead_lettered = [line for line in metrics.splitlines() if line.startswith("gyre_bus_dead_lettered_records_total{")
                     and f'group="{group}"' in line and 'reason="invalid_feedback"' in line]
    assert len(dead_lettered) == 1 and dead_lettered[0].endswith(" 1.0")
    assert any(line.startswith("gyre_bus_consumer_stalled_seconds{") and f'group="{group}"' in line
               for line in metrics.splitlines())


async def test_quality_drop_requests_retraining_once(service: ServiceRunner, http: httpx.AsyncClient,
                                                     kafka: KafkaSettings, db: asyncpg.Connection) -> None:
    lineage = events_pb2.RegistryEvent(kind=events_pb2.REGISTRY_EVENT_KIND_VERSION_CREATED, model_name=MODEL,
                                       version=1,
                                       lineage=common_pb2.Lineage(feature_views=["customers"], label="churned"))
    async with Publisher(kafka, service="registry") as pub:
        await pub.publish(REGISTRY_EVENTS, lineage, key=MODEL)
    await wait_until(lambda: count(db, "SELECT count(*) FROM feedback.model_versions"), what="lineage stored")

    await publish_inference(kafka, [inference_event(f"d{i}", 1, minute=i) for i in range(10)])
    await wait_until(lambda: has_count(db, "SELECT count(*) FROM feedback.predictions", 10),
                     what="predictions stored")
    # Window of 4 labels, threshold 0.75: after 1 right + 3 wrong the accuracy is 0.25 -> drop.
    labels = [1, 0, 0, 0, 0, 0, 0, 0]
    for i, label in enumerate(labels):
        response = await http.post("/api/v1/feedback", json={
            "prediction_id": f"d{i}", "corrected_label": label, "feedback_id": f"drop-{i}",
            "submitted_at": (T0 + timedelta(hours=2, seconds=i)).isoformat()})
        assert response.status_code == 201, response.text

    # Each POST evaluated the drop in its own transaction before answering, so the outbox now holds
    # everything they caused; once it is drained, the topics hold every event there will be. The
    # labels after the first drop fall inside the cooldown: still one alert and one request.
    assert await count(db, "SELECT count(*) FROM feedback.outbox WHERE topic = $1", TRAINING_REQUESTS) == 1
    await wait_until(lambda: has_count(db, "SELECT count(*) FROM feedback.outbox WHERE published_at IS NULL", 0),
                     what="outbox drained")
    requests = await read_all(kafka, TRAINING_REQUESTS)
    alerts = await read_all(kafka, MONITOR_ALERTS)
    assert len(requests) == 1 and len(alerts) == 1
    request, alert = requests[0].message, alerts[0].message
    assert isinstance(request, events_pb2.TrainingRequest) and isinstance(alert, events_pb2.MonitorAlert)
    assert (request.model_name, request.feature_view, request.label) == (MODEL, "customers", "churned")
    assert request.reason == events_pb2.TRAINING_REASON_FEEDBACK
    assert request.requested_by == "feedback" and request.promote_to_alias == "production"
    assert request.evidence["alert_id"] == alert.alert_id
    assert request.evidence["accuracy"] == "0.25" and request.evidence["labelled_feedback"] == "4"
    assert request.evidence["newest_feedback_id"] == "drop-3"
    assert requests[0].ce_id == request.request_id and requests[0].key == MODEL
    assert alert.kind == events_pb2.ALERT_KIND_QUALITY_DROP and alert.model_version == 1
    assert alert.quality[0].metric == "accuracy" and alert.quality[0].samples == 4
    stored = await db.fetchrow("SELECT alert_id, training_request_id FROM feedback.quality_alerts")
    assert (stored["alert_id"], stored["training_request_id"]) == (alert.alert_id, request.request_id)
