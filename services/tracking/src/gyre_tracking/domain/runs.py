"""Run lifecycle rules: status updates, default names and artifact locations (pure, no I/O)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime

from gyre_tracking.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from gyre_tracking.domain.model import LifecycleStage, RunInfo, RunStatus

RUN_NAME_TAG = "mlflow.runName"
"""MLflow's tag mirroring the run name; setting it renames the run."""
USER_TAG = "mlflow.user"
"""MLflow's tag mirroring the run's user."""


def new_run_id() -> str:
    """A fresh run id: 32 lowercase hex characters (a UUID4), like MLflow's."""
    return uuid.uuid4().hex


def default_run_name(run_id: str) -> str:
    """The name of a run created without one."""
    return f"run-{run_id[:8]}"


def experiment_artifact_location(root: str, experiment_id: str) -> str:
    """Where an experiment created without an artifact location keeps artifacts: ``<root>/<id>``."""
    return f"{root.rstrip('/')}/{experiment_id}"


def run_artifact_uri(experiment_location: str, run_id: str) -> str:
    """A run's artifact root, as MLflow lays it out: ``<experiment location>/<run id>/artifacts``."""
    return f"{experiment_location.rstrip('/')}/{run_id}/artifacts"


def ensure_writable(run_id: str, lifecycle: LifecycleStage | None) -> None:
    """Raise NotFound for a missing run (``lifecycle`` None) and FailedPrecondition for a deleted one."""
    if lifecycle is None:
        raise NotFound(f"run {run_id!r} does not exist")
    if lifecycle is not LifecycleStage.ACTIVE:
        raise FailedPrecondition(f"run {run_id!r} is deleted; restore it before changing it")


def plan_update(info: RunInfo, *, status: RunStatus | None, end_time: datetime | None,
                run_name: str | None, now: datetime) -> RunInfo:
    """The run's info after an update (MLflow's UpdateRun, made consistent).

    Any status may follow any other: MLflow resumes a finished run by setting RUNNING again. The end
    time follows the status: a terminal status keeps the given end time, else the run's existing
    one, else ``now`` (never before the start); RUNNING or SCHEDULED clears it unless one is given
    explicitly. Without a status, a given end time simply replaces the old one.

    Args:
        status, end_time, run_name: None leaves that field unchanged.
        now: the current time, UTC.

    Raises:
        FailedPrecondition: the run is deleted.
        InvalidArgument: ``end_time`` precedes the run's start time.
    """
    ensure_writable(info.run_id, info.lifecycle_stage)
    if end_time is not None and end_time < info.start_time:
        raise InvalidArgument(f"end_time {end_time.isoformat()} precedes the start_time "
                              f"{info.start_time.isoformat()} of run {info.run_id!r}")
    new_status = status or info.status
    new_end: datetime | None
    if status is None:
        new_end = end_time if end_time is not None else info.end_time
    elif status.terminal:
        new_end = end_time or (info.end_time if info.status.terminal else None) or max(now, info.start_time)
    else:
        new_end = end_time
    return dataclasses.replace(info, status=new_status, end_time=new_end,
                               run_name=info.run_name if run_name is None else run_name)
