"""Feedback validation, label canonicalisation and the proto/REST translations (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_feedback.convert import feedback_event, feedback_from_event, prediction_from_event
from gyre_feedback.domain.feedback import (
    MAX_COMMENT_CHARS,
    InvalidFeedback,
    RatingKind,
    canonical_value,
    validate_feedback,
)
from gyre_feedback.domain.prediction import predicted_value

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def fields(exc: pytest.ExceptionInfo[InvalidFeedback]) -> set[str]:
    return {e.field for e in exc.value.errors}


@pytest.mark.parametrize(("kwargs", "kind"), [
    ({"thumbs_up": False}, RatingKind.THUMBS),
    ({"stars": 1}, RatingKind.STARS),
    ({"stars": 5}, RatingKind.STARS),
    ({"score": 0.0}, RatingKind.SCORE),
    ({"score": 1}, RatingKind.SCORE),
    ({"corrected_label": "cat"}, RatingKind.LABEL),
    ({"corrected_label": 0}, RatingKind.LABEL),
    ({"corrected_label": False}, RatingKind.LABEL),
    ({"comment": "looks off"}, RatingKind.COMMENT),
])
def test_one_rating_or_a_comment_is_valid(kwargs: dict[str, object], kind: RatingKind) -> None:
    feedback = validate_feedback(prediction_id="req-1:3", now=NOW, **kwargs)  # type: ignore[arg-type]
    assert feedback.kind is kind
    assert feedback.submitted_at == NOW
    assert len(feedback.feedback_id) == 36  # generated UUID4


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"prediction_id": ""}, "prediction_id"),
    ({"prediction_id": "has space"}, "prediction_id"),
    ({"prediction_id": "x" * 201}, "prediction_id"),
    ({"prediction_id": "tab\there"}, "prediction_id"),
    ({"feedback_id": "bad id"}, "feedback_id"),
    ({"stars": 0}, "stars"),
    ({"stars": 6}, "stars"),
    ({"stars": True}, "stars"),
    ({"score": 1.01}, "score"),
    ({"score": -0.1}, "score"),
    ({"score": float("nan")}, "score"),
    ({"corrected_label": float("inf")}, "corrected_label"),
    ({"corrected_label": "   "}, "corrected_label"),
    ({"comment": "x" * (MAX_COMMENT_CHARS + 1), "stars": 3}, "comment"),
    ({"author": "a" * 257, "stars": 3}, "author"),
    ({"model_version": -1, "stars": 3}, "model_version"),
    ({"submitted_at": datetime(2025, 1, 1), "stars": 3}, "submitted_at"),
])
def test_invalid_fields_are_named(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"prediction_id": "p-1", "thumbs_up": True}
    if any(k in kwargs for k in ("stars", "score", "corrected_label")):
        del args["thumbs_up"]
    args.update(kwargs)
    with pytest.raises(InvalidFeedback) as exc:
        validate_feedback(**args)  # type: ignore[arg-type]
    assert field in fields(exc)


def test_two_ratings_or_nothing_is_refused_listing_every_problem() -> None:
    with pytest.raises(InvalidFeedback) as exc:
        validate_feedback(prediction_id="p", thumbs_up=True, stars=3)
    assert fields(exc) == {"rating"}
    assert "thumbs_up, stars" in str(exc.value)
    with pytest.raises(InvalidFeedback) as exc:
        validate_feedback(prediction_id="", comment="  ", stars=9)
    assert fields(exc) == {"prediction_id", "stars"}
    with pytest.raises(InvalidFeedback) as exc:
        validate_feedback(prediction_id="p")
    assert fields(exc) == {"rating"}


def test_submitted_at_is_normalised_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    feedback = validate_feedback(prediction_id="p", stars=4, submitted_at=datetime(2025, 1, 1, 13, tzinfo=cet))
    assert feedback.submitted_at == datetime(2025, 1, 1, 12, tzinfo=UTC)
    assert feedback.submitted_at.tzinfo is UTC


@pytest.mark.parametrize(("value", "text"), [
    (True, "true"), (False, "false"), ("True", "true"),
    (1, "1"), (1.0, "1"), ("1", "1"), (" 1.0 ", "1"), ("+1", "1"), ("1e0", "1"),
    (0.5, "0.5"), ("0.50", "0.5"), (-3, "-3"),
    ("cat", "cat"), (" cat ", "cat"), ("Cat", "Cat"),
    (float("nan"), None),
])
def test_canonical_values_match_across_types(value: str | int | float | bool, text: str | None) -> None:
    assert canonical_value(value) == text


def test_predicted_value_uses_the_label_output_or_the_only_output() -> None:
    assert predicted_value({"predict": 1, "proba_1": 0.8}, "predict") == "1"
    assert predicted_value({"y": "cat"}, "predict") == "cat"
    assert predicted_value({"proba_0": 0.2, "proba_1": 0.8}, "predict") is None
    assert predicted_value({"predict": None, "other": 1}, "predict") is None
    assert predicted_value({}, "predict") is None


def test_feedback_event_round_trip() -> None:
    event = events_pb2.FeedbackEvent(feedback_id="f-1", prediction_id="p-1", comment="wrong class", author="ui",
                                     corrected_label=common_pb2.FeatureValue(string_value="dog"))
    feedback = feedback_from_event(event, now=NOW)
    assert (feedback.feedback_id, feedback.corrected_label, feedback.submitted_at) == ("f-1", "dog", NOW)
    assert feedback.canonical_label == "dog"
    again = feedback_event(feedback, None)
    assert again.corrected_label.string_value == "dog"
    assert again.submitted_at.ToDatetime(tzinfo=UTC) == NOW
    assert again.WhichOneof("rating") == "corrected_label"


def test_an_empty_corrected_label_or_a_stars_zero_event_is_refused() -> None:
    with pytest.raises(InvalidFeedback) as exc:
        feedback_from_event(events_pb2.FeedbackEvent(prediction_id="p", corrected_label=common_pb2.FeatureValue()))
    assert "corrected_label" in fields(exc)
    with pytest.raises(InvalidFeedback) as exc:
        feedback_from_event(events_pb2.FeedbackEvent(prediction_id="p", stars=0))
    assert "stars" in fields(exc)


def test_prediction_from_inference_event() -> None:
    event = events_pb2.InferenceEvent(prediction_id="r:0", model_name="churn", model_version=3, alias="production",
                                      shadow=True)
    event.served_at.FromDatetime(NOW)
    event.outputs["predict"].int64_value = 1
    event.outputs["proba_1"].double_value = 0.9
    prediction = prediction_from_event(event, "predict", NOW + timedelta(seconds=5))
    assert (prediction.model_version, prediction.served_at) == (3, NOW)
    assert (prediction.shadow, prediction.predicted) == (True, "1")
    no_time = events_pb2.InferenceEvent(prediction_id="r", model_name="m", model_version=1)
    assert prediction_from_event(no_time, "predict", NOW).served_at == NOW
