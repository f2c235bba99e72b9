"""The tracking model (MLflow's): experiments group runs; a run records params (write-once),
metric points (append-only, with step and timestamp), tags (overwritable) and artifact references.

Every datetime here is timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class RunStatus(StrEnum):
    """Lifecycle state of a run, spelled as MLflow spells it (and as stored)."""

    RUNNING = "RUNNING"
    SCHEDULED = "SCHEDULED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    @property
    def terminal(self) -> bool:
        """Whether the run has ended (FINISHED, FAILED or KILLED)."""
        return self in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)


class LifecycleStage(StrEnum):
    """Whether an experiment or run is in use or deleted (MLflow's lifecycle_stage)."""

    ACTIVE = "active"
    DELETED = "deleted"


class ViewType(StrEnum):
    """Which lifecycle stages a search returns (MLflow's ViewType)."""

    ACTIVE_ONLY = "ACTIVE_ONLY"
    DELETED_ONLY = "DELETED_ONLY"
    ALL = "ALL"

    @property
    def stages(self) -> tuple[LifecycleStage, ...]:
        """The lifecycle stages this view includes."""
        if self is ViewType.ACTIVE_ONLY:
            return (LifecycleStage.ACTIVE,)
        if self is ViewType.DELETED_ONLY:
            return (LifecycleStage.DELETED,)
        return (LifecycleStage.ACTIVE, LifecycleStage.DELETED)


@dataclass(frozen=True)
class Experiment:
    """A named group of runs.

    Attributes:
        experiment_id: decimal string of the server-assigned integer id ("0" is "Default").
        artifact_location: URI under which the experiment's runs keep their artifacts.
        created_at, last_updated_at: UTC.
    """

    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: LifecycleStage
    created_at: datetime
    last_updated_at: datetime
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunInfo:
    """Identity and lifecycle of a run. ``end_time`` is None while the run has not ended."""

    run_id: str
    experiment_id: str
    run_name: str
    status: RunStatus
    start_time: datetime
    end_time: datetime | None
    artifact_uri: str
    user: str
    lifecycle_stage: LifecycleStage


@dataclass(frozen=True)
class Metric:
    """One value of a metric at one step. ``timestamp`` is when it was measured (UTC); ``value``
    may be NaN or infinite (stored as given)."""

    key: str
    value: float
    step: int
    timestamp: datetime


@dataclass(frozen=True)
class RunArtifact:
    """An artifact of a run: a reference to bytes in the artifact store.

    Attributes:
        path: relative to the run's artifact root, e.g. ``model``.
        uri: where the bytes are (``file:///…``, ``s3://…``).
        sha256: lowercase hex digest of the bytes.
        size_bytes: length of the bytes.
        format: serialisation format, e.g. ``skops``; may be empty.
        logged_at: when it was recorded (UTC); None before it is stored.
    """

    path: str
    uri: str
    sha256: str
    size_bytes: int
    format: str = ""
    logged_at: datetime | None = None


@dataclass(frozen=True)
class Run:
    """A run with what it recorded: latest value of each metric, params, tags and artifacts."""

    info: RunInfo
    metrics: list[Metric] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[RunArtifact] = field(default_factory=list)


@dataclass(frozen=True)
class NewRun:
    """What creating a run takes (validated by :func:`gyre_tracking.domain.validation.validate_new_run`).

    Attributes:
        run_id: chosen by the client (makes retries idempotent) or generated.
        start_time: UTC.
    """

    experiment_id: str
    run_id: str
    run_name: str
    start_time: datetime
    user: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    status: RunStatus = RunStatus.RUNNING
