"""Run lifecycle rules: status updates and their end times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gyre_tracking.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from gyre_tracking.domain.model import LifecycleStage, RunInfo, RunStatus
from gyre_tracking.domain.runs import (
    default_run_name,
    ensure_writable,
    experiment_artifact_location,
    new_run_id,
    plan_update,
    run_artifact_uri,
)

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)


def info(status: RunStatus = RunStatus.RUNNING, end: datetime | None = None,
         stage: LifecycleStage = LifecycleStage.ACTIVE) -> RunInfo:
    return RunInfo("r1", "1", "run-1", status, T0, end, "file:///a/1/r1/artifacts", "me", stage)


def test_finishing_sets_end_time_to_now_unless_given() -> None:
    now = T0 + timedelta(minutes=5)
    done = plan_update(info(), status=RunStatus.FINISHED, end_time=None, run_name=None, now=now)
    assert done.status is RunStatus.FINISHED and done.end_time == now
    given = T0 + timedelta(minutes=1)
    done = plan_update(info(), status=RunStatus.FAILED, end_time=given, run_name=None, now=now)
    assert done.end_time == given


def test_terminal_to_terminal_keeps_the_end_time() -> None:
    ended = T0 + timedelta(minutes=2)
    killed = plan_update(info(RunStatus.FINISHED, ended), status=RunStatus.KILLED, end_time=None, run_name=None,
                         now=T0 + timedelta(hours=1))
    assert killed.status is RunStatus.KILLED and killed.end_time == ended


def test_resuming_clears_the_end_time() -> None:
    resumed = plan_update(info(RunStatus.FINISHED, T0 + timedelta(minutes=2)), status=RunStatus.RUNNING,
                          end_time=None, run_name=None, now=T0 + timedelta(hours=1))
    assert resumed.status is RunStatus.RUNNING and resumed.end_time is None


def test_no_status_changes_only_what_is_given() -> None:
    renamed = plan_update(info(), status=None, end_time=None, run_name="better", now=T0)
    assert renamed.run_name == "better" and renamed.status is RunStatus.RUNNING and renamed.end_time is None


def test_end_before_start_is_refused_and_clock_skew_is_clamped() -> None:
    with pytest.raises(InvalidArgument, match="precedes the start_time"):
        plan_update(info(), status=RunStatus.FINISHED, end_time=T0 - timedelta(seconds=1), run_name=None, now=T0)
    # The server's clock behind a client-given start time: the end is the start, never before it.
    done = plan_update(info(), status=RunStatus.FINISHED, end_time=None, run_name=None,
                       now=T0 - timedelta(minutes=1))
    assert done.end_time == T0


def test_deleted_or_missing_runs_cannot_change() -> None:
    with pytest.raises(FailedPrecondition, match="deleted"):
        plan_update(info(stage=LifecycleStage.DELETED), status=RunStatus.FINISHED, end_time=None, run_name=None,
                    now=T0)
    with pytest.raises(NotFound, match="'r9' does not exist"):
        ensure_writable("r9", None)


def test_names_and_locations() -> None:
    run_id = new_run_id()
    assert len(run_id) == 32 and int(run_id, 16) >= 0
    assert default_run_name(run_id) == f"run-{run_id[:8]}"
    location = experiment_artifact_location("file:///data/tracking/", "7")
    assert location == "file:///data/tracking/7"
    assert run_artifact_uri(location, run_id) == f"file:///data/tracking/7/{run_id}/artifacts"
    assert RunStatus.KILLED.terminal and not RunStatus.SCHEDULED.terminal
