"""The tracking service in-process on real PostgreSQL (and Tansu for readiness): gRPC API and REST mirror."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from support.services import fast_settings, running

from gyre_common.runner import ServiceRunner
from gyre_common.settings import KafkaSettings
from gyre_contracts.gyre.events.v1 import common_pb2
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2 as pb
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2_grpc as pb_grpc
from gyre_tracking.bootstrap import bootstrap
from gyre_tracking.service import SPEC
from gyre_tracking.settings import TrackingSettings

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DIGEST = "5" * 64


def ts(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(T0 + timedelta(seconds=seconds))
    return stamp


def point(key: str, value: float, step: int = 0, seconds: float = 0) -> ev.Metric:
    return ev.Metric(key=key, value=value, step=step, timestamp=ts(seconds))


@pytest.fixture
async def service(bootstrap_servers: str, database_url: str, unique: str) -> AsyncIterator[ServiceRunner]:
    settings = fast_settings(TrackingSettings, consume_events=False, default_artifact_root="file:///srv/gyre/tracking")
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=f"t{unique}.")
    async with running(SPEC, bootstrap, settings, kafka=kafka, database_url=database_url) as runner:
        yield runner


@pytest.fixture
async def stub(service: ServiceRunner) -> AsyncIterator[pb_grpc.TrackingServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        yield pb_grpc.TrackingServiceStub(channel)


async def expect_error(call: object, code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    details = info.value.details() or ""
    for fragment in fragments:
        assert fragment in details, details
    return details


async def new_run(stub: pb_grpc.TrackingServiceStub, experiment_id: str, **fields: object) -> pb.Run:
    reply = await stub.CreateRun(pb.CreateRunRequest(experiment_id=experiment_id, **fields))  # type: ignore[arg-type]
    return reply.run


async def test_experiments_runs_and_their_data(stub: pb_grpc.TrackingServiceStub) -> None:
    default = await stub.GetExperiment(pb.GetExperimentRequest(experiment_id="0"))
    assert default.experiment.name == "Default"
    assert default.experiment.artifact_location == "file:///srv/gyre/tracking/0"

    created = (await stub.CreateExperiment(pb.CreateExperimentRequest(
        name="gyre/churn", tags=[ev.Tag(key="team", value="risk")]))).experiment
    assert created.experiment_id not in ("", "0") and created.lifecycle_stage == pb.LIFECYCLE_STAGE_ACTIVE
    assert created.artifact_location == f"file:///srv/gyre/tracking/{created.experiment_id}"
    assert [(t.key, t.value) for t in created.tags] == [("team", "risk")]
    by_name = await stub.GetExperiment(pb.GetExperimentRequest(name="gyre/churn"))
    assert by_name.experiment == created
    await expect_error(stub.CreateExperiment(pb.CreateExperimentRequest(name="gyre/churn")),
                       grpc.StatusCode.ALREADY_EXISTS, "'gyre/churn' already exists")
    await expect_error(stub.GetExperiment(pb.GetExperimentRequest(name="nope")), grpc.StatusCode.NOT_FOUND,
                       "no experiment is named 'nope'")
    await expect_error(stub.GetExperiment(pb.GetExperimentRequest()), grpc.StatusCode.INVALID_ARGUMENT)
    await expect_error(stub.CreateExperiment(pb.CreateExperimentRequest(name="")),
                       grpc.StatusCode.INVALID_ARGUMENT, "must not be empty")
    listed = await stub.ListExperiments(pb.ListExperimentsRequest(page_size=1))
    assert [e.name for e in listed.experiments] == ["Default"] and listed.next_page_token
    second = await stub.ListExperiments(pb.ListExperimentsRequest(page_size=1, page_token=listed.next_page_token))
    assert [e.name for e in second.experiments] == ["gyre/churn"] and second.next_page_token == ""

    run_id = "a" * 32
    run = await new_run(stub, created.experiment_id, run_id=run_id, run_name="trial-1", start_time=ts(0),
                        user="gyre-trainer", tags=[ev.Tag(key="mlflow.parentRunId", value="p" * 32)])
    assert run.info.run_id == run_id and run.info.status == ev.RUN_STATUS_RUNNING
    assert run.info.artifact_uri == f"{created.artifact_location}/{run_id}/artifacts"
    assert not run.info.HasField("end_time") and run.info.start_time == ts(0)
    assert {t.key: t.value for t in run.data.tags} == {"mlflow.parentRunId": "p" * 32, "mlflow.runName": "trial-1"}
    # A retry with the same run_id returns the run; another experiment may not take the id.
    again = await new_run(stub, created.experiment_id, run_id=run_id, run_name="ignored")
    assert again.info == run.info
    await expect_error(stub.CreateRun(pb.CreateRunRequest(experiment_id="0", run_id=run_id)),
                       grpc.StatusCode.ALREADY_EXISTS, "taken by a run of experiment")
    await expect_error(stub.CreateRun(pb.CreateRunRequest(experiment_id="999")), grpc.StatusCode.NOT_FOUND,
                       "experiment '999' does not exist")
    generated = await new_run(stub, created.experiment_id)
    assert len(generated.info.run_id) == 32 and generated.info.run_name.startswith("run-")

    # Params: a batch, the same again (fine), then a conflicting value (ALREADY_EXISTS, nothing stored).
    params = [ev.Param(key="max_depth", value="5"), ev.Param(key="model", value="rf")]
    await stub.LogParams(pb.LogParamsRequest(run_id=run_id, params=params))
    await stub.LogParams(pb.LogParamsRequest(run_id=run_id, params=params))
    await expect_error(
        stub.LogParams(pb.LogParamsRequest(run_id=run_id, params=[ev.Param(key="new", value="x"),
                                                                    ev.Param(key="max_depth", value="7")])),
        grpc.StatusCode.ALREADY_EXISTS, "write-once", "'max_depth' is '5', attempted '7'", run_id)
    await expect_error(stub.LogParams(pb.LogParamsRequest(run_id=run_id, params=[ev.Param(key="a/../b", value="1")])),
                       grpc.StatusCode.INVALID_ARGUMENT, "invalid param key 'a/../b'")

    # Metrics: a batch with repeats (stored once), NaN, out-of-order steps.
    batch = [point("loss", 0.9, 0, 1), point("loss", 0.5, 2, 3), point("loss", 0.7, 1, 2),
             point("loss", 0.9, 0, 1), point("acc", math.nan, 0, 1)]
    await stub.LogMetrics(pb.LogMetricsRequest(run_id=run_id, metrics=batch))
    await stub.LogMetrics(pb.LogMetricsRequest(run_id=run_id, metrics=batch))  # a retry
    await stub.LogMetrics(pb.LogMetricsRequest(run_id=run_id, metrics=[point("loss", 0.6, 1, 10)]))  # older step
    history = await stub.GetMetricHistory(pb.GetMetricHistoryRequest(run_id=run_id, key="loss"))
    assert [(m.step, m.value) for m in history.metrics] == [(0, 0.9), (1, 0.7), (1, 0.6), (2, 0.5)]
    nan_history = await stub.GetMetricHistory(pb.GetMetricHistoryRequest(run_id=run_id, key="acc"))
    assert len(nan_history.metrics) == 1 and math.isnan(nan_history.metrics[0].value)
    assert (await stub.GetMetricHistory(pb.GetMetricHistoryRequest(run_id=run_id, key="nope"))).metrics == []
    await stub.LogMetrics(pb.LogMetricsRequest(run_id=run_id, metrics=[ev.Metric(key="no_time", value=1.0)]))
    await expect_error(stub.LogMetrics(pb.LogMetricsRequest(run_id=run_id, metrics=[point("m", 1.0, i)
                                                                                    for i in range(1001)])),
                       grpc.StatusCode.INVALID_ARGUMENT, "at most 1000")
    await expect_error(stub.LogMetrics(pb.LogMetricsRequest(run_id="b" * 32, metrics=[point("m", 1.0)])),
                       grpc.StatusCode.NOT_FOUND, f"run '{'b' * 32}' does not exist")

    # Tags overwrite; mlflow.runName renames the run.
    await stub.SetTags(pb.SetTagsRequest(run_id=run_id, tags=[ev.Tag(key="stage", value="a")]))
    await stub.SetTags(pb.SetTagsRequest(run_id=run_id, tags=[ev.Tag(key="stage", value="b"),
                                                               ev.Tag(key="mlflow.runName", value="trial-one")]))

    # Artifacts: recorded once per path.
    ref = common_pb2.ArtifactRef(uri=f"file:///srv/gyre/artifacts/sha256/55/{DIGEST}", sha256=DIGEST,
                                 size_bytes=1234, format="skops")
    logged = await stub.LogArtifact(pb.LogArtifactRequest(run_id=run_id, path="model", artifact=ref))
    assert logged.artifact.artifact == ref and logged.artifact.logged_at.seconds > 0
    again_logged = await stub.LogArtifact(pb.LogArtifactRequest(run_id=run_id, path="model", artifact=ref))
    assert again_logged.artifact == logged.artifact
    other = common_pb2.ArtifactRef(uri="file:///x", sha256="6" * 64, size_bytes=1)
    await expect_error(stub.LogArtifact(pb.LogArtifactRequest(run_id=run_id, path="model", artifact=other)),
                       grpc.StatusCode.ALREADY_EXISTS, "write-once")
    await expect_error(stub.LogArtifact(pb.LogArtifactRequest(run_id=run_id, path="model", artifact=ref.__class__(
        uri="file:///x", sha256="nothex"))), grpc.StatusCode.INVALID_ARGUMENT, "64 lowercase hex")

    got = (await stub.GetRun(pb.GetRunRequest(run_id=run_id))).run
    assert got.info.run_name == "trial-one"
    assert {p.key: p.value for p in got.data.params} == {"max_depth": "5", "model": "rf"}
    latest = {m.key: m for m in got.data.metrics}
    assert latest["loss"].value == 0.5 and latest["loss"].step == 2 and math.isnan(latest["acc"].value)
    assert set(latest) == {"loss", "acc", "no_time"}
    assert {t.key: t.value for t in got.data.tags}["stage"] == "b"
    assert [a.path for a in got.artifacts] == ["model"]
    await expect_error(stub.GetRun(pb.GetRunRequest(run_id="c" * 32)), grpc.StatusCode.NOT_FOUND)
    await expect_error(stub.GetRun(pb.GetRunRequest(run_id="bad id!")), grpc.StatusCode.INVALID_ARGUMENT,
                       "invalid run_id")


async def test_run_status_transitions(stub: pb_grpc.TrackingServiceStub) -> None:
    run = await new_run(stub, "0", start_time=ts(0))
    run_id = run.info.run_id
    finished = (await stub.UpdateRun(pb.UpdateRunRequest(run_id=run_id, status=ev.RUN_STATUS_FINISHED,
                                                         end_time=ts(60)))).info
    assert finished.status == ev.RUN_STATUS_FINISHED and finished.end_time == ts(60)
    # Resumed (MLflow's start_run(run_id=...)): running again, no end time.
    resumed = (await stub.UpdateRun(pb.UpdateRunRequest(run_id=run_id, status=ev.RUN_STATUS_RUNNING))).info
    assert resumed.status == ev.RUN_STATUS_RUNNING and not resumed.HasField("end_time")
    # Failing without an end time stamps the server's time.
    failed = (await stub.UpdateRun(pb.UpdateRunRequest(run_id=run_id, status=ev.RUN_STATUS_FAILED))).info
    assert failed.status == ev.RUN_STATUS_FAILED
    assert abs(failed.end_time.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=1)
    renamed = (await stub.UpdateRun(pb.UpdateRunRequest(run_id=run_id, run_name="renamed"))).info
    assert renamed.status == ev.RUN_STATUS_FAILED and renamed.run_name == "renamed"
    stored = (await stub.GetRun(pb.GetRunRequest(run_id=run_id))).run
    assert stored.info == renamed and {t.key: t.value for t in stored.data.tags}["mlflow.runName"] == "renamed"
    await expect_error(stub.UpdateRun(pb.UpdateRunRequest(run_id=run_id, end_time=ts(-1))),
                       grpc.StatusCode.INVALID_ARGUMENT, "precedes the start_time")
    await expect_error(stub.UpdateRun(pb.UpdateRunRequest(run_id="d" * 32, status=ev.RUN_STATUS_KILLED)),
                       grpc.StatusCode.NOT_FOUND)
    await expect_error(stub.UpdateRun(pb.UpdateRunRequest(run_id=run_id, status=42)),  # type: ignore[arg-type]
                       grpc.StatusCode.INVALID_ARGUMENT, "unknown run status 42")


async def test_search_runs_and_rest_mirror(service: ServiceRunner, stub: pb_grpc.TrackingServiceStub) -> None:
    experiment = (await stub.CreateExperiment(pb.CreateExperimentRequest(name="search"))).experiment
    eid = experiment.experiment_id
    ids = []
    for i in range(6):
        run = await new_run(stub, eid, run_id=f"run{i:02d}", start_time=ts(i))
        ids.append(run.info.run_id)
        await stub.LogParams(pb.LogParamsRequest(run_id=run.info.run_id, params=[
            ev.Param(key="model", value="rf" if i % 2 == 0 else "lr")]))
        if i != 5:  # run05 has no rmse
            await stub.LogMetrics(pb.LogMetricsRequest(run_id=run.info.run_id, metrics=[
                point("rmse", 10.0 - i, 0), point("rmse", 1.0 + i / 10, 1)]))  # latest = step 1
        if i < 2:
            await stub.UpdateRun(pb.UpdateRunRequest(run_id=run.info.run_id, status=ev.RUN_STATUS_FINISHED))

    async def search(filter: str = "", order_by: tuple[str, ...] = (), page_size: int = 0,
                     page_token: str = "") -> pb.SearchRunsResponse:
        return await stub.SearchRuns(pb.SearchRunsRequest(experiment_ids=[eid], filter=filter, order_by=order_by,
                                                          page_size=page_size, page_token=page_token))

    everything = await search()
    assert [r.info.run_id for r in everything.runs] == ids[::-1]  # start_time DESC
    assert [r.info.run_id for r in (await search("metrics.rmse < 1.25")).runs] == ["run02", "run01", "run00"]
    # The filter sees the latest point (step 1), not the first one (10 - i).
    assert (await search("metrics.rmse > 5")).runs == []
    assert [r.info.run_id for r in (await search("params.model = 'rf' and metrics.rmse >= 1.3")).runs] == ["run04"]
    assert [r.info.run_id for r in (await search("attributes.status = 'FINISHED'")).runs] == ["run01", "run00"]
    assert [r.info.run_id for r in (await search("metrics.rmse IS NULL")).runs] == ["run05"]
    assert [r.info.run_id for r in (await search("params.model IN ('lr') and attributes.run_id != 'run01'")).runs] \
        == ["run05", "run03"]
    ordered = await search(order_by=("metrics.rmse DESC",))
    assert [r.info.run_id for r in ordered.runs] == ["run04", "run03", "run02", "run01", "run00", "run05"]

    page1 = await search(order_by=("metrics.rmse ASC",), page_size=4)
    page2 = await search(order_by=("metrics.rmse ASC",), page_size=4, page_token=page1.next_page_token)
    assert [r.info.run_id for r in page1.runs] == ["run00", "run01", "run02", "run03"]
    assert [r.info.run_id for r in page2.runs] == ["run04", "run05"] and page2.next_page_token == ""
    hit = (await search("metrics.rmse = 1.0")).runs[0]
    assert {p.key: p.value for p in hit.data.params} == {"model": "rf"}
    assert [(m.key, m.value, m.step) for m in hit.data.metrics] == [("rmse", 1.0, 1)]

    await expect_error(search("metrics.rmse < 'x'"), grpc.StatusCode.INVALID_ARGUMENT, "compares with a number")
    await expect_error(search(order_by=("metrics.rmse up",)), grpc.StatusCode.INVALID_ARGUMENT, "unexpected 'up'")
    await expect_error(search(page_token="%%%"), grpc.StatusCode.INVALID_ARGUMENT, "invalid page_token")
    await expect_error(stub.SearchRuns(pb.SearchRunsRequest(experiment_ids=["424242"])), grpc.StatusCode.NOT_FOUND,
                       "'424242'")
    await expect_error(stub.SearchRuns(pb.SearchRunsRequest()), grpc.StatusCode.INVALID_ARGUMENT,
                       "at least one experiment")

    # The REST mirror serves the same messages as JSON.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}/api/v1") as http:
        listed = (await http.get("/experiments")).json()
        assert [e["name"] for e in listed["experiments"]] == ["Default", "search"]
        assert (await http.get(f"/experiments/{eid}")).json()["experiment"]["lifecycle_stage"] == \
            "LIFECYCLE_STAGE_ACTIVE"
        assert (await http.get("/experiments/by-name/search")).json()["experiment"]["experiment_id"] == eid
        run = (await http.get("/runs/run00")).json()["run"]
        assert run["info"]["status"] == "RUN_STATUS_FINISHED" and run["data"]["params"] == [
            {"key": "model", "value": "rf"}]
        assert run["info"]["start_time"] == "2025-03-01T12:00:00Z"
        history = (await http.get("/runs/run00/metric-history", params={"key": "rmse"})).json()
        assert [(p["step"], p["value"]) for p in history["metrics"]] == [("0", 10.0), ("1", 1.0)]
        found = (await http.post("/runs/search", json={"experiment_ids": [eid], "filter": "metrics.rmse < 1.15",
                                                       "order_by": ["metrics.rmse"]})).json()
        assert [r["info"]["run_id"] for r in found["runs"]] == ["run00", "run01"]
        found = (await http.get("/runs/search", params={"experiment_ids": [eid], "filter": "params.model = 'lr'",
                                                        "page_size": 1})).json()
        assert [r["info"]["run_id"] for r in found["runs"]] == ["run05"] and found["next_page_token"]
        missing = await http.get("/runs/zzz")
        assert missing.status_code == 404 and missing.json() == {"detail": "run 'zzz' does not exist",
                                                                  "reason": "not_found"}
        bad = await http.post("/runs/search", json={"experiment_ids": [eid], "filter": "metrics.x ~ 1"})
        assert bad.status_code == 400 and "unexpected character '~'" in bad.json()["detail"]
        bad = await http.post("/runs/search", json={"experiment_ids": [eid], "colour": "red"})
        assert bad.status_code == 400 and "colour" in bad.json()["detail"]
        assert (await http.get("/experiments/123456")).status_code == 404
