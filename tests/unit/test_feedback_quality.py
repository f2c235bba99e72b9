"""Quality math and quality-drop detection of the feedback service (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gyre_feedback.domain.quality import (
    DropPolicy,
    LabelOutcome,
    QualityCounts,
    alert_id,
    cooled,
    detect_drop,
    feedback_event_id,
    training_request_id,
    version_quality,
)

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def test_version_quality_averages() -> None:
    quality = version_quality(QualityCounts(model_version=2, predictions=10, feedback=9, labelled=4, correct=3,
                                            stars_sum=7, stars_count=2, thumbs_up=1, thumbs_count=2,
                                            score_sum=0.9, score_count=1))
    assert (quality.predictions, quality.feedback_count, quality.labelled_count) == (10, 9, 4)
    assert quality.accuracy == pytest.approx(0.75)
    assert quality.mean_stars == pytest.approx(3.5)
    assert quality.thumbs_up_rate == pytest.approx(0.5)
    assert quality.mean_score == pytest.approx(0.9)


def test_metrics_without_data_are_none_not_zero() -> None:
    quality = version_quality(QualityCounts(model_version=1, predictions=5))
    assert (quality.accuracy, quality.mean_stars, quality.thumbs_up_rate, quality.mean_score) == (None,) * 4
    assert quality.feedback_count == 0


def outcomes(pattern: str) -> list[LabelOutcome]:
    """Newest first: '1' correct, '0' wrong; served one minute apart, newest last served."""
    n = len(pattern)
    return [LabelOutcome(f"f{n - i}", c == "1", T0 + timedelta(minutes=n - i)) for i, c in enumerate(pattern)]


def test_drop_needs_a_full_window_under_the_threshold() -> None:
    policy = DropPolicy(window=4, threshold=0.75)
    assert detect_drop(outcomes("000"), policy) is None  # too few labels yet
    assert detect_drop(outcomes("1110"), policy) is None  # 0.75 is not under 0.75
    drop = detect_drop(outcomes("10100000"), policy)  # only the newest 4 count: 2/4
    assert drop is not None
    assert (drop.accuracy, drop.samples, drop.newest_feedback_id) == (0.5, 4, "f8")
    assert (drop.window_start, drop.window_end) == (T0 + timedelta(minutes=5), T0 + timedelta(minutes=8))


def test_cooldown() -> None:
    assert cooled(None, T0, 3600)
    assert not cooled(T0, T0 + timedelta(seconds=3599), 3600)
    assert cooled(T0, T0 + timedelta(seconds=3600), 3600)
    assert cooled(T0, T0, 0)


def test_ids_are_deterministic_and_distinct() -> None:
    assert alert_id("m", 1, "f9") == alert_id("m", 1, "f9")
    assert training_request_id("m", 1, "f9") == training_request_id("m", 1, "f9")
    ids = {alert_id("m", 1, "f9"), training_request_id("m", 1, "f9"), training_request_id("m", 2, "f9"),
           training_request_id("n", 1, "f9"), training_request_id("m", 1, "f8"), feedback_event_id("f9")}
    assert len(ids) == 6
