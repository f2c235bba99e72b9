"""Corrected labels flow back into training (issue #11, item 6), on real Tansu + PostgreSQL.

The features and feedback services run in-process on one broker and one database. Rows with
labels are in the feature store; serving's inference events (published as serving does) name each
prediction's entity and event time; the registry announced the model version's feature view and
label. A corrected label posted to feedback's HTTP API reaches the feature store as a label event,
and the next training set holds the corrected label in place of the old one, with the same rows.
A correction given before its inference event arrived goes once the prediction is stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from support.kafka import fast_kafka, read_all
from support.services import fast_settings, running
from support.waiting import wait_until

from gyre_common.bus import Publisher, ensure_topics
from gyre_common.settings import KafkaSettings
from gyre_common.topics import (
    FEATURES_EVENTS,
    FEEDBACK_EVENTS,
    INFERENCE_EVENTS,
    MONITOR_ALERTS,
    REGISTRY_EVENTS,
    TRAINING_REQUESTS,
)
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_features.bootstrap import bootstrap as features_bootstrap
from gyre_features.service import SPEC as FEATURES
from gyre_features.settings import FeaturesSettings
from gyre_feedback.bootstrap import bootstrap as feedback_bootstrap
from gyre_feedback.service import SPEC as FEEDBACK
from gyre_feedback.settings import FeedbackSettings

pytestmark = pytest.mark.integration

MODEL = "churn"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def at(i: int) -> datetime:
    return T0 + timedelta(minutes=i)


def inference_event(prediction_id: str, entity: str, event_time: datetime, predicted: int) -> events_pb2.InferenceEvent:
    event = events_pb2.InferenceEvent(prediction_id=prediction_id, model_name=MODEL, model_version=1,
                                      alias="production", request_id=prediction_id, entity_id=entity)
    event.served_at.FromDatetime(datetime.now(UTC))
    event.event_time.FromDatetime(event_time)
    event.inputs["tenure"].double_value = 1.0
    event.outputs["predict"].int64_value = predicted
    return event


@pytest.fixture
async def services(bootstrap_servers: str, unique: str,
                   database_url: str) -> AsyncIterator[tuple[str, str, KafkaSettings]]:
    kafka = fast_kafka(bootstrap_servers, f"fc{unique}.")
    await ensure_topics(kafka, [FEATURES_EVENTS, INFERENCE_EVENTS, FEEDBACK_EVENTS, REGISTRY_EVENTS,
                                MONITOR_ALERTS, TRAINING_REQUESTS])
    async with running(FEATURES, features_bootstrap, fast_settings(FeaturesSettings), kafka=kafka,
                       database_url=database_url) as features, \
            running(FEEDBACK, feedback_bootstrap, fast_settings(FeedbackSettings, outbox_poll_interval_s=0.2),
                    kafka=kafka, database_url=database_url) as feedback:
        yield f"http://127.0.0.1:{features.http_port}/api/v1", f"http://127.0.0.1:{feedback.http_port}/api/v1", kafka


async def test_corrected_labels_reach_the_next_training_set(
        services: tuple[str, str, KafkaSettings], database_url: str) -> None:
    features_api, feedback_api, kafka = services
    entities = [f"c{i}" for i in range(5)]
    labels = [1, 1, 0, 0, 1]
    async with httpx.AsyncClient(timeout=30) as http:
        view = {"name": "churn_stats", "entity": "customer", "features": [
            {"name": "tenure", "type": "float"}, {"name": "churned", "type": "int"}]}
        assert (await http.post(f"{features_api}/feature-views", json=view)).status_code == 201
        written = await http.post(f"{features_api}/feature-events", json={"events": [
            {"featureView": "churn_stats", "entityId": entity, "eventTime": iso(at(i)),
             "values": {"tenure": {"doubleValue": float(i)}, "churned": {"int64Value": str(labels[i])}}}
            for i, entity in enumerate(entities)]})
        assert written.status_code == 200, written.text

        async def training_set() -> dict[str, Any]:
            answer = await http.post(f"{features_api}/training-sets", json={
                "feature_view": "churn_stats", "label": "churned"})
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        before = await training_set()
        assert before["row_count"] == 5 and before["labels"] == labels

        # The registry announced v1's lineage; serving's inference events name entity and event time.
        async with Publisher(kafka, service="registry") as pub:
            await pub.publish(REGISTRY_EVENTS, events_pb2.RegistryEvent(
                kind=events_pb2.REGISTRY_EVENT_KIND_VERSION_CREATED, model_name=MODEL, version=1,
                lineage=common_pb2.Lineage(feature_views=["churn_stats"], label="churned")), key=MODEL)
        async with Publisher(kafka, service="serving") as pub:
            await pub.publish_many(INFERENCE_EVENTS, [
                (f"p{i}", inference_event(f"p{i}", entities[i], at(i), labels[i])) for i in (1, 2)])
            # A prediction without an entity: its correction has nowhere to go in the feature store.
            anonymous = inference_event("p-anon", "", at(0), 1)
            anonymous.ClearField("event_time")
            await pub.publish(INFERENCE_EVENTS, anonymous, key="p-anon")
        conn = await asyncpg.connect(database_url)
        try:
            async def known() -> bool:
                lineage = await conn.fetchval("SELECT count(*) FROM feedback.model_versions")
                predictions = await conn.fetchval("SELECT count(*) FROM feedback.predictions")
                return bool(lineage == 1 and predictions == 3)

            await wait_until(known, within_s=30, what="lineage and predictions stored by feedback")
        finally:
            await conn.close()

        # c1 did not churn after all (1 -> 0); a comment-only and an anonymous correction change nothing.
        for body in ({"prediction_id": "p1", "corrected_label": 0, "feedback_id": "fix-c1"},
                     {"prediction_id": "p2", "comment": "looks right", "feedback_id": "note-c2"},
                     {"prediction_id": "p-anon", "corrected_label": 0, "feedback_id": "fix-anon"}):
            answer = await http.post(f"{feedback_api}/feedback", json=body)
            assert answer.status_code in (200, 201), answer.text

        async def corrected(entity_index: int, value: int) -> dict[str, Any] | None:
            current = await training_set()
            return current if current["labels"][entity_index] == value else None

        after = await wait_until(lambda: corrected(1, 0), within_s=30, what="the corrected label of c1")
        assert after["row_count"] == 5 and after["entity_ids"] == before["entity_ids"]
        assert after["labels"] == [1, 0, 0, 0, 1]
        assert after["columns"] == before["columns"]  # features untouched
        assert after["fingerprint"] != before["fingerprint"]
        online = (await http.post(f"{features_api}/online-features", json={
            "feature_view": "churn_stats", "entity_ids": ["c1"]})).json()
        assert online["rows"][0]["values"] == {"tenure": 1.0, "churned": 0}

        # A correction posted before its prediction arrived goes once the inference event is stored.
        early = await http.post(f"{feedback_api}/feedback", json={
            "prediction_id": "p3", "corrected_label": 1, "feedback_id": "fix-c3"})
        assert early.status_code in (200, 201), early.text
        async with Publisher(kafka, service="serving") as pub:
            await pub.publish(INFERENCE_EVENTS, inference_event("p3", entities[3], at(3), 0), key="p3")
        final = await wait_until(lambda: corrected(3, 1), within_s=30, what="the early correction of c3")
        assert final["row_count"] == 5 and final["labels"] == [1, 0, 0, 1, 1]

    # Exactly two label events went to features.events (none for the comment or the anonymous one).
    sent = [e for e in await read_all(kafka, FEATURES_EVENTS) if e.source == "feedback"]
    assert sorted((e.message.entity_id, e.message.values["churned"].int64_value) for e in sent) == [
        ("c1", 0), ("c3", 1)]
