"""MLflow's REST JSON (``mlflow/protos/service.proto``, proto3 JSON as MLflow's server writes it),
read and written by hand so that the service needs no MLflow package.

Conventions, as MLflow's: times are integers of milliseconds since the Unix epoch (UTC); statuses
are enum names (``RUNNING``); lifecycle stages are ``active`` / ``deleted``; an unset field is
left out. Non-finite metric values are written as the proto3 JSON strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"`` (valid JSON that MLflow's client parses back to floats).

Requests come as a JSON object (POST) or as query parameters (GET); :class:`Fields` (the shared
reader of :mod:`gyre_common.mlflow.fields`, with tracking's enums) reads either, coercing as
MLflow's server does (``"5"`` is accepted for an int64) and raising InvalidArgument naming the
parameter otherwise.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request

from gyre_common.mlflow import fields as mlflow_fields
from gyre_tracking.domain.errors import InvalidArgument
from gyre_tracking.domain.model import Experiment, Metric, Run, RunInfo, RunStatus, ViewType

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

_STATUS_NUMBERS = {1: RunStatus.RUNNING, 2: RunStatus.SCHEDULED, 3: RunStatus.FINISHED, 4: RunStatus.FAILED,
                   5: RunStatus.KILLED}
_VIEW_NUMBERS = {1: ViewType.ACTIVE_ONLY, 2: ViewType.DELETED_ONLY, 3: ViewType.ALL}


def to_millis(moment: datetime) -> int:
    """Milliseconds since the Unix epoch of an aware datetime (floored)."""
    return (moment - _EPOCH) // _MS


def from_millis(millis: int, name: str = "timestamp") -> datetime:
    """The aware UTC datetime of a count of milliseconds since the Unix epoch.

    Raises:
        InvalidArgument: outside the years 1 to 9999 (what a datetime holds), naming ``name``.
    """
    try:
        return _EPOCH + millis * _MS
    except OverflowError:
        raise InvalidArgument(f"Invalid value {millis} for parameter '{name}' supplied: milliseconds since the "
                              f"Unix epoch must fall in the years 1 to 9999") from None


def _float_json(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


# -- responses ---------------------------------------------------------------------------------

def experiment_json(experiment: Experiment) -> dict[str, Any]:
    """An ``Experiment`` message."""
    return {
        "experiment_id": experiment.experiment_id,
        "name": experiment.name,
        "artifact_location": experiment.artifact_location,
        "lifecycle_stage": experiment.lifecycle_stage.value,
        "last_update_time": to_millis(experiment.last_updated_at),
        "creation_time": to_millis(experiment.created_at),
        "tags": [{"key": k, "value": v} for k, v in experiment.tags.items()],
    }


def run_info_json(info: RunInfo) -> dict[str, Any]:
    """A ``RunInfo`` message (``run_uuid`` repeats ``run_id`` for older clients)."""
    body: dict[str, Any] = {
        "run_id": info.run_id,
        "run_uuid": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "user_id": info.user,
        "status": info.status.value,
        "start_time": to_millis(info.start_time),
        "artifact_uri": info.artifact_uri,
        "lifecycle_stage": info.lifecycle_stage.value,
    }
    if info.end_time is not None:
        body["end_time"] = to_millis(info.end_time)
    return body


def metric_json(metric: Metric) -> dict[str, Any]:
    """A ``Metric`` message."""
    return {"key": metric.key, "value": _float_json(metric.value), "timestamp": to_millis(metric.timestamp),
            "step": metric.step}


def run_json(run: Run) -> dict[str, Any]:
    """A ``Run`` message: info, and data with the latest value of each metric, params and tags."""
    # metric_json inlined: a search answer builds ~10 metrics x 1000 runs here, and the call
    # overhead was a visible share of runs/search (same output).
    epoch, ms, isfinite = _EPOCH, _MS, math.isfinite
    return {
        "info": run_info_json(run.info),
        "data": {
            "metrics": [{"key": m.key, "value": m.value if isfinite(m.value) else _float_json(m.value),
                         "timestamp": (m.timestamp - epoch) // ms, "step": m.step} for m in run.metrics],
            "params": [{"key": k, "value": v} for k, v in run.params.items()],
            "tags": [{"key": k, "value": v} for k, v in run.tags.items()],
        },
        "inputs": {},
        "outputs": {},
    }


# -- requests ----------------------------------------------------------------------------------

class Fields(mlflow_fields.Fields):
    """:class:`gyre_common.mlflow.fields.Fields` with tracking's ids and enums."""

    def run_id(self) -> str:
        """``run_id``, or the older ``run_uuid`` (MLflow's clients send both)."""
        value = self.string("run_id") or self.string("run_uuid")
        if not value:
            raise InvalidArgument("Missing value for required parameter 'run_id'")
        return value

    def status(self, name: str = "status") -> RunStatus | None:
        """A ``RunStatus`` by name (``FINISHED``) or number (3); None when absent."""
        return self.enum(name, RunStatus.__members__, _STATUS_NUMBERS, None)

    def view_type(self, name: str) -> ViewType:
        """A ``ViewType`` by name (``ACTIVE_ONLY``) or number (1); ACTIVE_ONLY when absent."""
        return self.enum(name, ViewType.__members__, _VIEW_NUMBERS, ViewType.ACTIVE_ONLY)


async def read_fields(request: Request) -> Fields:
    """The parameters of a request (:func:`gyre_common.mlflow.fields.read_fields`).

    Raises:
        InvalidArgument: the body is not a JSON object, or holds text PostgreSQL cannot store.
    """
    return await mlflow_fields.read_fields(request, Fields)


def plain_metric_points(value: Any) -> list[tuple[str, float, int, datetime]] | None:
    """The ``(key, value, step, timestamp)`` of each point of a ``metrics`` list when every point is
    plainly well formed: a non-empty string key, a JSON number value, an integer timestamp and an
    integer (or absent) step. None when any point is not: the caller then reads them with
    :class:`Fields`, which accepts MLflow's other spellings (numbers as strings, ``"NaN"``) and
    words the error.

    Why: a 1000-point log-batch spent ~19 ms building a :class:`Fields` per point on a slow machine;
    this loop does the same checks inline for the shape every MLflow client sends.
    """
    if type(value) is not list:
        return None
    points: list[tuple[str, float, int, datetime]] = []
    try:
        for point in value:
            if type(point) is not dict:
                return None
            key, number, stamp, step = (point.get("key"), point.get("value"), point.get("timestamp"),
                                        point.get("step", 0))
            if type(key) is not str or not key or type(stamp) is not int or type(step) is not int:
                return None
            if type(number) is float:
                points.append((key, number, step, _EPOCH + stamp * _MS))
            elif type(number) is int:  # not bool: type() is exact
                points.append((key, float(number), step, _EPOCH + stamp * _MS))
            else:
                return None
    except OverflowError:
        # A timestamp no datetime holds (or an int value no float holds): the checked path words it.
        return None
    return points


