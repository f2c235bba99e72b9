"""A torch-text training job end to end against fakes: per-epoch curves in tracking, a
safetensors-text version with a BYTES signature, and a retraining without a backend that keeps the
model's kind and re-scores the text champion on the same holdout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gyre_common.artifacts import LocalArtifactStore
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_ml.text_model import load_text_model
from gyre_trainer.convert import request_from_proto
from gyre_trainer.domain.backends import TextOptions
from gyre_trainer.domain.jobs import Job, JobStatus, TrainingPolicy
from gyre_trainer.handlers import TrainerHandlers
from gyre_trainer.runner import JobRunner
from gyre_trainer.store import InMemoryJobStore
from gyre_trainer.testing import (
    FakeModelRegistry,
    FakeRunLogger,
    FakeTrainingDataSource,
    StoreProfileSink,
    topic_texts,
    topic_training_set,
)


class World:
    def __init__(self, root: Path) -> None:
        self.store = InMemoryJobStore()
        self.source = FakeTrainingDataSource({"reviews": topic_training_set(48)})
        self.runs = FakeRunLogger()
        self.registry = FakeModelRegistry()
        self.artifacts = LocalArtifactStore(root)
        self.profiles = StoreProfileSink(self.artifacts)
        self.policy = TrainingPolicy(retry_delay_s=0.0, text=TextOptions(max_epochs=3, max_length=32))
        self.service = TrainerHandlers(self.store, self.policy)
        self.runner = JobRunner(self.store, self.source, self.runs, self.registry, self.artifacts, self.profiles,
                                self.policy)

    async def run(self, request: ev.TrainingRequest) -> Job:
        await self.service.submit(request_from_proto(request))
        job = await self.store.claim_next("w1", 60)
        assert job is not None
        await self.runner.run(job)
        stored = await self.store.get(job.job_id)
        assert stored is not None
        return stored


def request(request_id: str, *, backend: str = "torch-text", text_feature: str = "review") -> ev.TrainingRequest:
    message = ev.TrainingRequest(request_id=request_id, model_name="topics", feature_view="reviews", label="topic",
                                 reason=ev.TRAINING_REASON_MANUAL, requested_by="test",
                                 promote_to_alias="production", backend=backend, text_feature=text_feature)
    message.search.max_evals = 2
    message.search.random_seed = 5
    message.search.objective_metric = "accuracy"
    return message


async def test_a_text_job_tracks_curves_and_registers_a_safetensors_text_version(tmp_path: Path) -> None:
    world = World(tmp_path)
    job = await world.run(request("text-1"))
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.model_version == 1 and job.trials_completed == 2 and job.promoted

    # Every trial is a run whose curves are metric history, one point per epoch (step = epoch).
    children = world.runs.children(job.parent_run_id)
    assert len(children) == 2 and all(run.status == "FINISHED" for run in children)
    for run in children:
        epochs = int(run.params["epochs"])
        for name in ("train_loss", "val_accuracy", "val_f1", "val_log_loss"):
            assert [step for step, _ in run.metrics[name]] == list(range(1, epochs + 1)), (name, run.metrics[name])
        assert {"learning_rate", "layers_unfrozen", "dropout", "hidden_units"} <= set(run.params)
    assert world.runs.runs[job.parent_run_id].tags["gyre.backend"] == "torch-text"

    registration = world.registry.registration("topics", 1)
    assert registration.artifact_format == "safetensors-text"
    assert [(t.name, t.datatype) for t in registration.signature.inputs] == [("review", "BYTES")]
    assert [t.name for t in registration.signature.outputs] == ["predict", "proba"]
    assert registration.tags["gyre.backend"] == "torch-text" and registration.tags["gyre.text_feature"] == "review"
    assert "gyre.skops.trusted_types" not in registration.tags
    assert registration.description.startswith("all-MiniLM-L6-v2 + ")
    assert registration.lineage.metrics["holdout_accuracy"] >= 0.9
    assert registration.lineage.hyperparameters == world.runs.runs[job.best_run_id].params
    # The monitor's reference: the text feature's profile (embeddings sample, descriptors).
    assert registration.lineage.reference_profile is not None
    assert [(f.name, f.kind.value) for f in world.profiles.saved[-1].features] == [("review", "text")]

    # The artifact (sha256-verified by the store) rebuilds the model, which knows the topics.
    model = load_text_model(world.artifacts.get(registration.artifact.uri, registration.artifact.sha256))
    texts, topics = topic_texts(10, seed=123)
    predicted = np.asarray(model.config.labels)[model.predict(texts).argmax(axis=1)]
    assert (predicted == np.asarray(topics)).mean() >= 0.9


async def test_a_retraining_without_a_backend_keeps_the_text_model_and_rescores_its_champion(tmp_path: Path) -> None:
    world = World(tmp_path)
    first = await world.run(request("text-1"))
    assert first.status is JobStatus.SUCCEEDED, first.error
    # What the monitor or feedback sends: no backend, no text feature.
    second = await world.run(request("drift-1", backend="", text_feature=""))
    assert second.status is JobStatus.SUCCEEDED, second.error
    registration = world.registry.registration("topics", 2)
    assert registration.artifact_format == "safetensors-text"
    assert registration.tags["gyre.backend"] == "torch-text"
    # The text champion (v1) was loaded from its artifact and scored on the same holdout rows.
    assert registration.tags["gyre.champion.version"] == "1"
    assert float(registration.tags["gyre.champion.accuracy"]) >= 0.9
    assert registration.evaluation is not None and registration.evaluation.champion_version == 1
