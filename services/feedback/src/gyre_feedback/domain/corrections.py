"""Corrected labels going back to the feature store (issue #11): which label event a correction makes.

A corrected label on a prediction becomes a feature event on ``features.events`` for the
prediction's entity at the prediction's event time, carrying ``{label: corrected value}`` in the
feature view the model version was trained on (its lineage, announced by the registry). The
features service keeps, per (view, entity, event_time) and feature, the value with the later
``created_time``; the correction's ``created_time`` is when feedback queued it, later than the
original label's, so the next training set learns the corrected label in place of the old one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gyre_feedback.domain.feedback import Feedback, LabelValue
from gyre_feedback.domain.prediction import Prediction


@dataclass(frozen=True)
class LabelCorrection:
    """A label event to send to the feature store.

    Attributes:
        feedback_id: the feedback it comes from (its ce_id derives from it).
        feature_view: the view the model version was trained on.
        entity_id: the prediction's entity.
        event_time: the prediction's event time (the time its features were as of), else when it
            was served; aware UTC.
        label: the label feature's name.
        value: the corrected value, as the feedback gave it.
        created_time: when the correction was queued (later than the original label: it wins).
    """

    feedback_id: str
    feature_view: str
    entity_id: str
    event_time: datetime
    label: str
    value: LabelValue
    created_time: datetime


def label_correction(feedback: Feedback, prediction: Prediction | None, feature_view: str, label: str,
                     now: datetime) -> LabelCorrection | None:
    """The label event of ``feedback``, or None when there is none to send.

    None unless the feedback is a corrected label, its prediction is known and names an entity,
    and the model version's training feature view and label are known (``""`` when not).
    """
    if feedback.corrected_label is None or prediction is None or not prediction.entity_id:
        return None
    if not feature_view or not label:
        return None
    return LabelCorrection(
        feedback_id=feedback.feedback_id,
        feature_view=feature_view,
        entity_id=prediction.entity_id,
        event_time=prediction.event_time or prediction.served_at,
        label=label,
        value=feedback.corrected_label,
        created_time=now,
    )
