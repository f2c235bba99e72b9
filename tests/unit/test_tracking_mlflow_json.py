"""MLflow REST JSON codec and the proxied artifact paths (no I/O)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gyre_common import errors
from gyre_common.errors import InvalidArgument
from gyre_common.mlflow.fields import check_storable_text
from gyre_tracking import mlflow_json as mj
from gyre_tracking.domain.errors import AlreadyExists, FailedPrecondition, NotFound, ParamConflict
from gyre_tracking.domain.model import Metric, RunStatus, ViewType
from gyre_tracking.mlflow_api import ERRORS
from gyre_tracking.store.files import ProxiedArtifactFiles, clean_relative_path, proxied_artifact_path


def test_times_are_epoch_milliseconds() -> None:
    moment = datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert mj.to_millis(moment) == 1_740_830_400_123
    assert mj.from_millis(1_740_830_400_123) == moment


def test_non_finite_metric_values_are_proto3_json_strings() -> None:
    stamp = datetime(2025, 3, 1, tzinfo=UTC)
    assert mj.metric_json(Metric("m", math.nan, 2, stamp))["value"] == "NaN"
    assert mj.metric_json(Metric("m", -math.inf, 2, stamp))["value"] == "-Infinity"
    assert mj.metric_json(Metric("m", 0.5, 2, stamp)) == {"key": "m", "value": 0.5, "timestamp": 1_740_787_200_000,
                                                         "step": 2}


def test_fields_coerce_like_mlflow_and_name_the_parameter() -> None:
    fields = mj.Fields({"experiment_id": 3, "step": "7", "value": "NaN", "status": "FINISHED", "view": 3,
                        "tags": [{"key": "a", "value": "b"}]})
    assert fields.string("experiment_id") == "3" and fields.integer("step") == 7
    assert math.isnan(fields.number("value"))
    assert fields.status() is RunStatus.FINISHED and fields.view_type("view") is ViewType.ALL
    assert fields.key_values("tags") == [("a", "b")]
    with pytest.raises(InvalidArgument, match="Missing value for required parameter 'run_id'"):
        fields.run_id()
    with pytest.raises(InvalidArgument, match="parameter 'step'"):
        mj.Fields({"step": "seven"}).integer("step")
    with pytest.raises(InvalidArgument, match="parameter 'status'"):
        mj.Fields({"status": "DONE"}).status()
    query = mj.Fields({"run_uuid": "abc", "order_by": ["a", "b"]}, from_query=True)
    assert query.run_id() == "abc" and query.strings("order_by") == ["a", "b"]


@pytest.mark.parametrize(("error", "code", "status"), [
    (InvalidArgument("x"), "INVALID_PARAMETER_VALUE", 400),
    (ParamConflict("x"), "INVALID_PARAMETER_VALUE", 400),
    (FailedPrecondition("x"), "INVALID_PARAMETER_VALUE", 400),
    (NotFound("x"), "RESOURCE_DOES_NOT_EXIST", 404),
    (AlreadyExists("x"), "RESOURCE_ALREADY_EXISTS", 400),
    (errors.Unavailable("x"), "TEMPORARILY_UNAVAILABLE", 503),
    (errors.GyreError("x"), "INTERNAL_ERROR", 500),
])
def test_errors_map_to_mlflow_codes(error: errors.GyreError, code: str, status: int) -> None:
    assert ERRORS.code_of(error) == (code, status)


def test_artifact_paths_stay_under_the_root(tmp_path: Path) -> None:
    assert clean_relative_path("1/abc/artifacts/") == "1/abc/artifacts"
    assert proxied_artifact_path("mlflow-artifacts:/1/abc/artifacts") == "1/abc/artifacts"
    assert proxied_artifact_path("mlflow-artifacts://host:5000/1/abc/artifacts") == "1/abc/artifacts"
    assert proxied_artifact_path("s3://bucket/1") is None
    files = ProxiedArtifactFiles(tmp_path)
    for bad in ["../etc/passwd", "a/../../b", "/abs", "a\\b", "a//b"]:
        with pytest.raises(InvalidArgument):
            files.local_path(bad)
    (tmp_path / "link").symlink_to("/")
    with pytest.raises(InvalidArgument, match="outside the artifact root"):
        files.local_path("link/etc")


def test_plain_metric_points_read_what_the_checked_path_reads_or_leave_it_to_it() -> None:
    points = [{"key": "acc", "value": 0.5, "timestamp": 1_740_830_400_000, "step": 3},
              {"key": "loss", "value": 2, "timestamp": 1_740_830_400_001}]
    checked = [(p.string("key", required=True), p.number("value"), p.integer("step", default=0) or 0,
                mj.from_millis(p.integer("timestamp", required=True) or 0))
               for p in mj.Fields({"metrics": points}).objects("metrics")]
    plain = mj.plain_metric_points(points)
    assert plain == checked
    assert plain is not None and all(type(value) is float for _, value, _, _ in plain)
    # Anything else goes to the checked path, which accepts MLflow's other spellings or words the error.
    for odd in ({"key": "a", "value": "NaN", "timestamp": 1}, {"key": "a", "value": 1.0, "timestamp": "1"},
                {"key": "", "value": 1.0, "timestamp": 1}, {"key": "a", "value": True, "timestamp": 1},
                {"key": "a", "value": 1.0, "timestamp": 1, "step": None}, {"value": 1.0, "timestamp": 1}):
        assert mj.plain_metric_points([points[0], odd]) is None, odd
    assert mj.plain_metric_points(None) is None and mj.plain_metric_points([1]) is None


def test_times_beyond_what_a_datetime_holds_are_invalid_arguments() -> None:
    for millis in (2**63 - 1, -(2**63), 10**30, 253_402_300_800_000):  # the last: year 10000
        with pytest.raises(InvalidArgument, match=r"'start_time'.*years 1 to 9999"):
            mj.from_millis(millis, "start_time")
    # The inline log-batch path leaves such a point to the checked one (which words the error).
    assert mj.plain_metric_points([{"key": "m", "value": 1.0, "timestamp": 2**62}]) is None
    assert mj.plain_metric_points([{"key": "m", "value": 10**400, "timestamp": 1}]) is None


def test_odd_numbers_are_invalid_arguments_not_crashes() -> None:
    fields = mj.Fields({"status": "²", "view": "²", "value": 10**400, "deep": [[[[["x" * 10_000]]]]]})
    with pytest.raises(InvalidArgument, match="'status'"):
        fields.status()
    with pytest.raises(InvalidArgument, match="'view'"):
        fields.view_type("view")
    with pytest.raises(InvalidArgument, match="expected a number"):
        fields.number("value")
    with pytest.raises(InvalidArgument) as info:
        fields.string("deep")
    assert len(str(info.value)) < 300  # the value is shown shortened, not echoed whole


@pytest.mark.parametrize("value", ["a\x00b", "\ud800", {"k": ["x", "\udfff"]}, {"\x00": 1}])
def test_text_postgresql_cannot_hold_is_refused(value: object) -> None:
    with pytest.raises(InvalidArgument, match="NUL characters and unpaired surrogates"):
        check_storable_text({"field": value})


def test_storable_text_passes() -> None:
    check_storable_text({"a": ["é", "\U0001F600", 1, None, {"b": "c"}], "deep": [[[[]]]] * 3})
