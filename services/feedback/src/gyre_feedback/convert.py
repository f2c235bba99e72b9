"""Protobuf <-> feedback domain: the events consumed and published, the gRPC messages (no I/O).

Used by the transports (api_grpc, api_http, consumers) and to build the events the handlers queue
in the outbox.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from gyre_common.retraining import retraining_request as alert_retraining_request
from gyre_common.timeconv import timestamp
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_contracts.gyre.feedback.v1 import feedback_service_pb2 as pb
from gyre_feedback.domain.corrections import LabelCorrection
from gyre_feedback.domain.feedback import Feedback, LabelValue, validate_feedback
from gyre_feedback.domain.prediction import Prediction, predicted_value
from gyre_feedback.domain.quality import DropPolicy, QualityDrop, QualityReport

SERVICE = "feedback"
"""``requested_by`` of retraining requests and ``ce_source`` of published events."""


def scalar(value: common_pb2.FeatureValue) -> LabelValue | None:
    """The Python value of a FeatureValue; None for a missing value."""
    kind = value.WhichOneof("kind")
    if kind is None:
        return None
    result: LabelValue = getattr(value, kind)
    return result


def feature_value(value: LabelValue) -> common_pb2.FeatureValue:
    """A FeatureValue holding ``value`` (bool before int: a bool is an int in Python)."""
    if isinstance(value, bool):
        return common_pb2.FeatureValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.FeatureValue(int64_value=value)
    if isinstance(value, float):
        return common_pb2.FeatureValue(double_value=value)
    return common_pb2.FeatureValue(string_value=value)


def feedback_from_event(event: events_pb2.FeedbackEvent, now: datetime | None = None) -> Feedback:
    """Validate a FeedbackEvent (from gRPC or Kafka) into :class:`Feedback`.

    An unset ``submitted_at`` means now; a ``corrected_label`` holding no value is refused.

    Raises:
        InvalidFeedback: see :func:`gyre_feedback.domain.feedback.validate_feedback`.
    """
    rating = event.WhichOneof("rating")
    label: LabelValue | None = None
    if rating == "corrected_label":
        label = scalar(event.corrected_label)
        if label is None:
            label = ""  # an empty FeatureValue: refused as blank by validation
    return validate_feedback(
        prediction_id=event.prediction_id,
        feedback_id=event.feedback_id,
        model_name=event.model_name,
        model_version=event.model_version,
        thumbs_up=event.thumbs_up if rating == "thumbs_up" else None,
        stars=event.stars if rating == "stars" else None,
        score=event.score if rating == "score" else None,
        corrected_label=label,
        comment=event.comment,
        author=event.author,
        submitted_at=event.submitted_at.ToDatetime(tzinfo=UTC) if event.HasField("submitted_at") else None,
        now=now,
    )


def feedback_events(payloads: Iterable[bytes]) -> list[events_pb2.FeedbackEvent]:
    """The stored FeedbackEvents of ``payloads`` (serialized protobuf), in order."""
    return [events_pb2.FeedbackEvent.FromString(payload) for payload in payloads]


def feedback_event(feedback: Feedback, prediction: Prediction | None) -> events_pb2.FeedbackEvent:
    """The FeedbackEvent of stored feedback; model and version come from the prediction when known."""
    event = events_pb2.FeedbackEvent(
        feedback_id=feedback.feedback_id,
        prediction_id=feedback.prediction_id,
        model_name=prediction.model_name if prediction is not None else feedback.model_name,
        model_version=prediction.model_version if prediction is not None else feedback.model_version,
        comment=feedback.comment,
        author=feedback.author,
        submitted_at=timestamp(feedback.submitted_at),
    )
    if feedback.thumbs_up is not None:
        event.thumbs_up = feedback.thumbs_up
    elif feedback.stars is not None:
        event.stars = feedback.stars
    elif feedback.score is not None:
        event.score = feedback.score
    elif feedback.corrected_label is not None:
        event.corrected_label.CopyFrom(feature_value(feedback.corrected_label))
    return event


def prediction_from_event(event: events_pb2.InferenceEvent, label_output: str,
                          received_at: datetime) -> Prediction:
    """The stored form of an InferenceEvent; ``received_at`` stands in for a missing ``served_at``."""
    outputs = {name: scalar(value) for name, value in event.outputs.items()}
    served_at = event.served_at.ToDatetime(tzinfo=UTC) if event.HasField("served_at") else received_at
    return Prediction(
        prediction_id=event.prediction_id,
        model_name=event.model_name,
        model_version=int(event.model_version),
        alias=event.alias,
        served_at=served_at,
        shadow=event.shadow,
        predicted=predicted_value(outputs, label_output),
        entity_id=event.entity_id,
        event_time=event.event_time.ToDatetime(tzinfo=UTC) if event.HasField("event_time") else None,
    )


def label_event(correction: LabelCorrection) -> events_pb2.FeatureEvent:
    """The FeatureEvent (for ``features.events``) that carries a corrected label to the feature store."""
    return events_pb2.FeatureEvent(
        feature_view=correction.feature_view,
        entity_id=correction.entity_id,
        event_time=timestamp(correction.event_time),
        values={correction.label: feature_value(correction.value)},
        created_time=timestamp(correction.created_time),
        source=f"gyre-{SERVICE}:{correction.feedback_id}",
    )


def quality_alert(*, alert_id: str, model_name: str, model_version: int, drop: QualityDrop,
                  policy: DropPolicy, detected_at: datetime) -> events_pb2.MonitorAlert:
    """The QUALITY_DROP MonitorAlert of a detected drop (``window_end`` exclusive)."""
    return events_pb2.MonitorAlert(
        alert_id=alert_id,
        kind=events_pb2.ALERT_KIND_QUALITY_DROP,
        model_name=model_name,
        model_version=model_version,
        window_start=timestamp(drop.window_start),
        window_end=timestamp(drop.window_end + timedelta(microseconds=1)),
        quality=[events_pb2.QualityResult(metric="accuracy", value=drop.accuracy, baseline=0.0,
                                          threshold=policy.threshold, samples=drop.samples)],
        detected_at=timestamp(detected_at),
    )


def retraining_request(*, request_id: str, alert: events_pb2.MonitorAlert, drop: QualityDrop, policy: DropPolicy,
                       feature_view: str, label: str, promote_to_alias: str,
                       requested_at: datetime) -> events_pb2.TrainingRequest:
    """The TrainingRequest (reason FEEDBACK) that follows a quality-drop alert, with its evidence."""
    return alert_retraining_request(
        request_id=request_id, alert=alert, reason=events_pb2.TRAINING_REASON_FEEDBACK,
        evidence={
            "metric": "accuracy",
            "accuracy": f"{drop.accuracy:.6g}",
            "threshold": f"{policy.threshold:.6g}",
            "labelled_feedback": str(drop.samples),
            "newest_feedback_id": drop.newest_feedback_id,
        },
        feature_view=feature_view, label=label, promote_to_alias=promote_to_alias, requested_by=SERVICE,
        requested_at=requested_at,
    )


def quality_response(report: QualityReport) -> pb.GetQualityResponse:
    """The GetQualityResponse of a report; metrics without data stay unset."""
    response = pb.GetQualityResponse(model_name=report.model_name, window_start=timestamp(report.window_start),
                                     window_end=timestamp(report.window_end))
    for v in report.versions:
        entry = response.versions.add(model_version=v.model_version, predictions=v.predictions,
                                      feedback_count=v.feedback_count, labelled_count=v.labelled_count)
        if v.accuracy is not None:
            entry.accuracy = v.accuracy
        if v.mean_stars is not None:
            entry.mean_stars = v.mean_stars
        if v.thumbs_up_rate is not None:
            entry.thumbs_up_rate = v.thumbs_up_rate
        if v.mean_score is not None:
            entry.mean_score = v.mean_score
    return response
