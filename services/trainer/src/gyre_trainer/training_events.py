"""The ``gyre.events.v1.TrainingEvent`` messages a job emits, with stable event ids.

Event ids derive from (job, attempt, step), so an event re-written after a crash keeps its ce_id
and consumers deduplicate it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_trainer.domain.jobs import Job, derived_id
from gyre_trainer.domain.search import TrialResult, params_as_strings
from gyre_trainer.store import PendingEvent


def _base(job: Job, status: int) -> ev.TrainingEvent:
    event = ev.TrainingEvent(request_id=job.request_id, model_name=job.model_name, status=status,  # type: ignore[arg-type]
                             job_id=job.job_id, parent_run_id=job.parent_run_id)
    event.occurred_at.FromDatetime(datetime.now(UTC))
    return event


def started(job: Job) -> PendingEvent:
    """STARTED: a worker began attempt ``job.attempts``."""
    return PendingEvent(derived_id("event", job.job_id, job.attempts, "started"),
                        _base(job, ev.TRAINING_STATUS_STARTED))


def trial_completed(job: Job, trial: TrialResult, run_id: str) -> PendingEvent:
    """TRIAL_COMPLETED: one trial ended; metrics are its validation metrics (``val_*``)."""
    event = _base(job, ev.TRAINING_STATUS_TRIAL_COMPLETED)
    event.run_id = run_id
    event.trial_number = trial.number
    event.metrics.update({f"val_{k}": v for k, v in trial.metrics.items()})
    event.params.update(params_as_strings(trial.params))
    event.error = trial.error
    return PendingEvent(derived_id("event", job.job_id, job.attempts, "trial", trial.number), event)


def succeeded(job: Job, best: TrialResult, holdout_metrics: Mapping[str, float]) -> PendingEvent:
    """SUCCEEDED: the version is registered; metrics are the holdout metrics of the new version."""
    event = _base(job, ev.TRAINING_STATUS_SUCCEEDED)
    event.run_id = job.best_run_id
    event.trial_number = best.number
    event.metrics.update(dict(holdout_metrics))
    event.params.update(params_as_strings(best.params))
    event.model_version = job.model_version
    event.champion_version = job.champion_version
    event.champion_metrics.update(job.champion_metrics)
    event.promoted = job.promoted
    return PendingEvent(derived_id("event", job.job_id, "succeeded"), event)


def failed(job: Job, error: str) -> PendingEvent:
    """FAILED: the job ended without a version; ``error`` says why."""
    event = _base(job, ev.TRAINING_STATUS_FAILED)
    event.error = error
    return PendingEvent(derived_id("event", job.job_id, "failed"), event)
