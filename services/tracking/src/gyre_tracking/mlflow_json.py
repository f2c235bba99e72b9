"""MLflow's REST JSON (``mlflow/protos/service.proto``, proto3 JSON as MLflow's server writes it),
read and written by hand so that the service needs no MLflow package.

Conventions, as MLflow's: times are integers of milliseconds since the Unix epoch (UTC); statuses
are enum names (``RUNNING``); lifecycle stages are ``active`` / ``deleted``; an unset field is
left out. Non-finite metric values are written as the proto3 JSON strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"`` (valid JSON that MLflow's client parses back to floats).

Requests come as a JSON object (POST) or as query parameters (GET); :class:`Fields` reads either,
coercing as MLflow's server does (``"5"`` is accepted for an int64) and raising
:class:`~gyre_tracking.domain.errors.InvalidArgument` naming the parameter otherwise.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request

from gyre_tracking.domain.errors import InvalidArgument
from gyre_tracking.domain.model import Experiment, Metric, Run, RunInfo, RunStatus, ViewType

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlevel = 3


def _shown(value: Any) -> str:
    """A short repr of a request value for an error message (bounded in length and depth, so a
    deeply nested or huge value can neither flood the message nor overflow the stack)."""
    return _SHOWN.repr(value)


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

async def read_fields(request: Request) -> Fields:
    """The parameters of a request: the JSON body of a POST/PATCH, the query string of a GET.

    Raises:
        InvalidArgument: the body is not a JSON object.
    """
    if request.method in ("GET", "DELETE"):
        data: dict[str, Any] = {}
        if b"%00" in request.scope.get("query_string", b""):
            raise InvalidArgument(f"the query string holds a NUL character (%00): {_UNSTORABLE}")
        for key, value in request.query_params.multi_items():
            if key in data:
                previous = data[key]
                data[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                data[key] = value
        return Fields(data, from_query=True)
    raw = await request.body()
    if not raw.strip():
        return Fields({})
    try:
        # MLflow's client writes NaN and infinities as bare JSON tokens; json.loads accepts them.
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"malformed JSON request body: {exc}") from None
    except RecursionError:
        # Arrays or objects nested deeper than the decoder recurses: refused, not a 500.
        raise InvalidArgument("malformed JSON request body: nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object")
    # Only bodies that may hold such text are walked: \u0000 or \uD800-\uDFFF escapes, or NUL
    # bytes (a UTF-16/32 body); a plain log-batch is not slowed down.
    if b"\x00" in raw or _SUSPECT_ESCAPE.search(raw):
        check_storable_text(body)
    return Fields(body)


_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
"""A JSON escape of NUL or of a UTF-16 surrogate (a simple pattern: no nested quantifiers)."""
_UNSTORABLE = "NUL characters and unpaired surrogates cannot be stored in text"


def check_storable_text(value: Any) -> None:
    """Refuse any string in ``value`` (a decoded JSON value, keys included) that PostgreSQL text
    cannot hold: one with a NUL character or an unpaired UTF-16 surrogate. Walked with a stack, not
    recursion, so nesting depth does not matter.

    Raises:
        InvalidArgument: naming the first such string.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidArgument(f"Invalid value {_shown(item)} supplied: {_UNSTORABLE}") from None
            if "\x00" in item:
                raise InvalidArgument(f"Invalid value {_shown(item)} supplied: {_UNSTORABLE}")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class Fields:
    """Typed access to the parameters of one request (names as in MLflow's protos).

    Args:
        data: the JSON object, or the query parameters (a repeated one as a list).
        from_query: values came from a query string (everything is a string there).
    """

    def __init__(self, data: Mapping[str, Any], *, from_query: bool = False) -> None:
        self.data = data
        self.from_query = from_query

    def _scalar(self, name: str) -> Any:
        value = self.data.get(name)
        if isinstance(value, list) and self.from_query:
            return value[-1]
        return value

    def has(self, name: str) -> bool:
        """Whether the parameter was given (and is not null)."""
        return self.data.get(name) is not None

    def string(self, name: str, *, required: bool = False, default: str = "") -> str:
        """A string parameter; numbers are accepted as their decimal text (ids)."""
        value = self._scalar(name)
        if value is None or value == "":
            if required:
                raise InvalidArgument(f"Missing value for required parameter '{name}'")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidArgument(f"Invalid value {_shown(value)} for parameter '{name}' supplied: expected a string")
        return str(value)

    def run_id(self) -> str:
        """``run_id``, or the older ``run_uuid`` (MLflow's clients send both)."""
        value = self.string("run_id") or self.string("run_uuid")
        if not value:
            raise InvalidArgument("Missing value for required parameter 'run_id'")
        return value

    def integer(self, name: str, *, required: bool = False, default: int | None = None) -> int | None:
        """An int64 parameter (a JSON number or a decimal string)."""
        value = self._scalar(name)
        if value is None or value == "":
            if required:
                raise InvalidArgument(f"Missing value for required parameter '{name}'")
            return default
        if isinstance(value, bool):
            raise InvalidArgument(f"Invalid value {_shown(value)} for parameter '{name}' supplied: expected an integer")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise InvalidArgument(f"Invalid value {_shown(value)} for parameter '{name}' supplied: expected an integer")

    def number(self, name: str, *, required: bool = True) -> float:
        """A double parameter; ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` are accepted as strings."""
        return as_number(self._scalar(name), name, required=required)

    def strings(self, name: str) -> list[str]:
        """A repeated string parameter."""
        value = self.data.get(name)
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, str | int):
                raise InvalidArgument(f"Invalid value {_shown(item)} in parameter '{name}' supplied: expected strings")
        return [str(item) for item in items]

    def objects(self, name: str) -> list[Fields]:
        """A repeated message parameter (a JSON array of objects)."""
        value = self.data.get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise InvalidArgument(f"Invalid value for parameter '{name}' supplied: expected a list of objects")
        return [Fields(item) for item in value]

    def key_values(self, name: str) -> list[tuple[str, str]]:
        """A repeated ``{key, value}`` message (tags, params) as pairs."""
        pairs = []
        for item in self.objects(name):
            pairs.append((item.string("key", required=True), item.string("value")))
        return pairs

    def status(self, name: str = "status") -> RunStatus | None:
        """A ``RunStatus`` by name (``FINISHED``) or number (3); None when absent."""
        value = self._scalar(name)
        if value is None or value == "":
            return None
        if isinstance(value, str) and value.upper() in RunStatus.__members__:
            return RunStatus[value.upper()]
        if isinstance(value, int) and not isinstance(value, bool) and value in _STATUS_NUMBERS:
            return _STATUS_NUMBERS[value]
        number = _small_number(value) if isinstance(value, str) else None
        if number is not None and number in _STATUS_NUMBERS:
            return _STATUS_NUMBERS[number]
        raise InvalidArgument(f"Invalid value {_shown(value)} for parameter '{name}' supplied: use one of "
                              f"{', '.join(RunStatus.__members__)}")

    def view_type(self, name: str) -> ViewType:
        """A ``ViewType`` by name (``ACTIVE_ONLY``) or number (1); ACTIVE_ONLY when absent."""
        value = self._scalar(name)
        if value is None or value == "":
            return ViewType.ACTIVE_ONLY
        if isinstance(value, str) and value.upper() in ViewType.__members__:
            return ViewType[value.upper()]
        number = value if isinstance(value, int) and not isinstance(value, bool) else \
            _small_number(value) if isinstance(value, str) else None
        if number in _VIEW_NUMBERS:
            return _VIEW_NUMBERS[number]
        raise InvalidArgument(f"Invalid value {_shown(value)} for parameter '{name}' supplied: use ACTIVE_ONLY, "
                              "DELETED_ONLY or ALL")


def _small_number(text: str) -> int | None:
    """An enum number written as one or two ASCII digits ("3"), else None (``str.isdigit`` also
    holds for "²", which int() refuses)."""
    return int(text) if len(text) <= 2 and text.isascii() and text.isdigit() else None


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


def as_number(value: Any, name: str, *, required: bool = True) -> float:
    """A double from JSON: a number, or a numeric string including NaN and ±Infinity.

    Raises:
        InvalidArgument: missing (when required) or not a number.
    """
    if value is None or value == "":
        if required:
            raise InvalidArgument(f"Missing value for required parameter '{name}'")
        return 0.0
    if isinstance(value, bool):
        raise InvalidArgument(f"Invalid value {_shown(value)} for parameter '{name}' supplied: expected a number")
    try:
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            return float(value)
    except (ValueError, OverflowError):  # OverflowError: an integer beyond any double
        pass
    raise InvalidArgument(f"Invalid value {_shown(value)} for parameter '{name}' supplied: expected a number")
