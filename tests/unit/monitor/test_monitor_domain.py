"""Windows, alerting decisions, reference profiles and value canonicalisation (pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from gyre_common.profile import (
    FeatureKind,
    ProfileError,
    build_reference_profile,
    category_key,
    finite_floats,
    with_version,
)
from gyre_common.profile_wire import decode_profile, encode_profile
from gyre_monitor.domain.alerts import (
    DriftState,
    alert_id,
    next_state,
    should_alert,
    should_request_retraining,
    training_request_id,
)
from gyre_monitor.domain.windows import ClosedBy, WindowCursor, WindowPolicy, assign_windows

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def times(n: int, step_s: float = 1.0, start: datetime = T0) -> list[datetime]:
    return [start + timedelta(seconds=i * step_s) for i in range(n)]


def test_count_windows_close_at_size_and_carry_over() -> None:
    result = assign_windows(WindowCursor(), times(25), WindowPolicy(size=10))
    assert result.windows == [0] * 10 + [1] * 10 + [2] * 5
    assert [(c.window_seq, c.rows, c.closed_by) for c in result.closed] == [
        (0, 10, ClosedBy.COUNT), (1, 10, ClosedBy.COUNT)]
    assert result.cursor == WindowCursor(2, 5, T0 + timedelta(seconds=20))


def test_splitting_a_stream_into_batches_gives_the_same_windows() -> None:
    policy = WindowPolicy(size=7, max_age_s=5.0)
    stamps = times(40, step_s=0.4)
    whole = assign_windows(WindowCursor(), stamps, policy)
    cursor, windows, closed = WindowCursor(), [], []
    for chunk in (stamps[:3], stamps[3:17], stamps[17:18], stamps[18:]):
        part = assign_windows(cursor, chunk, policy)
        cursor, windows, closed = part.cursor, windows + part.windows, closed + part.closed
    assert (windows, closed, cursor) == (whole.windows, whole.closed, whole.cursor)


def test_time_windows_close_when_a_late_prediction_arrives() -> None:
    stamps = [*times(3), T0 + timedelta(seconds=100)]
    result = assign_windows(WindowCursor(), stamps, WindowPolicy(size=10, max_age_s=60))
    assert result.windows == [0, 0, 0, 1]
    assert [(c.window_seq, c.rows, c.closed_by) for c in result.closed] == [(0, 3, ClosedBy.TIME)]


def test_window_policy_is_validated() -> None:
    with pytest.raises(ValueError):
        WindowPolicy(size=0)


def test_alerts_open_a_drift_episode_then_repeat_only_after_the_cooldown() -> None:
    state = DriftState()
    assert not should_alert(state, False, T0, 3600)
    assert should_alert(state, True, T0, 3600)
    state = next_state(state, True, T0, alerted=True)
    assert not should_alert(state, True, T0 + timedelta(minutes=10), 3600)   # same episode
    assert should_alert(state, True, T0 + timedelta(hours=1), 3600)           # reminder
    state = next_state(state, False, T0 + timedelta(minutes=20), alerted=False)
    assert should_alert(state, True, T0 + timedelta(minutes=30), 3600)        # a new episode


def test_retraining_is_debounced_per_cooldown() -> None:
    assert should_request_retraining(None, T0, 3600)
    assert not should_request_retraining(T0, T0 + timedelta(seconds=3599), 3600)
    assert should_request_retraining(T0, T0 + timedelta(seconds=3600), 3600)


def test_ids_are_deterministic_per_window() -> None:
    assert alert_id("m", 1, 3) == alert_id("m", 1, 3)
    assert alert_id("m", 1, 3) != alert_id("m", 1, 4)
    assert training_request_id("m", 1, 3) == training_request_id("m", 1, 3)
    assert training_request_id("m", 1, 3) != alert_id("m", 1, 3)


def test_category_keys_are_canonical() -> None:
    assert [category_key(v) for v in (3, 3.0, np.int64(3), True, "x", None, float("nan"), 0.5)] == [
        "3", "3", "3", "true", "x", None, None, "0.5"]
    assert finite_floats([1, 2.5, None, "7", float("inf"), True]).tolist() == [1.0, 2.5, 1.0]


def test_profile_round_trips_and_samples_large_training_sets() -> None:
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=8000), "c": rng.choice(["a", "b"], 8000), "label": rng.integers(0, 2, 8000)}
    profile = build_reference_profile(data, model_name="m", model_version=2, max_values=5000, exclude=["label"])
    assert profile.feature_names() == ["x", "c"]
    x, c = profile.features
    assert (x.kind, x.values.size, x.rows) == (FeatureKind.NUMERICAL, 5000, 5000)
    assert (c.kind, c.rows) == (FeatureKind.CATEGORICAL, 8000)
    again = decode_profile(encode_profile(profile))
    assert again.feature_names() == ["x", "c"]
    assert np.array_equal(again.features[0].values, x.values)
    assert dict(again.features[1].counts) == dict(c.counts)
    # Same data and seed: the same bytes (the trainer's artifact is content-addressed).
    assert encode_profile(build_reference_profile(data, model_name="m", model_version=2, exclude=["label"])) \
        == encode_profile(profile)


@pytest.mark.parametrize(("data", "kwargs"), [
    ({"x": []}, {}),
    ({"x": [1.0, 2.0], "y": [1.0]}, {}),
    ({"t": [f"free text {i}" for i in range(10)]}, {}),
    ({"x": [1.0]}, {"model_version": -1}),
])
def test_invalid_profiles_are_refused(data: dict[str, list[object]], kwargs: dict[str, int]) -> None:
    with pytest.raises(ProfileError):
        build_reference_profile(data, **{"model_name": "m", "model_version": 1, **kwargs})  # type: ignore[arg-type]


def test_garbage_bytes_are_not_a_profile() -> None:
    with pytest.raises(ProfileError):
        decode_profile(b"\xff\xff\xff")


def test_unnumbered_profile_takes_the_registered_version() -> None:
    # The trainer writes the profile before the registry numbers the version: version 0.
    profile = build_reference_profile({"x": [1.0, 2.0]}, model_name="m", model_version=0)
    assert with_version(profile, "m", 3).model_version == 3
    numbered = with_version(profile, "m", 3)
    assert with_version(numbered, "m", 3) is numbered
    for name, version in (("other", 3), ("m", 4), ("m", 0)):
        with pytest.raises(ProfileError):
            with_version(numbered if version == 4 else profile, name, version)
