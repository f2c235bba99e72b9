"""Which label event a corrected label makes (gyre_feedback.domain.corrections) and its protobuf form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gyre_feedback.convert import label_event
from gyre_feedback.domain.corrections import label_correction
from gyre_feedback.domain.feedback import validate_feedback
from gyre_feedback.domain.prediction import Prediction

NOW = datetime(2025, 3, 2, tzinfo=UTC)
SERVED = NOW - timedelta(days=1)
EVENT_TIME = SERVED - timedelta(minutes=5)


def prediction(entity_id: str = "c1", event_time: datetime | None = EVENT_TIME) -> Prediction:
    return Prediction("p1", "churn", 1, "production", SERVED, False, "1", entity_id, event_time)


def test_a_correction_becomes_a_label_event_at_the_predictions_entity_and_time() -> None:
    feedback = validate_feedback(prediction_id="p1", feedback_id="f1", corrected_label=0, now=NOW)
    correction = label_correction(feedback, prediction(), "churn_stats", "churned", NOW)
    assert correction is not None
    event = label_event(correction)
    assert (event.feature_view, event.entity_id) == ("churn_stats", "c1")
    assert event.event_time.ToDatetime(tzinfo=UTC) == EVENT_TIME
    assert event.created_time.ToDatetime(tzinfo=UTC) == NOW  # later than the original label: it wins
    assert event.values["churned"].int64_value == 0 and list(event.values) == ["churned"]
    # Without an event time the prediction's serving time stands in.
    late = label_correction(feedback, prediction(event_time=None), "churn_stats", "churned", NOW)
    assert late is not None and late.event_time == SERVED


def test_nothing_is_sent_without_a_label_an_entity_or_the_lineage() -> None:
    label = validate_feedback(prediction_id="p1", corrected_label="yes", now=NOW)
    stars = validate_feedback(prediction_id="p1", stars=2, now=NOW)
    assert label_correction(stars, prediction(), "v", "l", NOW) is None
    assert label_correction(label, None, "v", "l", NOW) is None
    assert label_correction(label, prediction(entity_id=""), "v", "l", NOW) is None
    assert label_correction(label, prediction(), "", "l", NOW) is None
    assert label_correction(label, prediction(), "v", "", NOW) is None
    correction = label_correction(label, prediction(), "v", "l", NOW)
    assert correction is not None and label_event(correction).values["l"].string_value == "yes"
