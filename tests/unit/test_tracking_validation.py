"""Tracking input rules: keys, ids, limits, and the write-once rule of params."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gyre_tracking.domain.errors import InvalidArgument, ParamConflict
from gyre_tracking.domain.model import Metric, RunArtifact
from gyre_tracking.domain.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VALUE_LENGTH,
    check_param_conflicts,
    normalise_params,
    normalise_tags,
    validate_artifact,
    validate_experiment_id,
    validate_experiment_name,
    validate_key,
    validate_metrics,
    validate_run_id,
)

T0 = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize("key", ["a", "Ab-5_", "a/b/c", "a.b.c", ".a", "b.", "a b/c d", "val:loss", "x" * 250])
def test_good_keys(key: str) -> None:
    assert validate_key("metric", key) == key


@pytest.mark.parametrize(("key", "fragment"), [
    ("", "must not be empty"),
    (".", "resolve to the path"),
    ("/", "resolve to the path"),
    ("..", "resolve to the path"),
    ("a//b", "resolve to the path"),
    ("a/./b", "resolve to the path"),
    ("/a", "resolve to the path"),
    ("a/", "resolve to the path"),
    ("../up", "resolve to the path"),
    ("a\\b", "may only contain"),
    ("rmse;drop", "may only contain"),
    ("x" * 251, "longer than 250"),
])
def test_bad_keys_say_why(key: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match="param key") as info:
        validate_key("param", key)
    assert fragment in str(info.value)


def test_run_and_experiment_ids() -> None:
    assert validate_run_id("0123456789abcdef0123456789abcdef")
    assert validate_run_id("client-chosen_id-1")
    for bad in ["", "-leading", "has space", "a" * 257, "semi;colon"]:
        with pytest.raises(InvalidArgument, match="run_id"):
            validate_run_id(bad)
    assert validate_experiment_id("0") == "0"
    for bad in ["", "abc", "-1", "1.5"]:
        with pytest.raises(InvalidArgument, match="experiment_id"):
            validate_experiment_id(bad)
    with pytest.raises(InvalidArgument, match="must not be empty"):
        validate_experiment_name("   ")
    with pytest.raises(InvalidArgument, match="longer than 256"):
        validate_experiment_name("e" * 257)


def test_metrics_limits_and_special_values() -> None:
    nan = float("nan")
    ok = validate_metrics([Metric("loss", nan, 0, T0), Metric("loss", float("inf"), 1, T0)])
    assert len(ok) == 2
    with pytest.raises(InvalidArgument, match="at most 1000"):
        validate_metrics([Metric("m", 1.0, i, T0) for i in range(MAX_METRICS_PER_BATCH + 1)])
    with pytest.raises(InvalidArgument, match="int64"):
        validate_metrics([Metric("m", 1.0, 2**63, T0)])
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        validate_metrics([Metric("m", 1.0, 0, datetime(2025, 1, 1))])


def test_params_fold_repeats_and_refuse_contradictions() -> None:
    assert normalise_params([("a", "1"), ("b", "x"), ("a", "1")]) == {"a": "1", "b": "x"}
    with pytest.raises(InvalidArgument, match=r"param 'a' given twice with different values \('1' and '2'\)"):
        normalise_params([("a", "1"), ("a", "2")])
    with pytest.raises(InvalidArgument, match="at most 6000"):
        normalise_params([("long", "v" * (MAX_PARAM_VALUE_LENGTH + 1))])
    with pytest.raises(InvalidArgument, match="at most 100"):
        normalise_params([(f"p{i}", "v") for i in range(101)])
    assert normalise_params([("empty", "")]) == {"empty": ""}


def test_tags_last_write_wins() -> None:
    assert normalise_tags([("t", "1"), ("t", "2")]) == {"t": "2"}
    with pytest.raises(InvalidArgument, match="at most 5000"):
        normalise_tags([("t", "v" * 5001)], max_value_length=5000)


def test_param_conflicts_name_key_values_and_run() -> None:
    check_param_conflicts("r1", {"a": "1", "b": "2"}, {})  # nothing stored yet
    check_param_conflicts("r1", {"a": "1"}, {"a": "1"})  # same value again: fine
    with pytest.raises(ParamConflict) as info:
        check_param_conflicts("r1", {"a": "1", "b": "2"}, {"b": "3"})
    message = str(info.value)
    assert "'b' is '3', attempted '2'" in message and "'r1'" in message and "write-once" in message
    assert info.value.reason == "param_conflict"


def test_artifact_references() -> None:
    digest = "ab" * 32
    good = RunArtifact("model", "file:///tmp/sha256/ab/" + digest, digest, 10, "skops")
    assert validate_artifact(good) is good
    for bad, fragment in [
        (RunArtifact("", "file:///x", digest, 1), "path must not be empty"),
        (RunArtifact("../model", "file:///x", digest, 1), "resolve to the path"),
        (RunArtifact("model", "", digest, 1), "uri must not be empty"),
        (RunArtifact("model", "file:///x", "AB" * 32, 1), "64 lowercase hex"),
        (RunArtifact("model", "file:///x", digest, -1), "negative"),
    ]:
        with pytest.raises(InvalidArgument, match=fragment):
            validate_artifact(bad)
