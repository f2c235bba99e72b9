"""A training job end to end against fakes: tracked trials, lineage, artifact, events, champion."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gyre_common.artifacts import LocalArtifactStore
from gyre_common.models import load_model
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2 as monitor_pb
from gyre_trainer.convert import request_from_proto
from gyre_trainer.domain.dataset import fingerprint
from gyre_trainer.domain.holdout import holdout_id
from gyre_trainer.domain.jobs import Job, JobStatus, TrainingPolicy
from gyre_trainer.handlers import TrainerHandlers
from gyre_trainer.ports import HoldoutEvaluation
from gyre_trainer.registration import CODE_VERSION
from gyre_trainer.runner import CancelToken, JobRunner
from gyre_trainer.store import InMemoryJobStore
from gyre_trainer.testing import (
    FakeModelRegistry,
    FakeRunLogger,
    FakeTrainingDataSource,
    StoreProfileSink,
    breast_cancer_training_set,
)

DATA = breast_cancer_training_set()


class World:
    def __init__(self, root: Path, **policy: object) -> None:
        self.store = InMemoryJobStore()
        self.source = FakeTrainingDataSource({"patients": DATA})
        self.runs = FakeRunLogger()
        self.registry = FakeModelRegistry()
        self.artifacts = LocalArtifactStore(root)
        self.profiles = StoreProfileSink(self.artifacts)
        self.policy = TrainingPolicy(**{"retry_delay_s": 0.0, **policy})  # type: ignore[arg-type]
        self.service = TrainerHandlers(self.store, self.policy)
        self.runner = JobRunner(self.store, self.source, self.runs, self.registry, self.artifacts, self.profiles,
                                self.policy)

    async def run(self, request: ev.TrainingRequest, token: CancelToken | None = None) -> Job:
        await self.service.submit(request_from_proto(request))
        job = await self.store.claim_next("w1", 60)
        assert job is not None
        await self.runner.run(job, token)
        stored = await self.store.get(job.job_id)
        assert stored is not None
        return stored

    async def events(self) -> list[ev.TrainingEvent]:
        return [item.message for item in await self.store.pending_events(1000)]


def request(request_id: str = "req-1", *, max_evals: int = 5, families: tuple[str, ...] = ("logistic_regression",),
            promote: str = "") -> ev.TrainingRequest:
    message = ev.TrainingRequest(request_id=request_id, model_name="cancer", feature_view="patients",
                                 label="diagnosis", reason=ev.TRAINING_REASON_MANUAL, requested_by="test",
                                 promote_to_alias=promote)
    message.search.max_evals = max_evals
    message.search.random_seed = 7
    message.search.estimator_families.extend(families)
    return message


async def test_a_job_logs_every_trial_and_registers_the_best_with_full_lineage(tmp_path: Path) -> None:
    world = World(tmp_path)
    job = await world.run(request(max_evals=6, families=()))  # AutoML over every family
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.model_version == 1 and job.trials_completed == 6

    # Tracking: a parent run with one finished child run per trial, each with params and val_ metrics.
    children = world.runs.children(job.parent_run_id)
    assert len(children) == 6
    assert all(run.status == "FINISHED" and run.params["family"] and "val_roc_auc" in run.metrics
               for run in children)
    parent = world.runs.runs[job.parent_run_id]
    assert parent.status == "FINISHED" and "holdout_roc_auc" in parent.metrics
    assert parent.tags["gyre.best_run_id"] == job.best_run_id

    # Registry: lineage, signature, tags.
    registration = world.registry.registration("cancer", 1)
    lineage = registration.lineage
    assert lineage.training_request_id == "req-1"
    assert lineage.feature_views == ("patients",)
    assert lineage.dataset_fingerprint == fingerprint(DATA)
    assert lineage.run_id == job.best_run_id and lineage.experiment_id == parent.experiment_id
    best = world.runs.runs[job.best_run_id]
    assert lineage.hyperparameters == best.params
    assert set(lineage.metrics) == {"holdout_accuracy", "holdout_f1", "holdout_roc_auc", "holdout_log_loss"}
    assert lineage.metrics["holdout_roc_auc"] > 0.95
    # The registry's policy gets the evaluation; the holdout id names the definition, not the data.
    assert registration.evaluation == HoldoutEvaluation("holdout_roc_auc", False,
                                                        holdout_id(feature_view="patients", label="diagnosis",
                                                                   fraction=0.2))
    assert registration.skip_promotion  # no alias asked for: register only
    assert lineage.code_version == CODE_VERSION and lineage.label == "diagnosis" and lineage.training_rows == DATA.rows
    assert [t.name for t in registration.signature.inputs] == DATA.feature_names
    assert {t.datatype for t in registration.signature.inputs} == {"FP64"}
    assert [t.name for t in registration.signature.outputs] == ["predict", "proba"]
    assert json.loads(registration.tags["gyre.classes"]) == ["benign", "malignant"]
    assert registration.tags["gyre.holdout.id"] == registration.evaluation.holdout_id
    assert int(registration.tags["gyre.holdout.rows"]) > 70
    assert registration.idempotency_key == "req-1"

    # The artifact loads back with the declared trusted types and predicts.
    model = load_model(world.artifacts.get(registration.artifact.uri, registration.artifact.sha256))
    predictions = model.predict(DATA.features.head(20))
    assert set(predictions) <= {"benign", "malignant"}
    assert (predictions == DATA.label.head(20).to_numpy()).mean() > 0.8

    # The reference profile is in the monitor's format, referenced by the lineage.
    assert lineage.reference_profile is not None
    profile = monitor_pb.ReferenceProfile.FromString(
        world.artifacts.get(lineage.reference_profile.uri, lineage.reference_profile.sha256))
    assert profile.model_name == "cancer" and profile.model_version == 0 and len(profile.features) == 30
    assert profile.dataset_fingerprint == lineage.dataset_fingerprint

    # Events: STARTED, one TRIAL_COMPLETED per trial, SUCCEEDED with the version.
    events = await world.events()
    statuses = [e.status for e in events]
    assert statuses == [ev.TRAINING_STATUS_STARTED] + [ev.TRAINING_STATUS_TRIAL_COMPLETED] * 6 + [
        ev.TRAINING_STATUS_SUCCEEDED]
    assert [e.trial_number for e in events[1:7]] == [1, 2, 3, 4, 5, 6]
    done = events[-1]
    assert done.model_version == 1 and done.metrics["roc_auc"] == lineage.metrics["holdout_roc_auc"]
    assert done.run_id == job.best_run_id and done.parent_run_id == job.parent_run_id


async def test_the_same_request_gives_the_same_model(tmp_path: Path) -> None:
    first, second = World(tmp_path / "a"), World(tmp_path / "b")
    one = await first.run(request())
    two = await second.run(request())
    a = first.registry.registration("cancer", one.model_version)
    b = second.registry.registration("cancer", two.model_version)
    assert a.lineage.hyperparameters == b.lineage.hyperparameters
    assert a.lineage.metrics == b.lineage.metrics
    assert a.tags["gyre.holdout.digest"] == b.tags["gyre.holdout.digest"]


async def test_the_registry_policy_decides_and_the_trainer_reports_it(tmp_path: Path) -> None:
    world = World(tmp_path)
    first = await world.run(request("r1", promote="production"))
    assert first.promoted and first.champion_version == 0
    assert world.registry.aliases[("cancer", "production")] == 1
    second = await world.run(request("r2", promote="production"))
    # The production model was scored on the new holdout rows, for the record.
    assert second.champion_version == 1 and "roc_auc" in second.champion_metrics
    # Same data, same seed: equal metrics on the same holdout; the registry's ties promote.
    assert second.champion_metrics == pytest.approx(second.best_metrics)
    assert second.promoted and world.registry.aliases[("cancer", "production")] == 2
    done = (await world.events())[-1]
    assert done.champion_version == 1 and done.promoted and "roc_auc" in done.champion_metrics
    assert ("cancer", "champion") not in world.registry.aliases


async def test_retrains_on_newer_windows_share_the_holdout_definition(tmp_path: Path) -> None:
    world = World(tmp_path)
    old = request("old", promote="production")
    old.window_end.FromJsonString("2026-01-15T00:00:00Z")  # the first 336 rows
    new = request("new", promote="production")
    new.window_start.FromJsonString("2026-01-10T00:00:00Z")  # overlapping, newer rows
    await world.run(old)
    job = await world.run(new)
    a, b = world.registry.registration("cancer", 1), world.registry.registration("cancer", 2)
    assert a.lineage.dataset_fingerprint != b.lineage.dataset_fingerprint
    assert a.tags["gyre.holdout.digest"] != b.tags["gyre.holdout.digest"]
    assert a.evaluation is not None and b.evaluation is not None
    definition = ("primary_metric", "lower_is_better", "holdout_id")
    assert [getattr(a.evaluation, f) for f in definition] == [getattr(b.evaluation, f) for f in definition]
    # v2 carries the production model (v1) scored on v2's own holdout rows, so the registry can
    # compare the two on identical data.
    assert b.evaluation.champion_version == 1
    assert b.evaluation.champion_score == float(b.tags["gyre.champion.roc_auc"])
    new_score = b.lineage.metrics["holdout_roc_auc"]
    assert job.promoted == (new_score >= b.evaluation.champion_score)
    assert job.champion_version == 1


async def test_a_worse_version_is_not_promoted(tmp_path: Path) -> None:
    world = World(tmp_path)
    await world.run(request("first", promote="production"))
    versions = world.registry.versions["cancer"]
    perfect = dataclasses.replace(versions[0].lineage, metrics={"holdout_roc_auc": 1.0})
    # The champion's artifact cannot be re-scored (wrong digest), so the registry falls back to
    # comparing each version's own holdout score, where v1 is perfect.
    unreadable = dataclasses.replace(versions[0].artifact, sha256="0" * 64)
    versions[0] = dataclasses.replace(versions[0], lineage=perfect, artifact=unreadable)
    job = await world.run(request("second", promote="production", families=("random_forest",), max_evals=1))
    assert job.status is JobStatus.SUCCEEDED and job.model_version == 2
    assert not job.promoted and job.champion_version == 1
    assert world.registry.aliases[("cancer", "production")] == 1
    assert not (await world.events())[-1].promoted


async def test_a_transient_failure_requeues_then_succeeds(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.source.unavailable = 1
    job = await world.run(request())
    assert job.status is JobStatus.QUEUED and "UNAVAILABLE" in job.error and job.attempts == 1
    again = await world.store.claim_next("w1", 60)
    assert again is not None and again.attempts == 2
    await world.runner.run(again)
    done = await world.store.get(job.job_id)
    assert done is not None and done.status is JobStatus.SUCCEEDED


async def test_retries_are_bounded(tmp_path: Path) -> None:
    world = World(tmp_path, max_attempts=2)
    world.source.unavailable = 5
    job = await world.run(request())
    again = await world.store.claim_next("w1", 60)
    assert again is not None
    await world.runner.run(again)
    done = await world.store.get(job.job_id)
    assert done is not None and done.status is JobStatus.FAILED and "gave up after 2 attempts" in done.error
    assert (await world.events())[-1].status == ev.TRAINING_STATUS_FAILED


@pytest.mark.parametrize(("change", "reason"), [
    ({"feature_view": "nope"}, "NOT_FOUND"),
    ({"label": "nope"}, "no feature 'nope'"),
])
async def test_a_permanent_failure_fails_the_job_with_its_reason(tmp_path: Path, change: dict[str, str],
                                                                  reason: str) -> None:
    world = World(tmp_path)
    message = request()
    for key, value in change.items():
        setattr(message, key, value)
    job = await world.run(message)
    assert job.status is JobStatus.FAILED and reason in job.error
    last = (await world.events())[-1]
    assert last.status == ev.TRAINING_STATUS_FAILED and reason in last.error
    assert world.registry.versions == {}


async def test_too_few_rows_fail_clearly(tmp_path: Path) -> None:
    world = World(tmp_path)
    message = request()
    message.window_end.FromJsonString("2026-01-01T05:00:00Z")
    job = await world.run(message)
    assert job.status is JobStatus.FAILED and "fewer than the 20 needed" in job.error


async def test_a_cancelled_job_stops_between_trials(tmp_path: Path) -> None:
    world = World(tmp_path)
    message = request(max_evals=50)
    await world.service.submit(request_from_proto(message))
    job = await world.store.claim_next("w1", 60)
    assert job is not None
    # Cancel through the store, as another replica's API would: the runner sees it after a trial.
    await world.service.cancel(job.job_id)
    await world.runner.run(job, CancelToken())
    done = await world.store.get(job.job_id)
    assert done is not None and done.status is JobStatus.FAILED and done.error == "cancelled"
    assert done.trials_completed < 50
    assert world.runs.runs[done.parent_run_id].status == "FAILED"


async def test_shutdown_puts_the_job_back_without_counting_the_attempt(tmp_path: Path) -> None:
    world = World(tmp_path)
    await world.service.submit(request_from_proto(request(max_evals=50)))
    job = await world.store.claim_next("w1", 60)
    assert job is not None
    token = CancelToken()
    token.cancel("shutdown")
    await world.runner.run(job, token)
    stored = await world.store.get(job.job_id)
    assert stored is not None and stored.status is JobStatus.QUEUED and stored.attempts == 0
