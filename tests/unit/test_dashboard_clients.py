"""The dashboard's upstream client: tolerant parsers and HTTP verdicts, against httpx's in-memory transport.

Payloads are built from the real proto messages with the same JSON mapping each service uses
(registry: camelCase; monitor and trainer: proto names), so the parsers are tested on the shapes
the services really send.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.gyre.feedback.v1 import feedback_service_pb2 as fb
from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2 as mon
from gyre_contracts.gyre.registry.v1 import registry_service_pb2 as reg
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2 as trk
from gyre_contracts.gyre.trainer.v1 import trainer_service_pb2 as tr
from gyre_dashboard.clients import UpstreamClient
from gyre_dashboard.convert import (
    parse_alert,
    parse_drift,
    parse_model_version,
    parse_quality,
    parse_registered_model,
    parse_run,
    parse_training_job,
)
from gyre_dashboard.domain.health import Health, UpstreamError
from gyre_dashboard.domain.training import RunOrigin

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def tracking_json(message: Message) -> dict[str, Any]:
    """As tracking's REST API answers: proto names, every field present."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def tracking_run(run_id: str, experiment_id: str, name: str, tags: dict[str, str], metrics: dict[str, float],
                 start: datetime = T0, status: ev.RunStatus.ValueType = ev.RUN_STATUS_FINISHED,
                 user: str = "") -> trk.Run:
    run = trk.Run(info=trk.RunInfo(run_id=run_id, experiment_id=experiment_id, run_name=name, status=status,
                                   user=user, lifecycle_stage=trk.LIFECYCLE_STAGE_ACTIVE),
                  data=trk.RunData(tags=[ev.Tag(key=k, value=v) for k, v in tags.items()],
                                   metrics=[ev.Metric(key=k, value=v, step=0) for k, v in metrics.items()]))
    stamp(run.info.start_time, start)
    return run


def camel(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def snake(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def stamp(message: Any, when: datetime = T0) -> Any:
    message.FromDatetime(when)
    return message


# -- parsers ---------------------------------------------------------------------------------------


def test_registered_model_from_registry_json() -> None:
    message = reg.RegisteredModel(name="churn", description="who leaves", latest_version=3,
                                  aliases={"production": 2, "challenger": 3})
    stamp(message.updated_at)
    model = parse_registered_model(camel(message))
    assert model.name == "churn" and model.description == "who leaves"
    assert model.latest_version == 3  # int64 arrives as the string "3"
    assert model.aliases == {"challenger": 3, "production": 2}
    assert model.updated_at == T0


def test_model_version_with_lineage_and_evaluation() -> None:
    message = reg.ModelVersion(model_name="churn", version=2, status=reg.MODEL_VERSION_STATUS_READY,
                               aliases=["production"], created_by="trainer",
                               evaluation=reg.HoldoutEvaluation(primary_metric="holdout_accuracy"))
    message.lineage.metrics["holdout_accuracy"] = 0.91
    message.lineage.run_id = "run-7"
    stamp(message.created_at)
    version = parse_model_version(camel(message))
    assert (version.version, version.status, version.aliases) == (2, "READY", ("production",))
    assert version.primary_metric == "holdout_accuracy" and version.metrics == {"holdout_accuracy": 0.91}
    assert version.run_id == "run-7" and version.created_by == "trainer" and version.created_at == T0


def test_parsers_fill_missing_fields_with_defaults() -> None:
    assert parse_registered_model({"name": "m"}).aliases == {}
    version = parse_model_version({"version": "1", "lineage": {"metrics": {"a": "NaN-ish", "b": 1}}})
    assert version.version == 1 and version.metrics == {"b": 1.0} and version.created_at is None
    job = parse_training_job({"job_id": "j"})
    assert job.model_name == "" and job.created_at is None
    assert job.status == "QUEUED"  # the contract: UNSPECIFIED (left out) means queued
    drift = parse_drift({}, "fallback")
    assert drift.model_name == "fallback" and drift.features == ()
    assert parse_drift({"feature_drifts": ["junk", {"feature": "x"}]}, "m").features[0].feature == "x"


def test_a_naive_or_malformed_time_is_no_time() -> None:
    assert parse_model_version({"createdAt": "2025-03-01T12:00:00"}).created_at is None
    assert parse_model_version({"createdAt": "yesterday"}).created_at is None
    assert parse_model_version({"createdAt": "2025-03-01T12:00:00.123456789Z"}).created_at is not None


def test_drift_report_from_monitor_json() -> None:
    report = mon.DriftReport(model_name="churn", model_version=2, current_rows=500, drift_share=0.5,
                             dataset_drift=True, drift_share_threshold=0.5)
    stamp(report.window_start)
    stamp(report.window_end, T0.replace(hour=13))
    report.feature_drifts.add(feature="age", test_name="ks", statistic=0.4, p_value=0.001, threshold=0.05,
                              drifted=True)
    report.feature_drifts.add(feature="plan", test_name="jensenshannon", statistic=0.02, threshold=0.1)
    body = snake(report) | {"window_seq": 4, "drifted_features": ["age"], "alert_id": "a1"}
    drift = parse_drift(body, "churn")
    assert (drift.model_version, drift.current_rows, drift.dataset_drift) == (2, 500, True)
    assert drift.window_end == T0.replace(hour=13)
    assert drift.drifted_features == ("age",)
    age, plan = drift.features
    assert age.p_value == pytest.approx(0.001) and age.test_name == "ks"
    assert plan.p_value is None and plan.drifted is False  # a distance has no p-value; False is omitted


def test_quality_from_feedback_json_in_either_naming() -> None:
    message = fb.GetQualityResponse(model_name="churn")
    message.versions.add(model_version=1, predictions=100, feedback_count=10, labelled_count=8, accuracy=0.75)
    message.versions.add(model_version=2, predictions=50, feedback_count=5, mean_stars=4.5, thumbs_up_rate=0.8)
    for body in (snake(message), camel(message)):
        quality = parse_quality(body, "churn")
        v2, v1 = quality.versions  # newest first
        assert (v2.model_version, v2.mean_stars, v2.thumbs_up_rate, v2.accuracy) == (2, 4.5, 0.8, None)
        assert (v1.predictions, v1.feedback_count, v1.labelled_count, v1.accuracy) == (100, 10, 8, 0.75)


def test_training_job_from_trainer_json() -> None:
    job = tr.TrainingJob(job_id="j1", status=ev.TRAINING_STATUS_SUCCEEDED, trials_completed=12, model_version=3,
                         promoted=True)
    job.request.CopyFrom(ev.TrainingRequest(request_id="r1", model_name="churn", reason=ev.TRAINING_REASON_DRIFT,
                                            requested_by="monitor"))
    stamp(job.created_at)
    parsed = parse_training_job(snake(job))
    assert (parsed.job_id, parsed.request_id, parsed.model_name) == ("j1", "r1", "churn")
    assert (parsed.status, parsed.reason, parsed.requested_by) == ("SUCCEEDED", "DRIFT", "monitor")
    assert (parsed.trials_completed, parsed.model_version, parsed.promoted) == (12, 3, True)
    assert parsed.created_at == T0 and parsed.finished_at is None


def test_alert_from_monitor_json() -> None:
    alert = ev.MonitorAlert(alert_id="a1", kind=ev.ALERT_KIND_DRIFT, model_name="churn", model_version=2,
                            drift_share=0.5)
    alert.feature_drifts.add(feature="age", drifted=True)
    alert.feature_drifts.add(feature="plan", drifted=False)
    stamp(alert.detected_at)
    parsed = parse_alert(snake(alert))
    assert (parsed.kind, parsed.model_version, parsed.drifted_features) == ("DRIFT", 2, ("age",))
    assert parsed.detected_at == T0


def test_a_trainer_trial_run_from_tracking_json() -> None:
    run = tracking_run("a" * 32, "3", "trial-4", {
        "gyre.job_id": "0123456789abcdef", "gyre.trial": "4", "mlflow.parentRunId": "p" * 32,
        "gyre.objective_metric": "f1", "mlflow.runName": "trial-4"},
        {"val_accuracy": 0.8, "val_f1": 0.7, "trial_duration_s": 1.5, "holdout_f1": 0.65, "val_auc": 0.9},
        user="gyre-trainer")
    stamp(run.info.end_time, T0.replace(minute=5))
    parsed = parse_run(tracking_json(run), {"3": "gyre/churn"})
    assert (parsed.run_id, parsed.run_name, parsed.experiment_id, parsed.experiment_name) == (
        "a" * 32, "trial-4", "3", "gyre/churn")
    assert (parsed.status, parsed.start_time, parsed.end_time, parsed.user) == (
        "FINISHED", T0, T0.replace(minute=5), "gyre-trainer")
    assert parsed.origin is RunOrigin.TRAINER and parsed.origin_detail == "job 01234567, trial 4"
    assert parsed.parent_run_id == "p" * 32
    # The objective first (holdout, then validation), then the other holdout/validation metrics: four of five.
    assert list(parsed.metrics) == ["holdout_f1", "val_f1", "val_accuracy", "val_auc"]
    assert parsed.metric_count == 5


def test_an_mlflow_client_run_from_tracking_json() -> None:
    run = tracking_run("b" * 32, "0", "", {
        "mlflow.user": "alice", "mlflow.source.name": "/home/alice/notebooks/train.py",
        "mlflow.source.type": "LOCAL", "mlflow.runName": "bold-owl-42"},
        {"rmse": 0.5, "loss": float("nan")}, status=ev.RUN_STATUS_RUNNING)
    parsed = parse_run(tracking_json(run))
    assert parsed.origin is RunOrigin.MLFLOW and parsed.origin_detail == "train.py"
    assert parsed.run_name == "bold-owl-42" and parsed.user == "alice"  # from the tags when the info has none
    assert parsed.status == "RUNNING" and parsed.end_time is None and parsed.experiment_name == ""
    assert parsed.metrics["rmse"] == 0.5 and parsed.metrics["loss"] != parsed.metrics["loss"]  # NaN kept


def test_a_run_parser_takes_partial_or_odd_payloads() -> None:
    empty = parse_run({})
    assert (empty.run_id, empty.status, empty.origin, empty.metrics, empty.start_time) == (
        "", "", RunOrigin.OTHER, {}, None)
    odd = parse_run({"info": {"runId": "r", "status": "RUN_STATUS_UNSPECIFIED", "experimentId": "1"},
                     "data": {"tags": [{"key": "gyre.task", "value": "classification"}, "junk", {"value": "x"}],
                              "metrics": {"a": "1.5", "b": "n/a"}}})
    assert (odd.run_id, odd.status, odd.experiment_id) == ("r", "", "1")
    assert odd.origin is RunOrigin.TRAINER and odd.origin_detail == "search"
    assert odd.metrics == {"a": 1.5} and odd.metric_count == 1


# -- HTTP behaviour (httpx.MockTransport: no sockets) ------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]
URLS = {"registry": "http://registry", "monitor": "http://monitor", "feedback": "http://feedback",
        "trainer": "http://trainer", "serving": "http://serving", "tracking": "http://tracking"}


def client(handler: Handler) -> UpstreamClient:
    return UpstreamClient(httpx.AsyncClient(transport=httpx.MockTransport(handler)), URLS)


async def test_readiness_verdicts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "registry":
            return httpx.Response(200, json={"ready": True, "checks": {}, "failing": []})
        if host == "monitor":
            return httpx.Response(503, json={"ready": False, "failing": ["broker"], "checks": {
                "broker": {"ok": False, "detail": "KafkaConnectionError: no broker"}}})
        if host == "feedback":
            return httpx.Response(503, json={"ready": False, "stopping": True, "failing": []})
        if host == "trainer":
            return httpx.Response(404, text="<html>not here</html>")
        raise httpx.ConnectError("connection refused", request=request)

    upstream = client(handler)
    registry = await upstream.readiness("registry")
    assert registry.health is Health.READY and registry.latency_ms is not None
    monitor = await upstream.readiness("monitor")
    assert monitor.health is Health.NOT_READY and monitor.failing == ("broker",)
    assert "KafkaConnectionError" in monitor.detail
    assert (await upstream.readiness("feedback")).detail == "stopping"
    trainer = await upstream.readiness("trainer")
    assert trainer.health is Health.DOWN and "404" in trainer.detail
    serving = await upstream.readiness("serving")
    assert serving.health is Health.DOWN and "unreachable" in serving.detail and serving.latency_ms is None


async def test_a_timeout_is_reported_as_such() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    assert "no answer in time" in (await client(handler).readiness("registry")).detail
    with pytest.raises(UpstreamError, match="registry: no answer in time"):
        await client(handler).registry_models(10)


async def test_registry_models_follow_pages_up_to_the_limit() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        start = int(request.url.params.get("page_token") or 0)
        size = int(request.url.params["page_size"])
        names = [f"m{i:03d}" for i in range(start, min(start + size, 250))]
        token = str(start + size) if start + size < 250 else ""
        page = reg.ListRegisteredModelsResponse(registered_models=[reg.RegisteredModel(name=n) for n in names],
                                                next_page_token=token)
        return httpx.Response(200, json=camel(page))

    models = await client(handler).registry_models(120)
    assert [m.name for m in models] == [f"m{i:03d}" for i in range(120)]
    assert [u.params["page_size"] for u in seen] == ["100", "20"]


async def test_missing_drift_or_quality_is_none_and_errors_carry_the_upstream_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/drift") or request.url.path.endswith("/quality"):
            return httpx.Response(404, json={"detail": "no window yet"})
        if request.url.path.endswith("/versions"):
            return httpx.Response(503, json={"error": {"code": "UNAVAILABLE", "message": "database is down"}})
        return httpx.Response(200, text="not json")

    upstream = client(handler)
    assert await upstream.monitor_latest_drift("churn") is None
    assert await upstream.feedback_quality("churn", T0) is None
    with pytest.raises(UpstreamError, match="answered 503: database is down"):
        await upstream.registry_versions("churn", 5)
    with pytest.raises(UpstreamError, match="not JSON"):
        await upstream.trainer_jobs(5)


async def test_paths_and_parameters_sent_upstream() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={})

    upstream = client(handler)
    await upstream.registry_versions("a/b c", 5)
    await upstream.monitor_latest_drift("churn")
    await upstream.monitor_alerts(7)
    await upstream.feedback_quality("churn", T0)
    await upstream.trainer_jobs(9)
    assert seen[0].raw_path == b"/api/v1/registered-models/a%2Fb%20c/versions?page_size=5&include_archived=true"
    assert seen[1].path == "/api/v1/models/churn/drift"
    assert (seen[2].path, seen[2].params["limit"]) == ("/api/v1/alerts", "7")
    assert (seen[3].path, seen[3].params["window_start"]) == ("/api/v1/models/churn/quality", "2025-03-01T12:00:00Z")
    assert (seen[4].path, seen[4].params["page_size"]) == ("/v1/jobs", "9")


async def test_an_unconfigured_service_is_an_upstream_error() -> None:
    upstream = UpstreamClient(httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200))), {})
    with pytest.raises(UpstreamError, match="no address configured"):
        await upstream.trainer_jobs(1)


async def test_tracking_runs_list_every_experiment_then_search_them_all_newest_first() -> None:
    seen: list[httpx.Request] = []
    pages = {"": (["0", "1"], "next"), "next": (["7"], "")}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/api/v1/experiments":
            ids, token = pages[request.url.params.get("page_token", "")]
            page = trk.ListExperimentsResponse(
                experiments=[trk.Experiment(experiment_id=i, name=f"exp-{i}") for i in ids], next_page_token=token)
            return httpx.Response(200, json=tracking_json(page))
        assert (request.method, request.url.path) == ("POST", "/api/v1/runs/search")
        older = tracking_run("o" * 32, "7", "old", {"mlflow.user": "bob"}, {}, start=T0.replace(hour=9))
        newer = tracking_run("n" * 32, "1", "trial-1", {"gyre.job_id": "j1", "gyre.trial": "1"}, {"val_f1": 0.5})
        return httpx.Response(200, json=tracking_json(trk.SearchRunsResponse(runs=[older, newer])))

    runs = await client(handler).tracking_runs(5)
    assert [(r.run_name, r.experiment_name, r.origin) for r in runs] == [
        ("trial-1", "exp-1", RunOrigin.TRAINER), ("old", "exp-7", RunOrigin.MLFLOW)]  # newest first
    assert [r.url.params.get("page_token", "") for r in seen[:2]] == ["", "next"]
    assert seen[0].url.params["page_size"] == "1000"
    search = json.loads(seen[2].content)
    assert search == {"experiment_ids": ["0", "1", "7"], "order_by": ["attributes.start_time DESC"], "page_size": 5}


async def test_tracking_without_experiments_needs_no_search_and_a_failed_search_says_why() -> None:
    def empty(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/experiments"
        return httpx.Response(200, json={"experiments": [], "next_page_token": ""})

    assert await client(empty).tracking_runs(5) == []

    def failing(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/experiments":
            return httpx.Response(200, json={"experiments": [{"experiment_id": "0", "name": "Default"}]})
        return httpx.Response(404, json={"detail": "experiment(s) '0' do not exist", "reason": "NOT_FOUND"})

    with pytest.raises(UpstreamError, match=r"tracking: POST /api/v1/runs/search answered 404: experiment\(s\)"):
        await client(failing).tracking_runs(5)
