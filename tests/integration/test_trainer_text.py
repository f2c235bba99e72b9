"""A torch-text training through the running trainer: real Tansu, real PostgreSQL, the real
tracking service (per-epoch curves land as metric history), fakes for features and the registry.
`gyre train --backend torch-text` over gRPC produces a registered safetensors-text version whose
artifact loads with gyre_ml and tells the topics of unseen texts apart; the same fields work in
the REST body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from support.kafka import fast_kafka
from support.services import fast_settings, running
from support.waiting import wait_until

from gyre_cli.main import run as gyre_cli
from gyre_common.artifacts import LocalArtifactStore
from gyre_common.runner import ServiceRunner
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2 as tracking_pb
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2_grpc as tracking_grpc
from gyre_contracts.gyre.trainer.v1 import trainer_service_pb2 as pb
from gyre_contracts.gyre.trainer.v1 import trainer_service_pb2_grpc as pb_grpc
from gyre_ml.text_model import MODEL_FORMAT, load_text_model
from gyre_tracking.bootstrap import bootstrap as tracking_bootstrap
from gyre_tracking.service import SPEC as TRACKING
from gyre_tracking.settings import TrackingSettings
from gyre_trainer.bootstrap import Dependencies, bootstrap
from gyre_trainer.service import SPEC
from gyre_trainer.settings import TrainerSettings
from gyre_trainer.testing import FakeModelRegistry, FakeTrainingDataSource, topic_texts, topic_training_set

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    trainer: ServiceRunner
    tracking: ServiceRunner
    registry: FakeModelRegistry
    artifacts: LocalArtifactStore


@pytest.fixture
async def stack(bootstrap_servers: str, database_url: str, unique: str, tmp_path: Path) -> AsyncIterator[Stack]:
    kafka = fast_kafka(bootstrap_servers, f"t{unique}.")
    async with running(TRACKING, tracking_bootstrap,
                       fast_settings(TrackingSettings, default_artifact_root="file:///srv/gyre/tracking"),
                       kafka=kafka, database_url=database_url) as tracking:
        settings = fast_settings(TrainerSettings, job_poll_interval_s=0.2, consumer_group=f"trainer-{unique}",
                                 tracking_address=f"127.0.0.1:{tracking.grpc_port}", text_max_epochs=3,
                                 text_max_length=32)
        registry, artifacts = FakeModelRegistry(), LocalArtifactStore(tmp_path / "artifacts")
        deps = Dependencies(source=FakeTrainingDataSource({"reviews": topic_training_set(48)}), registry=registry,
                            artifacts=artifacts)
        async with running(SPEC, partial(bootstrap, deps=deps), settings, kafka=kafka,
                           database_url=database_url) as trainer:
            await wait_until(lambda: trainer.context is not None and trainer.context.readiness.is_ready, 30,
                             "readiness")
            yield Stack(trainer, tracking, registry, artifacts)


async def test_gyre_train_fine_tunes_a_text_model_with_tracked_curves(stack: Stack) -> None:
    address = f"127.0.0.1:{stack.trainer.grpc_port}"
    argv = ["--trainer", address, "train", "--model", "topics", "--feature-view", "reviews", "--label", "topic",
            "--backend", "torch-text", "--text-feature", "review", "--max-evals", "2", "--seed", "5",
            "--objective", "accuracy", "--request-id", "text-cli-1", "--wait", "--wait-timeout", "300"]
    assert await asyncio.to_thread(gyre_cli, argv) == 0  # the CLI is synchronous gRPC: off the loop
    async with grpc.aio.insecure_channel(address) as channel:
        job = (await pb_grpc.TrainerServiceStub(channel).GetTrainingJob(
            pb.GetTrainingJobRequest(request_id="text-cli-1"), timeout=5)).job
    assert job.status == ev.TRAINING_STATUS_SUCCEEDED, job.error
    assert job.request.backend == "torch-text" and job.request.text_feature == "review"
    assert job.model_version == 1 and job.trials_completed == 2

    # The version: safetensors-text, BYTES in, loads with gyre_ml and knows the topics of unseen texts.
    registration = stack.registry.registration("topics", 1)
    assert registration.artifact_format == MODEL_FORMAT
    assert [(t.name, t.datatype) for t in registration.signature.inputs] == [("review", "BYTES")]
    model = load_text_model(stack.artifacts.get(registration.artifact.uri, registration.artifact.sha256))
    texts, topics = topic_texts(12, seed=77)
    predicted = np.asarray(model.config.labels)[model.predict(texts).argmax(axis=1)]
    assert (predicted == np.asarray(topics)).mean() >= 0.9

    # Tracking (the real service): each trial run has its learning curves, one point per epoch.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.tracking.grpc_port}") as channel:
        tracking = tracking_grpc.TrackingServiceStub(channel)
        run = (await tracking.GetRun(tracking_pb.GetRunRequest(run_id=job.best_run_id), timeout=5)).run
        epochs = int(next(p.value for p in run.data.params if p.key == "epochs"))
        for key in ("train_loss", "val_accuracy", "val_log_loss"):
            history = (await tracking.GetMetricHistory(
                tracking_pb.GetMetricHistoryRequest(run_id=job.best_run_id, key=key), timeout=5)).metrics
            assert [point.step for point in history] == list(range(1, epochs + 1)), key
        final = {m.key: m.value for m in run.data.metrics}
        assert final["val_accuracy"] == history_last(await tracking.GetMetricHistory(
            tracking_pb.GetMetricHistoryRequest(run_id=job.best_run_id, key="val_accuracy"), timeout=5))


def history_last(reply: tracking_pb.GetMetricHistoryResponse) -> float:
    return float(reply.metrics[-1].value)


async def test_the_rest_api_takes_the_backend_fields(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.trainer.http_port}") as client:
        body = {"request_id": "text-rest-1", "model_name": "topics", "feature_view": "reviews", "label": "topic",
                "reason": "TRAINING_REASON_MANUAL", "backend": "torch-text", "text_feature": "review",
                "search": {"max_evals": 1, "random_seed": 3}}
        created = await client.post("/v1/jobs", json=body)
        assert created.status_code == 201, created.text
        assert created.json()["job"]["request"]["backend"] == "torch-text"
        bad = await client.post("/v1/jobs", json={**body, "request_id": "text-rest-2", "backend": "jax"})
        assert bad.status_code == 422 and bad.json()["detail"]["field"] == "backend"
        job_id = created.json()["job"]["job_id"]

        async def ended() -> dict[str, object] | None:
            job = (await client.get(f"/v1/jobs/{job_id}")).json()
            return job if job["status"] in ("TRAINING_STATUS_SUCCEEDED", "TRAINING_STATUS_FAILED") else None

        job = await wait_until(ended, 300, "the REST job's end", interval_s=0.2)
        assert job["status"] == "TRAINING_STATUS_SUCCEEDED", job
    assert stack.registry.registration("topics", 1).artifact_format == MODEL_FORMAT
