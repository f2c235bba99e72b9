"""What the dashboard shows of retraining: training jobs and tracking runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


@dataclass(frozen=True)
class TrainingJobSummary:
    """One training job, i.e. one retraining request and what the trainer made of it.

    Attributes:
        job_id: the trainer's id.
        request_id: the request's idempotency key.
        model_name: model trained.
        status: ``QUEUED``, or the TrainingStatus without its prefix (``STARTED``, ``SUCCEEDED``, ``FAILED``).
        reason: why it was requested, without the prefix (``DRIFT``, ``FEEDBACK``, ``MANUAL``).
        requested_by: who or what asked (``monitor``, a user).
        created_at: when the job was created, UTC.
        finished_at: when it ended, UTC; None while it runs.
        trials_completed: finished search trials.
        model_version: version it registered, 0 if none.
        promoted: whether the new version was promoted.
        error: why it failed, empty otherwise.
    """

    job_id: str
    request_id: str = ""
    model_name: str = ""
    status: str = ""
    reason: str = ""
    requested_by: str = ""
    created_at: datetime | None = None
    finished_at: datetime | None = None
    trials_completed: int = 0
    model_version: int = 0
    promoted: bool = False
    error: str = ""


class RunOrigin(StrEnum):
    """Who logged a tracking run, told by its tags (the tracking service stores both alike)."""

    TRAINER = "trainer"
    """The Gyre trainer: the run carries ``gyre.*`` tags (``gyre.job_id``; a hyperopt trial also
    ``gyre.trial``)."""
    MLFLOW = "mlflow"
    """An MLflow client: the run carries ``mlflow.source.*`` or ``mlflow.user`` tags, which the
    fluent API (``mlflow.start_run``) sets."""
    OTHER = "other"
    """Neither, e.g. ``MlflowClient.create_run`` without tags, or a gRPC client of its own."""


@dataclass(frozen=True)
class RunSummary:
    """One tracking run (a trainer search or trial, or a run logged with the MLflow client).

    Attributes:
        run_id: the run's id (32 hex characters).
        run_name: its name.
        experiment_id: the experiment it belongs to.
        experiment_name: that experiment's name, empty when unknown.
        status: without the enum prefix (``RUNNING``, ``FINISHED``, ``FAILED``, ``KILLED``,
            ``SCHEDULED``), empty when not said.
        start_time: when it started, UTC.
        end_time: when it ended, UTC; None while it runs.
        user: who ran it (``RunInfo.user``, else the ``mlflow.user`` tag).
        origin: who logged it, from its tags.
        origin_detail: a short "where from": ``job 1a2b3c4d, trial 3`` / ``job 1a2b3c4d, search``
            for the trainer, the ``mlflow.source.name`` file name for MLflow; empty if none.
        parent_run_id: the ``mlflow.parentRunId`` tag (a trial's search run), empty if none.
        metrics: a few key latest metrics (the trainer's objective first, then ``holdout_*``,
            ``val_*``, the rest by name); a non-finite value is kept (JSON shows it as null).
        metric_count: how many metrics the run has in all.
    """

    run_id: str
    run_name: str = ""
    experiment_id: str = ""
    experiment_name: str = ""
    status: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    user: str = ""
    origin: RunOrigin = RunOrigin.OTHER
    origin_detail: str = ""
    parent_run_id: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    metric_count: int = 0
