"""What the dashboard shows: plain, immutable values with no I/O and no transport.

Every time is an aware UTC ``datetime`` (or None when the upstream did not say). Each part of the
overview that comes from another service is a :class:`Section`, whose ``error`` says why it may be
incomplete, so the page can show "unknown" for one part and still render the rest.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UpstreamError(Exception):
    """A call to another service failed; the message names the service and says how."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service


class Health(StrEnum):
    """What a service's ``/readyz`` said."""

    READY = "ready"
    """200: every readiness check passed."""
    NOT_READY = "not_ready"
    """503: the process answers but a dependency (database, broker, ...) is failing."""
    DOWN = "down"
    """No answer: connection refused, timeout, or an answer that is not a readiness report."""


@dataclass(frozen=True)
class ServiceHealth:
    """Readiness of one service.

    Attributes:
        name: service name (``registry``).
        url: base URL the dashboard called.
        health: the verdict.
        failing: names of the failing readiness checks (``database``, ``broker``) when NOT_READY.
        detail: why it is not ready or down (error text), empty when ready.
        latency_ms: how long ``/readyz`` took, in milliseconds; None when there was no answer.
    """

    name: str
    url: str
    health: Health
    failing: tuple[str, ...] = ()
    detail: str = ""
    latency_ms: float | None = None


@dataclass(frozen=True)
class VersionSummary:
    """One model version as the registry describes it.

    Attributes:
        version: number, from 1.
        status: lifecycle state without the enum prefix (``READY``, ``ARCHIVED``).
        aliases: aliases pointing at it.
        created_at: registration time, UTC.
        created_by: who registered it.
        primary_metric: metric that ranks versions (``holdout_accuracy``), empty if none.
        metrics: holdout metrics from its lineage.
        run_id: tracking run it came from.
    """

    version: int
    status: str = ""
    aliases: tuple[str, ...] = ()
    created_at: datetime | None = None
    created_by: str = ""
    primary_metric: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str = ""


@dataclass(frozen=True)
class ModelSummary:
    """A registered model with its aliases and newest versions.

    Attributes:
        name: model name.
        description: what it does.
        latest_version: newest version number, 0 while there is none.
        aliases: alias -> version it points at.
        updated_at: last change, UTC.
        versions: newest versions first (at most ``versions_per_model``).
        versions_error: why ``versions`` could not be read, empty otherwise.
    """

    name: str
    description: str = ""
    latest_version: int = 0
    aliases: dict[str, int] = field(default_factory=dict)
    updated_at: datetime | None = None
    versions: tuple[VersionSummary, ...] = ()
    versions_error: str = ""


@dataclass(frozen=True)
class FeatureDriftRow:
    """Drift test result of one feature over one window (Evidently's column drift).

    Attributes:
        feature: input name.
        test_name: ``ks``, ``chisquare``, ``z``, ``wasserstein`` or ``jensenshannon``.
        statistic: test statistic or distance.
        p_value: p-value of a hypothesis test, None for distances.
        threshold: the drift threshold.
        drifted: whether it drifted.
    """

    feature: str
    test_name: str = ""
    statistic: float = 0.0
    p_value: float | None = None
    threshold: float = 0.0
    drifted: bool = False


@dataclass(frozen=True)
class ModelDrift:
    """The monitor's latest evaluated window of one model.

    Attributes:
        model_name: the model.
        model_version: the version served in the window.
        window_start: start (inclusive), UTC.
        window_end: end (exclusive), UTC.
        current_rows: predictions in the window.
        drift_share: share of features that drifted, in [0, 1].
        dataset_drift: whether the share reached the threshold.
        features: one row per tested feature.
    """

    model_name: str
    model_version: int = 0
    window_start: datetime | None = None
    window_end: datetime | None = None
    current_rows: int = 0
    drift_share: float = 0.0
    dataset_drift: bool = False
    features: tuple[FeatureDriftRow, ...] = ()

    @property
    def drifted_features(self) -> tuple[str, ...]:
        """Names of the features that drifted."""
        return tuple(row.feature for row in self.features if row.drifted)


@dataclass(frozen=True)
class VersionQuality:
    """Feedback quality of one model version over the quality window; a metric without data is None.

    Attributes:
        model_version: version number.
        predictions: predictions served in the window.
        feedback_count: feedback items on them.
        labelled_count: items with a corrected label.
        accuracy: share of labelled predictions that were right, in [0, 1].
        mean_stars: mean star rating, in [1, 5].
        thumbs_up_rate: share of thumbs up, in [0, 1].
        mean_score: mean normalised score, in [0, 1].
        bleu: corpus BLEU of text outputs, in [0, 1].
        rouge_l: mean ROUGE-L F1 of text outputs, in [0, 1].
    """

    model_version: int
    predictions: int = 0
    feedback_count: int = 0
    labelled_count: int = 0
    accuracy: float | None = None
    mean_stars: float | None = None
    thumbs_up_rate: float | None = None
    mean_score: float | None = None
    bleu: float | None = None
    rouge_l: float | None = None


@dataclass(frozen=True)
class ModelQuality:
    """Feedback quality of a model's versions over one window (UTC), newest version first."""

    model_name: str
    window_start: datetime | None = None
    window_end: datetime | None = None
    versions: tuple[VersionQuality, ...] = ()


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


@dataclass(frozen=True)
class AlertSummary:
    """One monitor alert (drift or quality drop).

    Attributes:
        alert_id: its id.
        kind: without the enum prefix (``DRIFT``, ``QUALITY_DROP``).
        model_name: model concerned.
        model_version: version concerned.
        detected_at: when it was raised, UTC.
        drift_share: share of drifted features, in [0, 1] (drift alerts).
        drifted_features: names of the drifted features (drift alerts).
    """

    alert_id: str
    kind: str = ""
    model_name: str = ""
    model_version: int = 0
    detected_at: datetime | None = None
    drift_share: float = 0.0
    drifted_features: tuple[str, ...] = ()


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


@dataclass(frozen=True)
class Section(Generic[T]):
    """One part of the overview read from another service.

    Attributes:
        source: the service it comes from.
        items: what could be read.
        error: why it is missing or incomplete (the upstream is down, a call failed), empty when
            everything was read.
    """

    source: str
    items: tuple[T, ...] = ()
    error: str = ""

    @property
    def available(self) -> bool:
        """Whether the source answered (at least partly)."""
        return not self.error or bool(self.items)


@dataclass(frozen=True)
class Overview:
    """Everything the operator page shows, gathered at ``generated_at`` (UTC)."""

    generated_at: datetime
    services: tuple[ServiceHealth, ...]
    models: Section[ModelSummary]
    drift: Section[ModelDrift]
    quality: Section[ModelQuality]
    training_jobs: Section[TrainingJobSummary]
    alerts: Section[AlertSummary]
    runs: Section[RunSummary]
    duration_ms: float = 0.0


def to_json(value: Any) -> Any:
    """``value`` (an :class:`Overview` or any part of it) as JSON-ready data: dataclasses become
    objects (properties ``drifted_features`` and ``available`` included), enums their value, times
    RFC 3339 strings in UTC, and a NaN or infinite number null (JSON has no such numbers; an
    upstream may send ``"NaN"``, e.g. a diverged trial's metric)."""
    if isinstance(value, Section):
        return {"source": value.source, "available": value.available, "error": value.error or None,
                "items": [to_json(item) for item in value.items]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, ModelDrift):
            data["drifted_features"] = list(value.drifted_features)
        return data
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
