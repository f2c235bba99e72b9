"""The unmodified MLflow client (mlflow-skinny: MlflowClient and the fluent API) against Gyre
tracking as a real server on a free port with a real PostgreSQL.

The service runs in a thread with its own event loop, because MLflow's client is synchronous
(requests) and these tests call it directly. One server and one database serve the module;
every test works in experiments of its own.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from support.services import fast_settings

from gyre_common.runner import ServiceRunner
from gyre_common.settings import DatabaseSettings, KafkaSettings, TelemetrySettings
from gyre_tracking.bootstrap import bootstrap
from gyre_tracking.service import SPEC
from gyre_tracking.settings import TrackingSettings

pytestmark = pytest.mark.integration


class ServerThread:
    """The tracking service on free ports, run by a ServiceRunner on an event loop of its own thread."""

    def __init__(self, settings: TrackingSettings, kafka: KafkaSettings, admin_url: str) -> None:
        self.settings = settings
        self.kafka = kafka
        self.admin_url = admin_url
        self.database = f"gyre_mlflow_{uuid.uuid4().hex[:12]}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tracking-server", daemon=True)
        self.runner: ServiceRunner | None = None

    def _run(self, work: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    async def _admin(self, statement: str) -> None:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(statement)
        finally:
            await admin.close()

    async def _start(self) -> ServiceRunner:
        await self._admin(f'CREATE DATABASE "{self.database}"')
        base, _, _ = self.admin_url.rpartition("/")
        runner = ServiceRunner(SPEC, bootstrap, settings=self.settings, kafka=self.kafka,
                               database=DatabaseSettings(url=f"{base}/{self.database}"),
                               telemetry_settings=TelemetrySettings())
        await runner.start()
        return runner

    def start(self) -> str:
        self.thread.start()
        self.runner = self._run(self._start())
        url = f"http://127.0.0.1:{self.runner.http_port}"
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/healthz").status_code != 200:
            assert time.monotonic() < deadline, "tracking never became live"
            time.sleep(0.05)
        return url

    def stop(self) -> None:
        if self.runner is not None:
            self._run(self.runner.stop())
        self._run(self._admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow-artifacts")


@pytest.fixture(scope="module")
def tracking_url(bootstrap_servers: str, postgres_admin_url: str, artifact_dir: Path) -> Iterator[str]:
    settings = fast_settings(TrackingSettings, consume_events=False, artifacts_destination=str(artifact_dir))
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=f"m{uuid.uuid4().hex[:8]}.")
    server = ServerThread(settings, kafka, postgres_admin_url)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def client(tracking_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_url)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    # A failing call must fail now, not after MLflow's client retried it for minutes.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    mlflow.set_tracking_uri(tracking_url)
    yield MlflowClient(tracking_uri=tracking_url)
    mlflow.end_run()
    mlflow.set_tracking_uri(None)


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def error_of(call: Any, *args: Any, **kwargs: Any) -> MlflowException:
    with pytest.raises(MlflowException) as info:
        call(*args, **kwargs)
    return info.value


def test_experiments_create_get_search_update_delete_restore(client: MlflowClient) -> None:
    experiment_name = name("churn")
    experiment_id = client.create_experiment(experiment_name, tags={"team": "risk"})
    experiment = client.get_experiment(experiment_id)
    assert experiment.name == experiment_name and experiment.lifecycle_stage == "active"
    assert experiment.tags == {"team": "risk"}
    assert experiment.artifact_location == f"mlflow-artifacts:/{experiment_id}"
    assert experiment.creation_time and experiment.last_update_time
    assert client.get_experiment_by_name(experiment_name).experiment_id == experiment_id
    assert client.get_experiment_by_name(name("missing")) is None

    duplicate = error_of(client.create_experiment, experiment_name)
    assert duplicate.error_code == "RESOURCE_ALREADY_EXISTS" and experiment_name in duplicate.message
    assert error_of(client.get_experiment, "987654321").error_code == "RESOURCE_DOES_NOT_EXIST"

    client.set_experiment_tag(experiment_id, "stage", "dev")
    client.delete_experiment_tag(experiment_id, "team")
    assert client.get_experiment(experiment_id).tags == {"stage": "dev"}

    renamed = name("churn-renamed")
    client.rename_experiment(experiment_id, renamed)
    assert client.get_experiment(experiment_id).name == renamed
    found = client.search_experiments(filter_string=f"name = '{renamed}'")
    assert [e.experiment_id for e in found] == [experiment_id]
    found = client.search_experiments(filter_string="tags.stage = 'dev' and name LIKE 'churn-renamed-%'")
    assert experiment_id in [e.experiment_id for e in found]

    run = client.create_run(experiment_id)
    client.delete_experiment(experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "deleted"
    active = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=50000)]
    deleted = [e.experiment_id for e in client.search_experiments(view_type=ViewType.DELETED_ONLY)]
    assert experiment_id not in active and experiment_id in deleted
    assert error_of(client.create_run, experiment_id).error_code == "INVALID_PARAMETER_VALUE"

    client.restore_experiment(experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "active"
    again = error_of(client.restore_experiment, experiment_id)
    assert again.error_code == "INVALID_PARAMETER_VALUE"


def test_runs_params_metrics_tags_and_errors(client: MlflowClient) -> None:
    experiment_id = client.create_experiment(name("runs"))
    run = client.create_run(experiment_id, run_name="baseline", tags={"team": "risk"}, start_time=1_740_830_000_000)
    run_id = run.info.run_id
    assert run.info.status == "RUNNING" and run.info.run_name == "baseline"
    assert run.info.artifact_uri == f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"

    client.log_param(run_id, "alpha", "0.5")
    client.log_param(run_id, "alpha", "0.5")  # the same value again is fine
    conflict = error_of(client.log_param, run_id, "alpha", "0.7")
    assert conflict.error_code == "INVALID_PARAMETER_VALUE"
    assert "alpha" in conflict.message and "0.5" in conflict.message and "0.7" in conflict.message

    for step, value in enumerate([0.9, 0.5, 0.3]):
        client.log_metric(run_id, "loss", value, timestamp=1_740_830_400_000 + step, step=step)
    client.log_metric(run_id, "nan_metric", math.nan, timestamp=1_740_830_400_000)
    client.set_tag(run_id, "team", "fraud")  # tags overwrite
    client.set_tag(run_id, "scratch", "x")
    client.delete_tag(run_id, "scratch")
    assert error_of(client.delete_tag, run_id, "scratch").error_code == "RESOURCE_DOES_NOT_EXIST"
    client.log_batch(run_id, metrics=[Metric("acc", 0.8, 1_740_830_400_000, 0),
                                      Metric("acc", 0.85, 1_740_830_400_001, 1)],
                     params=[Param("depth", "4")], tags=[RunTag("stage", "tuning")])

    got = client.get_run(run_id)
    assert got.data.params == {"alpha": "0.5", "depth": "4"}
    assert got.data.metrics["loss"] == 0.3 and got.data.metrics["acc"] == 0.85
    assert math.isnan(got.data.metrics["nan_metric"])
    assert got.data.tags["team"] == "fraud" and got.data.tags["stage"] == "tuning"
    assert "scratch" not in got.data.tags and got.data.tags["mlflow.runName"] == "baseline"
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value, m.timestamp) for m in history] == [
        (0, 0.9, 1_740_830_400_000), (1, 0.5, 1_740_830_400_001), (2, 0.3, 1_740_830_400_002)]
    assert client.get_metric_history(run_id, "never-logged") == []

    client.set_terminated(run_id, "FINISHED", end_time=1_740_830_500_000)
    finished = client.get_run(run_id).info
    assert finished.status == "FINISHED" and finished.end_time == 1_740_830_500_000
    client.update_run(run_id, name="renamed")
    assert client.get_run(run_id).info.run_name == "renamed"

    client.delete_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    assert error_of(client.log_metric, run_id, "loss", 0.1).error_code == "INVALID_PARAMETER_VALUE"
    assert client.search_runs([experiment_id]) == []
    assert [r.info.run_id for r in client.search_runs([experiment_id], run_view_type=ViewType.DELETED_ONLY)] == [run_id]
    client.restore_run(run_id)
    assert [r.info.run_id for r in client.search_runs([experiment_id])] == [run_id]

    unknown = "0" * 32
    for call, args in [(client.get_run, (unknown,)), (client.log_param, (unknown, "k", "v")),
                       (client.log_metric, (unknown, "k", 1.0)), (client.set_tag, (unknown, "k", "v"))]:
        assert error_of(call, *args).error_code == "RESOURCE_DOES_NOT_EXIST", call
    bad_key = error_of(client.log_metric, run_id, "../escape", 1.0)
    assert bad_key.error_code == "INVALID_PARAMETER_VALUE" and "../escape" in bad_key.message


def test_log_batch_limits(client: MlflowClient, tracking_url: str) -> None:
    experiment_id = client.create_experiment(name("batch"))
    run_id = client.create_run(experiment_id).info.run_id
    stamp = 1_740_830_400_000
    client.log_batch(run_id, metrics=[Metric("m", float(i), stamp + i, i) for i in range(1000)])
    assert len(client.get_metric_history(run_id, "m")) == 1000

    def post(body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{tracking_url}/api/2.0/mlflow/runs/log-batch", json={"run_id": run_id, **body})

    too_many = post({"metrics": [{"key": "m", "value": 1, "timestamp": stamp, "step": i} for i in range(1001)]})
    assert too_many.status_code == 400 and too_many.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "1001" in too_many.json()["message"]
    params = post({"params": [{"key": f"p{i}", "value": "v"} for i in range(101)]})
    assert params.status_code == 400 and "101" in params.json()["message"]
    total = post({"metrics": [{"key": "m", "value": 1, "timestamp": stamp, "step": i} for i in range(950)],
                  "params": [{"key": f"p{i}", "value": "v"} for i in range(51)]})
    assert total.status_code == 400 and total.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "1001" in total.json()["message"]
    missing = httpx.post(f"{tracking_url}/api/2.0/mlflow/runs/log-batch", json={"metrics": []})
    assert missing.status_code == 400 and "run_id" in missing.json()["message"]


def test_search_runs_filters_or_order_and_pages(client: MlflowClient) -> None:
    experiment_id = client.create_experiment(name("search"))
    stamp = 1_740_830_400_000
    specs = [("rf", 0.30, "risk team", "FINISHED"), ("gbm", 0.20, "Fraud", "FINISHED"),
             ("lr", 0.50, "risk ops", "FAILED"), ("rf", 0.10, "growth", "RUNNING")]
    ids = {}
    for index, (model, rmse, team, status) in enumerate(specs):
        run = client.create_run(experiment_id, run_name=f"{model}-{index}", start_time=stamp + index)
        client.log_batch(run.info.run_id, metrics=[Metric("rmse", rmse, stamp, 0)], params=[Param("model", model)],
                         tags=[RunTag("team", team)])
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)
        ids[f"{model}-{index}"] = run.info.run_id

    def names(filter_string: str, **kwargs: Any) -> list[str]:
        return [r.info.run_name for r in client.search_runs([experiment_id], filter_string, **kwargs)]

    assert names("metrics.rmse < 0.25", order_by=["metrics.rmse ASC"]) == ["rf-3", "gbm-1"]
    assert names("params.model = 'rf'", order_by=["attributes.start_time ASC"]) == ["rf-0", "rf-3"]
    assert names("params.model != 'rf'", order_by=["metrics.rmse DESC"]) == ["lr-2", "gbm-1"]
    assert names("tags.team LIKE 'risk%'", order_by=["metrics.rmse"]) == ["rf-0", "lr-2"]
    assert names("tags.team ILIKE 'fraud'") == ["gbm-1"]
    assert names("attributes.status IN ('FAILED', 'RUNNING')", order_by=["attributes.run_name"]) == ["lr-2", "rf-3"]
    assert names("attributes.run_name = 'gbm-1'") == ["gbm-1"]
    assert names(f"attributes.start_time >= {stamp + 2}", order_by=["attributes.start_time DESC"]) == ["rf-3", "lr-2"]
    assert names(f"attributes.run_id = '{ids['lr-2']}'") == ["lr-2"]
    assert names("metrics.rmse <= 0.1 OR params.model = 'lr'", order_by=["metrics.rmse"]) == ["rf-3", "lr-2"]
    assert names("(params.model = 'rf' or params.model = 'gbm') and metrics.rmse > 0.15",
                 order_by=["metrics.rmse"]) == ["gbm-1", "rf-0"]
    assert names("metrics.rmse > 1") == []

    first = client.search_runs([experiment_id], order_by=["metrics.rmse ASC"], max_results=3)
    assert [r.info.run_name for r in first] == ["rf-3", "gbm-1", "rf-0"] and first.token
    second = client.search_runs([experiment_id], order_by=["metrics.rmse ASC"], max_results=3, page_token=first.token)
    assert [r.info.run_name for r in second] == ["lr-2"] and not second.token
    default_order = [r.info.run_name for r in client.search_runs([experiment_id])]
    assert default_order == ["rf-3", "lr-2", "gbm-1", "rf-0"]  # newest first

    bad = error_of(client.search_runs, [experiment_id], "metrics.rmse < 'high'")
    assert bad.error_code == "INVALID_PARAMETER_VALUE" and "rmse" in bad.message and "number" in bad.message
    bad = error_of(client.search_runs, [experiment_id], "params.model = 'rf' and")
    assert bad.error_code == "INVALID_PARAMETER_VALUE" and "at the end" in bad.message
    bad = error_of(client.search_runs, [experiment_id], "colour = 'red'")
    assert bad.error_code == "INVALID_PARAMETER_VALUE" and "colour" in bad.message
    bad = error_of(client.search_runs, [experiment_id], "(params.model = 'rf'")
    assert bad.error_code == "INVALID_PARAMETER_VALUE" and ")" in bad.message
    assert error_of(client.search_runs, ["987654321"]).error_code == "RESOURCE_DOES_NOT_EXIST"


def test_artifacts_upload_list_download(client: MlflowClient, tmp_path: Path, artifact_dir: Path) -> None:
    experiment_id = client.create_experiment(name("artifacts"))
    run_id = client.create_run(experiment_id).info.run_id
    source = tmp_path / "source"
    (source / "plots").mkdir(parents=True)
    (source / "report.txt").write_text("rmse 0.3\n")
    (source / "plots" / "curve.csv").write_text("x,y\n1,2\n")
    client.log_artifact(run_id, str(source / "report.txt"))
    client.log_artifacts(run_id, str(source / "plots"), artifact_path="plots")
    client.log_text(run_id, "hello", "notes/hello.txt")

    listed = {(f.path, f.is_dir, f.file_size) for f in client.list_artifacts(run_id)}
    assert listed == {("report.txt", False, 9), ("plots", True, None), ("notes", True, None)}
    assert [(f.path, f.file_size) for f in client.list_artifacts(run_id, "plots")] == [("plots/curve.csv", 8)]

    into = tmp_path / "download"
    into.mkdir()
    local = client.download_artifacts(run_id, "plots", str(into))
    assert (Path(local) / "curve.csv").read_text() == "x,y\n1,2\n"
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/notes/hello.txt") == "hello"
    # The bytes live under the artifact directory setting, laid out as the artifact URI says.
    assert (artifact_dir / experiment_id / run_id / "artifacts" / "report.txt").read_text() == "rmse 0.3\n"


def test_fluent_api(client: MlflowClient, tmp_path: Path) -> None:
    experiment_name = name("fluent")
    experiment = mlflow.set_experiment(experiment_name)
    with mlflow.start_run(run_name="fluent-run") as active:
        run_id = active.info.run_id
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"epochs": 3, "optimizer": "adam"})
        for step in range(3):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.9, "f1": 0.8})
        mlflow.set_tag("purpose", "test")
        mlflow.set_tags({"owner": "gyre"})
        mlflow.log_dict({"a": 1}, "config.json")
    run = client.get_run(run_id)
    assert run.info.experiment_id == experiment.experiment_id and run.info.status == "FINISHED"
    assert run.info.end_time is not None and run.info.run_name == "fluent-run"
    assert run.data.params == {"lr": "0.01", "epochs": "3", "optimizer": "adam"}
    assert run.data.metrics == {"loss": pytest.approx(1 / 3), "acc": 0.9, "f1": 0.8}
    assert run.data.tags["purpose"] == "test" and run.data.tags["owner"] == "gyre"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1, 2]
    assert [f.path for f in client.list_artifacts(run_id)] == ["config.json"]
    found = mlflow.search_runs(experiment_names=[experiment_name], filter_string="metrics.acc > 0.5",
                               output_format="list")
    assert [r.info.run_id for r in found] == [run_id]


def test_unimplemented_endpoint_answers_like_mlflow(tracking_url: str) -> None:
    reply = httpx.post(f"{tracking_url}/api/2.0/mlflow/runs/log-inputs", json={"run_id": "x"})
    assert reply.status_code == 404 and reply.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    ajax = httpx.get(f"{tracking_url}/ajax-api/2.0/mlflow/experiments/get", params={"experiment_id": "0"})
    assert ajax.status_code == 200 and ajax.json()["experiment"]["name"] == "Default"
