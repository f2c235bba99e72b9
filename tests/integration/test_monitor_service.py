"""The monitor in-process on real Tansu + PostgreSQL: the reference profile arrives through
registry.events + the artifact store, inference events through Kafka; alerts and retraining requests
leave through Kafka; the APIs answer over real gRPC and HTTP. Also: a restart mid-stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from support.kafka import fast_kafka, read_all
from support.services import fast_settings, running
from support.waiting import wait_until

from gyre_common.artifacts import LocalArtifactStore
from gyre_common.bus import Publisher
from gyre_common.profile import PROFILE_FORMAT, build_reference_profile
from gyre_common.profile_wire import encode_profile
from gyre_common.runner import ServiceRunner
from gyre_common.settings import KafkaSettings
from gyre_common.topics import INFERENCE_EVENTS, MONITOR_ALERTS, REGISTRY_EVENTS, TRAINING_REQUESTS
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2 as pb
from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2_grpc as pb_grpc
from gyre_monitor.bootstrap import bootstrap
from gyre_monitor.service import SPEC
from gyre_monitor.settings import MonitorSettings

pytestmark = [
    pytest.mark.integration,
    # Evidently (HTML report) imports modules that warn about their own dependencies.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
COLOURS = np.array(["red", "green", "blue"])
WINDOW = 200
SEED = 8  # unshifted windows: no dataset drift; first shifted window: exactly x1 and colour
MODEL = "churn"


def columns(rng: np.random.Generator, n: int, shift: float = 0.0, tilt: float = 0.0) -> dict[str, list[Any]]:
    p = [0.5 - tilt, 0.3, 0.2 + tilt]
    return {"x1": rng.normal(10 + shift, 2, n).tolist(), "x2": rng.gamma(2, 3, n).tolist(),
            "colour": COLOURS[rng.choice(3, n, p=p)].tolist(), "plan": rng.integers(0, 4, n).tolist()}


def scenario() -> tuple[dict[str, np.ndarray], list[events_pb2.InferenceEvent]]:
    """Reference data and 1000 inference events: 2 clean windows, then 3 with x1 and colour shifted."""
    rng = np.random.default_rng(SEED)
    reference = {k: np.asarray(v) for k, v in columns(rng, 800).items()}
    parts = [columns(rng, WINDOW) for _ in range(2)] + [columns(rng, WINDOW, 3.0, 0.3) for _ in range(3)]
    events = []
    for part in parts:
        for i in range(WINDOW):
            event = events_pb2.InferenceEvent(prediction_id=f"p{len(events)}", model_name=MODEL, model_version=1,
                                              alias="champion", request_id=f"r{len(events)}")
            event.served_at.FromDatetime(T0 + timedelta(seconds=len(events)))
            for name, values in part.items():
                value = values[i]
                if isinstance(value, str):
                    event.inputs[name].string_value = value
                elif isinstance(value, int):
                    event.inputs[name].int64_value = value
                else:
                    event.inputs[name].double_value = value
            event.outputs["predict"].int64_value = 1
            events.append(event)
    return reference, events


@pytest.fixture
def kafka(bootstrap_servers: str, unique: str) -> KafkaSettings:
    return fast_kafka(bootstrap_servers, f"m{unique}.")


@pytest.fixture
def artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalArtifactStore:
    monkeypatch.setenv("GYRE_ARTIFACTS_ROOT", str(tmp_path / "artifacts"))
    return LocalArtifactStore(tmp_path / "artifacts")


def monitor(kafka: KafkaSettings, database_url: str) -> AbstractAsyncContextManager[ServiceRunner]:
    settings = fast_settings(MonitorSettings, window_size=WINDOW, cooldown_s=3600, keep_windows=100,
                             outbox_poll_interval_s=0.2)
    return running(SPEC, bootstrap, settings, kafka=kafka, database_url=database_url)


@pytest.fixture
async def service(kafka: KafkaSettings, database_url: str,
                  artifacts: LocalArtifactStore) -> AsyncIterator[ServiceRunner]:
    async with monitor(kafka, database_url) as started:
        yield started


async def register_version(kafka: KafkaSettings, artifacts: LocalArtifactStore,
                           reference: dict[str, np.ndarray]) -> None:
    """What the trainer and the registry do: store the profile (unnumbered, as the trainer writes it
    before registering), announce the version with it."""
    profile = build_reference_profile(reference, model_name=MODEL, model_version=0)
    ref = artifacts.put(encode_profile(profile))
    event = events_pb2.RegistryEvent(
        kind=events_pb2.REGISTRY_EVENT_KIND_VERSION_CREATED, model_name=MODEL, version=1, actor="trainer",
        lineage=common_pb2.Lineage(
            feature_views=["customers"], label="churned",
            reference_profile=common_pb2.ArtifactRef(uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size,
                                                     format=PROFILE_FORMAT)),
    )
    async with Publisher(kafka, service="registry") as publisher:
        await publisher.publish(REGISTRY_EVENTS, event, key=MODEL)


async def publish(kafka: KafkaSettings, events: list[events_pb2.InferenceEvent]) -> None:
    async with Publisher(kafka, service="serving") as publisher:
        await publisher.publish_many(INFERENCE_EVENTS, [(MODEL, e) for e in events])


async def windows(stub: pb_grpc.MonitorServiceStub) -> list[pb.DriftReport]:
    return list((await stub.ListDriftWindows(pb.ListDriftWindowsRequest(model_name=MODEL))).reports)


async def test_drift_loop_over_kafka(service: ServiceRunner, kafka: KafkaSettings,
                                     artifacts: LocalArtifactStore) -> None:
    reference, events = scenario()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = pb_grpc.MonitorServiceStub(channel)
        await register_version(kafka, artifacts, reference)

        async def has_profile() -> bool:
            try:
                await stub.GetReferenceProfile(pb.GetReferenceProfileRequest(model_name=MODEL, model_version=1))
                return True
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
                return False

        await wait_until(has_profile, what="the profile from registry.events")

        # Unshifted traffic: two clean windows, nothing raised.
        await publish(kafka, events[:400])
        await wait_until(lambda: _count(stub, 2), what="two clean windows")
        assert [w.dataset_drift for w in await windows(stub)] == [False, False]
        assert await read_all(kafka, MONITOR_ALERTS) == []
        assert await read_all(kafka, TRAINING_REQUESTS) == []

        # x1 and colour shifted for three windows: one alert, one request, however many windows drift.
        await publish(kafka, events[400:])
        await wait_until(lambda: _count(stub, 5), what="five windows")
        assert [w.dataset_drift for w in await windows(stub)] == [False, False, True, True, True]
        await wait_until(lambda: _topic_has(kafka, TRAINING_REQUESTS), what="the training request")
        [alert_env] = await read_all(kafka, MONITOR_ALERTS)
        [request_env] = await read_all(kafka, TRAINING_REQUESTS)
        alert, request = alert_env.message, request_env.message
        assert sorted(f.feature for f in alert.feature_drifts if f.drifted) == ["colour", "x1"]
        assert alert_env.ce_id == alert.alert_id and alert_env.key == MODEL
        assert request.reason == events_pb2.TRAINING_REASON_DRIFT
        assert request.evidence["alert_id"] == alert.alert_id
        assert (request.feature_view, request.label) == ("customers", "churned")

        # gRPC reads.
        listed = await stub.ListAlerts(pb.ListAlertsRequest(model_name=MODEL))
        assert [a.alert_id for a in listed.alerts] == [alert.alert_id]
        report = await stub.GetDriftReport(pb.GetDriftReportRequest(
            model_name=MODEL, model_version=1, window_start=alert.window_start, window_end=alert.window_end))
        assert report.report.current_rows == WINDOW
        assert sorted(f.feature for f in report.report.feature_drifts if f.drifted) == ["colour", "x1"]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetDriftReport(pb.GetDriftReportRequest(model_name=MODEL, model_version=2))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListAlerts(pb.ListAlertsRequest(page_token="garbage"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # REST reads, including Evidently's HTML report of the alerting window.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}", timeout=30) as http:
        latest = (await http.get(f"/api/v1/models/{MODEL}/drift")).json()
        assert latest["window_seq"] == 4 and latest["dataset_drift"] is True
        assert {f["feature"] for f in latest["feature_drifts"]} == {"x1", "x2", "colour", "plan"}
        alerts = (await http.get("/api/v1/alerts", params={"model": MODEL})).json()["alerts"]
        assert [a["alert_id"] for a in alerts] == [alert.alert_id]
        html = await http.get(f"/api/v1/models/{MODEL}/versions/1/drift-report", params={
            "start": alert.window_start.ToJsonString(), "end": alert.window_end.ToJsonString(), "format": "html"})
        assert html.status_code == 200 and "<html" in html.text.lower()
        assert (await http.get("/api/v1/models/nope/drift")).status_code == 404
        assert (await http.get(f"/api/v1/models/{MODEL}/versions/0/drift-report")).status_code == 400


async def test_grpc_refuses_a_profile_the_http_route_refuses_and_keeps_the_stored_one(
        service: ServiceRunner) -> None:
    """SetReferenceProfile shares the PUT route's checks: no features or no rows is INVALID_ARGUMENT
    (the PUT answers 422), and the stored profile stays as it was."""
    good = pb.ReferenceProfile(model_name=MODEL, model_version=1, rows=3)
    good.features.add(feature="x1", kind=pb.FEATURE_KIND_NUMERICAL, values=[1.0, 2.0, 3.0])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = pb_grpc.MonitorServiceStub(channel)
        await stub.SetReferenceProfile(pb.SetReferenceProfileRequest(profile=good))
        no_features = pb.ReferenceProfile(model_name=MODEL, model_version=1, rows=3)
        no_rows = pb.ReferenceProfile()
        no_rows.CopyFrom(good)
        no_rows.rows = 0
        for bad in (no_features, no_rows):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.SetReferenceProfile(pb.SetReferenceProfileRequest(profile=bad))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        stored = await stub.GetReferenceProfile(pb.GetReferenceProfileRequest(model_name=MODEL, model_version=1))
        assert [f.feature for f in stored.profile.features] == ["x1"] and stored.profile.rows == 3
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}", timeout=30) as http:
        answer = await http.put(f"/api/v1/models/{MODEL}/versions/1/reference-profile",
                                json={"rows": 3, "features": []})
        assert answer.status_code == 422


async def _count(stub: pb_grpc.MonitorServiceStub, n: int) -> bool:
    return len(await windows(stub)) >= n


async def _topic_has(kafka: KafkaSettings, base: str) -> bool:
    return bool(await read_all(kafka, base))


async def test_restart_mid_stream_reaches_the_same_result(kafka: KafkaSettings, database_url: str,
                                                          artifacts: LocalArtifactStore) -> None:
    reference, events = scenario()
    async with monitor(kafka, database_url) as first, \
            grpc.aio.insecure_channel(f"127.0.0.1:{first.grpc_port}") as channel:
        stub = pb_grpc.MonitorServiceStub(channel)
        await register_version(kafka, artifacts, reference)
        await publish(kafka, events[:550])
        await wait_until(lambda: _count(stub, 2), what="the first windows")

    # While the monitor is down: the rest of the stream, plus a re-publication of events it has
    # already counted (a producer retry), which must not be counted again.
    await publish(kafka, events[550:] + events[300:350])
    async with monitor(kafka, database_url) as second, \
            grpc.aio.insecure_channel(f"127.0.0.1:{second.grpc_port}") as channel:
        stub = pb_grpc.MonitorServiceStub(channel)
        await wait_until(lambda: _count(stub, 5), what="all five windows after the restart")
        reports = await windows(stub)
        assert [w.current_rows for w in reports] == [WINDOW] * 5
        assert [w.dataset_drift for w in reports] == [False, False, True, True, True]
        await wait_until(lambda: _topic_has(kafka, TRAINING_REQUESTS), what="the training request")
        assert len(await read_all(kafka, MONITOR_ALERTS)) == 1
        assert len(await read_all(kafka, TRAINING_REQUESTS)) == 1
