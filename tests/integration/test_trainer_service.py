"""The trainer as a running service: real Tansu, real PostgreSQL, real gRPC/HTTP servers, fakes for
features, tracking and the registry. A TrainingRequest on training.requests becomes a tracked,
registered model and a stream of TrainingEvents; a redelivered request trains nothing; the `gyre`
CLI drives the same service over gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import asyncpg
import grpc
import httpx
import pytest
from support.services import running
from support.waiting import wait_until

from gyre_cli.main import run as gyre_cli
from gyre_common.artifacts import LocalArtifactStore
from gyre_common.bus import Consumer, Envelope, Publisher
from gyre_common.models import load_model
from gyre_common.runner import ServiceRunner
from gyre_common.settings import KafkaSettings
from gyre_common.topics import TRAINING_EVENTS, TRAINING_REQUESTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.gyre.trainer.v1 import trainer_service_pb2 as pb
from gyre_contracts.gyre.trainer.v1 import trainer_service_pb2_grpc as pb_grpc
from gyre_trainer.bootstrap import Dependencies, bootstrap
from gyre_trainer.service import SPEC
from gyre_trainer.settings import TrainerSettings
from gyre_trainer.testing import FakeModelRegistry, FakeRunLogger, FakeTrainingDataSource, breast_cancer_training_set

pytestmark = pytest.mark.integration


@dataclass
class Trainer:
    runner: ServiceRunner
    kafka: KafkaSettings
    runs: FakeRunLogger
    registry: FakeModelRegistry
    artifacts: LocalArtifactStore
    database_url: str


@pytest.fixture
async def trainer(bootstrap_servers: str, database_url: str, unique: str, tmp_path: Path) -> AsyncIterator[Trainer]:
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=f"t{unique}.", default_partitions=1)
    settings = TrainerSettings(http_port=0, grpc_port=0, job_poll_interval_s=0.2, readiness_interval_s=0.1,
                               shutdown_grace_s=5, default_max_evals=5, consumer_group=f"trainer-{unique}")
    runs, registry = FakeRunLogger(), FakeModelRegistry()
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    deps = Dependencies(source=FakeTrainingDataSource({"patients": breast_cancer_training_set()}), runs=runs,
                        registry=registry, artifacts=artifacts)
    async with running(SPEC, partial(bootstrap, deps=deps), settings, kafka=kafka, database_url=database_url) as runner:
        assert runner.context is not None
        await wait_until(lambda: runner.context is not None and runner.context.readiness.is_ready, 30, "readiness")
        yield Trainer(runner, kafka, runs, registry, artifacts, database_url)


def training_request(request_id: str) -> ev.TrainingRequest:
    message = ev.TrainingRequest(request_id=request_id, model_name="cancer", feature_view="patients",
                                 label="diagnosis", reason=ev.TRAINING_REASON_DRIFT, requested_by="monitor",
                                 promote_to_alias="production")
    message.evidence["alert_id"] = "alert-1"
    message.search.max_evals = 5
    message.search.random_seed = 11
    message.search.estimator_families.extend(["logistic_regression", "extra_trees"])
    return message


async def test_a_request_on_the_topic_trains_registers_and_emits_events(trainer: Trainer, unique: str) -> None:
    seen: list[Envelope] = []

    async def collect(envelope: Envelope) -> None:
        seen.append(envelope)

    def events_of(request_id: str) -> list[ev.TrainingEvent]:
        return [e.message for e in seen if e.message.request_id == request_id]  # type: ignore[attr-defined]

    def statuses(request_id: str) -> list[int]:
        return [e.status for e in events_of(request_id)]

    async with Consumer(trainer.kafka, group=f"watch-{unique}", topics=[TRAINING_EVENTS], service="test",
                        handler=collect), Publisher(trainer.kafka, service="monitor") as publisher:
        await publisher.publish(TRAINING_REQUESTS, training_request("drift-1"), key="cancer")
        await wait_until(lambda: ev.TRAINING_STATUS_SUCCEEDED in statuses("drift-1"), 120, "SUCCEEDED")

        assert statuses("drift-1") == [ev.TRAINING_STATUS_STARTED] + [ev.TRAINING_STATUS_TRIAL_COMPLETED] * 5 + [
            ev.TRAINING_STATUS_SUCCEEDED]
        done = events_of("drift-1")[-1]
        assert done.model_version == 1 and done.promoted and done.metrics["roc_auc"] > 0.9
        envelopes = [e for e in seen if e.message.request_id == "drift-1"]  # type: ignore[attr-defined]
        assert all(e.key == "cancer" and e.source == "trainer" for e in envelopes)
        assert len({e.ce_id for e in envelopes}) == len(envelopes)

        registration = trainer.registry.registration("cancer", 1)
        assert registration.lineage.training_request_id == "drift-1"
        model = load_model(trainer.artifacts.get(registration.artifact.uri, registration.artifact.sha256))
        assert len(model.predict(breast_cancer_training_set().features.head(3))) == 3
        assert len(trainer.runs.children(done.parent_run_id)) == 5

        # Redelivery: the same request again (a new record, so a new ce_id) changes nothing.
        await publisher.publish(TRAINING_REQUESTS, training_request("drift-1"), key="cancer")
        connection = await asyncpg.connect(trainer.database_url)
        try:
            async def claimed() -> int:
                return int(await connection.fetchval("SELECT count(*) FROM trainer.processed_events"))

            deadline = asyncio.get_running_loop().time() + 30
            while await claimed() < 2:
                assert asyncio.get_running_loop().time() < deadline, "the redelivered request was not consumed"
                await asyncio.sleep(0.05)
            assert await connection.fetchval("SELECT count(*) FROM trainer.jobs") == 1
        finally:
            await connection.close()
        assert list(trainer.registry.versions) == ["cancer"] and len(trainer.registry.versions["cancer"]) == 1
        assert statuses("drift-1").count(ev.TRAINING_STATUS_STARTED) == 1

    # The job is visible over gRPC and HTTP.
    port = trainer.runner.grpc_port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.TrainerServiceStub(channel)
        reply = await stub.GetTrainingJob(pb.GetTrainingJobRequest(request_id="drift-1"), timeout=5)
        assert reply.job.status == ev.TRAINING_STATUS_SUCCEEDED and reply.job.model_version == 1
        assert reply.job.trials_completed == 5 and reply.job.best_metrics["roc_auc"] > 0.9
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.SubmitTraining(pb.SubmitTrainingRequest(request=ev.TrainingRequest(request_id="x")), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetTrainingJob(pb.GetTrainingJobRequest(job_id="missing"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{trainer.runner.http_port}") as client:
        listing = (await client.get("/v1/jobs", params={"model_name": "cancer"})).json()
        assert [job["request"]["request_id"] for job in listing["jobs"]] == ["drift-1"]
        bad = await client.post("/v1/jobs", json={"request_id": "y", "model_name": "cancer"})
        assert bad.status_code == 422
        # A page token this API did not issue is the caller's error, answered like every service's.
        bad_token = await client.get("/v1/jobs", params={"page_token": "garbage!"})
        assert bad_token.status_code == 400 and bad_token.json()["reason"] == "invalid_argument"


async def test_the_cli_submits_over_grpc_and_waits(trainer: Trainer) -> None:
    address = f"127.0.0.1:{trainer.runner.grpc_port}"
    argv = ["--trainer", address, "train", "--model", "cancer", "--feature-view", "patients", "--label", "diagnosis",
            "--start", "2026-01-01T00:00:00Z", "--end", "2026-03-01T00:00:00Z", "--max-evals", "5",
            "--families", "logistic_regression", "--request-id", "cli-1", "--wait", "--wait-timeout", "120"]
    # The CLI is synchronous gRPC: run it off the event loop that serves it.
    code = await asyncio.to_thread(gyre_cli, argv)
    assert code == 0
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await pb_grpc.TrainerServiceStub(channel).GetTrainingJob(
            pb.GetTrainingJobRequest(request_id="cli-1"), timeout=5)
    job = reply.job
    assert job.model_version == 1 and job.request.reason == ev.TRAINING_REASON_MANUAL
    assert job.request.window_end.ToJsonString() == "2026-03-01T00:00:00Z"
    assert await asyncio.to_thread(gyre_cli, argv) == 0  # the same request id: the same job, no new version
    assert len(trainer.registry.versions["cancer"]) == 1
    bad = await asyncio.to_thread(gyre_cli, ["--trainer", address, "train", "--model", "cancer", "--feature-view",
                                             "patients", "--label", ""])
    assert bad == 2
