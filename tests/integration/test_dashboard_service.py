"""The dashboard as a real server (the runner, free ports) against real and fake upstreams.

* the real registry in-process on the test PostgreSQL and Tansu, with two versions of a model;
* the real tracking service in-process on the same database (its own schema), with runs logged by
  the trainer's own run logger (a search and one hyperopt trial, ``gyre.*`` tags) and by the
  unmodified MLflow client (``mlflow.*`` source tags, as ``mlflow.start_run`` resolves them);
* one fake upstream (FastAPI under uvicorn on a free port) playing monitor, feedback and trainer
  with payloads built from their proto messages, plus a not-ready service (``/notready``, 503) and
  a slow one (``/slow``, answers after the dashboard's timeout);
* serving down (a bound port that refuses connections); tracking too in the all-down test.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from google.protobuf.message import Message
from mlflow import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from support.process import ServiceProcess
from support.services import fast_settings, running
from support.waiting import wait_until

from gyre_common.bus import ensure_topics
from gyre_common.runner import ServiceRunner
from gyre_common.settings import KafkaSettings
from gyre_common.topics import REGISTRY_EVENTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2 as mon
from gyre_contracts.gyre.trainer.v1 import trainer_service_pb2 as tr
from gyre_dashboard.bootstrap import bootstrap as dashboard_bootstrap
from gyre_dashboard.service import SPEC as DASHBOARD
from gyre_dashboard.settings import DashboardSettings
from gyre_registry.bootstrap import bootstrap as registry_bootstrap
from gyre_registry.service import SPEC as REGISTRY
from gyre_registry.settings import RegistrySettings
from gyre_tracking.bootstrap import bootstrap as tracking_bootstrap
from gyre_tracking.service import SPEC as TRACKING
from gyre_tracking.settings import TrackingSettings
from gyre_trainer.adapters.tracking import GrpcRunLogger
from gyre_trainer.domain.search import TrialResult

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
EVIL = "<img src=x onerror=alert(1)>"


def snake(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


# -- the fake upstream ----------------------------------------------------------------------------------


def fake_upstream_app() -> FastAPI:
    """Monitor, feedback and trainer routes with fixed data; ``/notready`` and ``/slow`` prefixes."""
    app = FastAPI()

    @app.get("/readyz")
    async def ready() -> dict[str, Any]:
        return {"ready": True, "checks": {}, "failing": []}

    @app.get("/notready/readyz")
    async def not_ready() -> JSONResponse:
        return JSONResponse({"ready": False, "failing": ["database"], "checks": {
            "database": {"ok": False, "detail": "ConnectionRefusedError: [Errno 111]"}}}, status_code=503)

    @app.get("/slow/readyz")
    async def slow() -> dict[str, Any]:
        await asyncio.sleep(5)
        return {"ready": True}

    @app.get("/api/v1/models/{name}/drift")
    async def drift(name: str) -> dict[str, Any]:
        if name != "churn":
            raise HTTPException(404, f"no evaluated window of {name}")
        report = mon.DriftReport(model_name=name, model_version=1, current_rows=400, drift_share=0.5,
                                 dataset_drift=True, drift_share_threshold=0.5)
        report.window_start.FromDatetime(NOW - timedelta(minutes=10))
        report.window_end.FromDatetime(NOW)
        report.feature_drifts.add(feature="tenure_months", test_name="ks", statistic=0.42, p_value=0.0001,
                                  threshold=0.05, drifted=True, reference_rows=900, current_rows=400)
        report.feature_drifts.add(feature=EVIL, test_name="chisquare", statistic=0.3, p_value=0.7, threshold=0.05,
                                  reference_rows=900, current_rows=400)
        return snake(report) | {"window_seq": 3, "drifted_features": ["tenure_months"], "alert_id": "a1"}

    @app.get("/api/v1/alerts")
    async def alerts(limit: int = 100) -> dict[str, Any]:
        alert = ev.MonitorAlert(alert_id="a1", kind=ev.ALERT_KIND_DRIFT, model_name="churn", model_version=1,
                                drift_share=0.5, dataset_drift=True)
        alert.feature_drifts.add(feature="tenure_months", drifted=True)
        alert.detected_at.FromDatetime(NOW)
        return {"alerts": [snake(alert)][:limit], "next_offset": None}

    @app.get("/api/v1/models/{name}/quality")
    async def quality(name: str, window_start: datetime | None = None) -> dict[str, Any]:
        if name != "churn":
            raise HTTPException(404, f"no prediction of {name} seen")
        assert window_start is not None and window_start.tzinfo is not None
        return {"model_name": name, "window_start": window_start.isoformat(), "window_end": NOW.isoformat(),
                "versions": [{"model_version": 1, "predictions": 120, "feedback_count": 30, "labelled_count": 20,
                              "accuracy": 0.65, "mean_stars": None, "thumbs_up_rate": 0.5, "mean_score": None}]}

    @app.get("/v1/jobs")
    async def jobs(page_size: int = 0) -> dict[str, Any]:
        job = tr.TrainingJob(job_id="job-1", status=ev.TRAINING_STATUS_STARTED, trials_completed=4)
        job.request.CopyFrom(ev.TrainingRequest(request_id="req-1", model_name="churn",
                                                reason=ev.TRAINING_REASON_DRIFT, requested_by="monitor"))
        job.created_at.FromDatetime(NOW)
        return {"jobs": [snake(job)], "next_page_token": ""}

    return app


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """``app`` under uvicorn on a free port in this event loop; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_until(lambda: server.started or task.done(), what="the fake upstream")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        server.force_exit = True  # the slow route must not hold the test up
        await task
        sock.close()


@contextmanager
def refusing_port() -> Iterator[str]:
    """A base URL whose port is bound but not listening: connections are refused, and no other
    process can take the port while the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


# -- the services under test ------------------------------------------------------------------------------


@asynccontextmanager
async def registry_with_models(bootstrap_servers: str, database_url: str, unique: str) -> AsyncIterator[str]:
    """The real registry with churn v1 (production) and v2 (challenger: other holdout); yields its URL."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=f"d{unique}.", default_partitions=1)
    await ensure_topics(kafka, [REGISTRY_EVENTS])
    settings = RegistrySettings(http_port=0, grpc_port=0, readiness_interval_s=0.2, shutdown_grace_s=2,
                                verify_artifacts=False, outbox_poll_interval_s=0.2)
    async with running(REGISTRY, registry_bootstrap, settings, kafka=kafka, database_url=database_url) as runner:
        url = f"http://127.0.0.1:{runner.http_port}"
        async with httpx.AsyncClient(base_url=url) as http:
            for version, holdout in ((1, "1" * 64), (2, "2" * 64)):
                response = await http.post("/api/v1/registered-models/churn/versions", json={
                    "artifact": {"uri": f"file:///nowhere/churn-{version}.skops", "sha256": f"{version}" * 64,
                                 "sizeBytes": "10", "format": "skops"},
                    "lineage": {"runId": f"run-{version}", "metrics": {"holdout_accuracy": 0.8 + version / 100}},
                    "evaluation": {"primaryMetric": "holdout_accuracy", "holdoutId": holdout},
                    "description": "v" + str(version)})
                assert response.status_code == 201, response.text
            response = await http.post("/api/v1/registered-models", json={"name": "fraud", "description": EVIL})
            assert response.status_code == 201, response.text
        yield url


@dataclass
class TrackingRuns:
    url: str
    search_run_id: str
    trial_run_id: str
    mlflow_run_id: str
    job_id: str


def log_with_mlflow_client(url: str) -> str:
    """A run as a data scientist's script logs it with the unmodified MLflow client (blocking)."""
    client = MlflowClient(tracking_uri=url)
    experiment_id = client.create_experiment(f"notebook-{uuid.uuid4().hex[:8]}")
    # The tags mlflow.start_run would set (mlflow.user, mlflow.source.name, mlflow.source.type).
    run = client.create_run(experiment_id, tags=resolve_tags({"team": "risk"}), run_name=EVIL)
    client.log_metric(run.info.run_id, "rmse", 0.42)
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


@asynccontextmanager
async def tracking_with_runs(bootstrap_servers: str, database_url: str, unique: str) -> AsyncIterator[TrackingRuns]:
    """The real tracking service with a trainer search + trial, then an MLflow-client run; yields them."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=f"t{unique}.")
    settings = fast_settings(TrackingSettings, consume_events=False, default_artifact_root="file:///srv/gyre/tracking")
    async with running(TRACKING, tracking_bootstrap, settings, kafka=kafka, database_url=database_url) as runner:
        job_id = uuid.uuid4().hex
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runner.grpc_port}") as channel:
            logger = GrpcRunLogger(channel, timeout_s=10)
            search = await logger.start_search(experiment="gyre/churn", run_id=uuid.uuid4().hex,
                                               run_name="churn-search", tags={
                                                   "gyre.job_id": job_id, "gyre.objective_metric": "f1"})
            trial_run_id = await logger.log_trial(
                search, run_id=uuid.uuid4().hex,
                trial=TrialResult(number=1, params={"family": "logreg"}, metrics={"f1": 0.71, "accuracy": 0.8},
                                  loss=-0.71, duration_s=0.5),
                tags={"mlflow.parentRunId": search.run_id, "gyre.job_id": job_id, "gyre.trial": "1",
                      "gyre.objective_metric": "f1"})
        url = f"http://127.0.0.1:{runner.http_port}"
        # The MLflow client is synchronous: off the loop, which serves its requests.
        mlflow_run_id = await asyncio.to_thread(log_with_mlflow_client, url)
        yield TrackingRuns(url, search.run_id, trial_run_id, mlflow_run_id, job_id)


@dataclass
class Dashboard:
    http: httpx.AsyncClient
    runner: ServiceRunner


@asynccontextmanager
async def dashboard(upstream_timeout_s: float = 5.0, **urls: str) -> AsyncIterator[Dashboard]:
    # A generous upstream timeout by default: on a loaded machine a fake upstream can take longer
    # than half a second to answer, and would then show as down. The timeout test sets its own.
    settings = DashboardSettings(http_port=0, grpc_port=0, readiness_interval_s=0.2, shutdown_grace_s=2,
                                 upstream_timeout_s=upstream_timeout_s, cache_ttl_s=0,
                                 **urls)  # type: ignore[arg-type]
    async with running(DASHBOARD, dashboard_bootstrap, settings) as runner, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.http_port}", timeout=10) as http:
        yield Dashboard(http, runner)


# -- tests ------------------------------------------------------------------------------------------------


async def test_the_page_and_the_overview_with_real_registry_and_tracking_fake_upstreams_and_services_down(
        bootstrap_servers: str, database_url: str, unique: str) -> None:
    with refusing_port() as down:
        async with serve(fake_upstream_app()) as fake, \
                registry_with_models(bootstrap_servers, database_url, unique) as registry, \
                tracking_with_runs(bootstrap_servers, database_url, unique) as tracking, \
                dashboard(tracking_url=tracking.url, serving_url=down, features_url=f"{fake}/notready",
                          registry_url=registry, monitor_url=fake, feedback_url=fake, trainer_url=fake) as dash:
            async def registry_and_tracking_ready() -> dict[str, Any] | None:
                data = (await dash.http.get("/api/v1/overview")).json()
                health = {s["name"]: s["health"] for s in data["services"]}
                return data if health["registry"] == health["tracking"] == "ready" else None

            data = await wait_until(registry_and_tracking_ready, what="registry and tracking ready on the dashboard")

            health = {s["name"]: s for s in data["services"]}
            assert list(health) == ["tracking", "features", "trainer", "registry", "serving", "feedback", "monitor"]
            assert {n: s["health"] for n, s in health.items()} == {
                "tracking": "ready", "features": "not_ready", "trainer": "ready", "registry": "ready",
                "serving": "down", "feedback": "ready", "monitor": "ready"}
            assert health["features"]["failing"] == ["database"]
            assert "ConnectionRefusedError" in health["features"]["detail"]
            assert "unreachable" in health["serving"]["detail"]

            models = {m["name"]: m for m in data["models"]["items"]}
            assert data["models"]["available"] and data["models"]["error"] is None
            assert set(models) == {"churn", "fraud"}
            churn = models["churn"]
            assert churn["aliases"] == {"challenger": 2, "production": 1} and churn["latest_version"] == 2
            assert [(v["version"], v["aliases"], v["status"]) for v in churn["versions"]] == [
                (2, ["challenger"], "READY"), (1, ["production"], "READY")]
            assert churn["versions"][0]["metrics"] == {"holdout_accuracy": pytest.approx(0.82)}
            assert churn["versions"][0]["primary_metric"] == "holdout_accuracy"
            assert models["fraud"]["versions"] == [] and models["fraud"]["description"] == EVIL

            (drift,) = data["drift"]["items"]  # fraud has no window: 404, left out, no error
            assert data["drift"]["error"] is None
            assert drift["model_name"] == "churn" and drift["drifted_features"] == ["tenure_months"]
            assert drift["features"][1]["p_value"] == pytest.approx(0.7) and drift["dataset_drift"] is True
            (quality,) = data["quality"]["items"]
            assert quality["versions"][0]["accuracy"] == pytest.approx(0.65)
            assert quality["versions"][0]["mean_stars"] is None
            (job,) = data["training_jobs"]["items"]
            assert (job["model_name"], job["reason"], job["status"]) == ("churn", "DRIFT", "STARTED")
            assert data["alerts"]["items"][0]["drifted_features"] == ["tenure_months"]

            runs = data["runs"]
            assert runs["source"] == "tracking" and runs["available"] and runs["error"] is None
            by_id = {r["run_id"]: r for r in runs["items"]}
            # Newest first across both experiments: the MLflow run was logged last.
            assert list(by_id) == [tracking.mlflow_run_id, tracking.trial_run_id, tracking.search_run_id]
            starts = [r["start_time"] for r in runs["items"]]
            assert starts == sorted(starts, reverse=True)
            trial = by_id[tracking.trial_run_id]
            assert (trial["origin"], trial["experiment_name"], trial["status"], trial["user"]) == (
                "trainer", "gyre/churn", "FINISHED", "gyre-trainer")
            assert trial["origin_detail"] == f"job {tracking.job_id[:8]}, trial 1"
            assert trial["parent_run_id"] == tracking.search_run_id and trial["run_name"] == "trial-1"
            assert trial["metrics"] == {"val_f1": pytest.approx(0.71), "val_accuracy": pytest.approx(0.8),
                                        "trial_duration_s": pytest.approx(0.5)}
            search = by_id[tracking.search_run_id]
            assert (search["origin"], search["origin_detail"], search["status"]) == (
                "trainer", f"job {tracking.job_id[:8]}, search", "RUNNING")
            assert search["metrics"] == {"trial_loss": pytest.approx(-0.71)}
            mlflow_run = by_id[tracking.mlflow_run_id]
            assert (mlflow_run["origin"], mlflow_run["status"], mlflow_run["run_name"]) == ("mlflow", "FINISHED", EVIL)
            assert mlflow_run["experiment_name"].startswith("notebook-") and mlflow_run["user"]
            assert mlflow_run["origin_detail"] and mlflow_run["metrics"] == {"rmse": pytest.approx(0.42)}
            assert mlflow_run["end_time"] is not None

            page = await dash.http.get("/")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert page.headers["cache-control"] == "no-store"
            html = page.text
            assert "http-equiv=\"refresh\"" in html
            for text in ("churn", "fraud", "production → v1", "challenger → v2", "tenure_months", "65.0%",
                         "DRIFT", "not ready", "down", "Services (5/7 ready)", "Recent runs", "trial-1",
                         "churn-search", "gyre/churn", f"job {tracking.job_id[:8]}, trial 1", ">trainer<",
                         ">mlflow<", "val_f1 = 0.71", "rmse = 0.42", tracking.mlflow_run_id[:8]):
                assert text in html, text
            assert EVIL not in html and "&lt;img src=x onerror=alert(1)&gt;" in html

            assert (await dash.http.get("/readyz")).status_code == 200  # the others' state is not its own


async def test_everything_down_or_slow_still_renders_within_the_timeout() -> None:
    with refusing_port() as down:
        async with serve(fake_upstream_app()) as fake:
            urls = {f"{name}_url": down for name in ("tracking", "features", "registry", "serving", "feedback",
                                                     "monitor")}
            async with dashboard(upstream_timeout_s=0.5, trainer_url=f"{fake}/slow", **urls) as dash:
                started = time.monotonic()
                response = await dash.http.get("/api/v1/overview")
                elapsed = time.monotonic() - started
                assert response.status_code == 200
                # Every call runs at once, each bounded by the 0.5 s timeout (the registry's model
                # list and the per-model calls are two rounds at most).
                assert elapsed < 2.5, elapsed
                data = response.json()
                health = {s["name"]: s for s in data["services"]}
                assert all(s["health"] == "down" for s in health.values())
                assert "no answer in time" in health["trainer"]["detail"]
                for section in ("models", "drift", "quality", "training_jobs", "alerts", "runs"):
                    assert data[section]["available"] is False and data[section]["error"], section
                assert "registry" in data["drift"]["error"]

                page = await dash.http.get("/")
                assert page.status_code == 200
                assert "Services (0/7 ready)" in page.text and "Models unknown" in page.text
                assert "Runs unknown: tracking: unreachable" in page.text


async def test_runs_as_a_process_entry_point() -> None:
    """``python -m gyre_dashboard`` starts, serves the page, and stops on SIGTERM with exit 0."""
    with refusing_port() as down:
        env = {"GYRE_DASHBOARD_HTTP_PORT": "0", "GYRE_DASHBOARD_GRPC_PORT": "0",
               "GYRE_DASHBOARD_UPSTREAM_TIMEOUT_S": "0.5",
               **{f"GYRE_DASHBOARD_{name.upper()}_URL": down for name in DashboardSettings().upstream_urls()}}
        process = ServiceProcess("gyre_dashboard", env)
        try:
            ready = await asyncio.to_thread(process.wait_ready_line, 30.0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ready['http_port']}") as http:
                page = await http.get("/")
                assert page.status_code == 200 and "Gyre operator dashboard" in page.text
            process.terminate()
            assert await asyncio.to_thread(process.wait, 15.0) == 0, process.log()
        finally:
            process.kill()
