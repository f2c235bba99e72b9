"""Quality of a model version from its joined feedback, and when a drop asks for retraining.

* :func:`version_quality` turns per-version sums (computed by the store in SQL) into the reported
  metrics; a metric without data is None, never 0.
* :func:`detect_drop` decides whether the last ``window`` labelled feedbacks of a version show a
  quality drop (accuracy under ``threshold``); it waits until ``window`` labels exist.
* :func:`cooled` debounces: one alert and retraining request per model per cooldown.
* Alert and request ids are UUID5 digests of (model, version, newest feedback id of the window):
  a retried evaluation of the same labels gives the same ids, so the trainer (idempotent on
  ``request_id``) and other consumers deduplicate them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:gyre:feedback")


@dataclass(frozen=True)
class QualityCounts:
    """Sums over the joined predictions and feedback of one version in one window.

    Attributes:
        model_version: the version.
        predictions: non-shadow predictions served in the window.
        feedback: feedback items on them (comments included).
        labelled: feedback items with a corrected label.
        correct: labelled items whose prediction equals the label.
        stars_sum, stars_count: sum and number of star ratings.
        thumbs_up, thumbs_count: thumbs up and all thumbs.
        score_sum, score_count: sum and number of scores.
    """

    model_version: int
    predictions: int = 0
    feedback: int = 0
    labelled: int = 0
    correct: int = 0
    stars_sum: float = 0.0
    stars_count: int = 0
    thumbs_up: int = 0
    thumbs_count: int = 0
    score_sum: float = 0.0
    score_count: int = 0


@dataclass(frozen=True)
class VersionQuality:
    """Reported quality of one version (fields as in ``gyre.feedback.v1.VersionQuality``).

    Attributes:
        accuracy: share of labelled predictions equal to their label, in [0, 1].
        mean_stars: in [1, 5].
        thumbs_up_rate: share of thumbs up among thumbs, in [0, 1].
        mean_score: in [0, 1].
    """

    model_version: int
    predictions: int
    feedback_count: int
    labelled_count: int
    accuracy: float | None
    mean_stars: float | None
    thumbs_up_rate: float | None
    mean_score: float | None


@dataclass(frozen=True)
class QualityReport:
    """Quality of a model's versions over a window of prediction times ([start, end), UTC)."""

    model_name: str
    window_start: datetime
    window_end: datetime
    versions: list[VersionQuality]


def _ratio(num: float, den: int) -> float | None:
    return num / den if den > 0 else None


def version_quality(counts: QualityCounts) -> VersionQuality:
    """The metrics of one version from its sums; None where there is nothing to average."""
    return VersionQuality(
        model_version=counts.model_version,
        predictions=counts.predictions,
        feedback_count=counts.feedback,
        labelled_count=counts.labelled,
        accuracy=_ratio(counts.correct, counts.labelled),
        mean_stars=_ratio(counts.stars_sum, counts.stars_count),
        thumbs_up_rate=_ratio(counts.thumbs_up, counts.thumbs_count),
        mean_score=_ratio(counts.score_sum, counts.score_count),
    )


@dataclass(frozen=True)
class LabelOutcome:
    """One labelled feedback joined with its prediction.

    Attributes:
        feedback_id: the feedback.
        correct: whether the prediction equals the corrected label.
        served_at: when the prediction was served, aware UTC.
    """

    feedback_id: str
    correct: bool
    served_at: datetime


@dataclass(frozen=True)
class DropPolicy:
    """When labelled feedback counts as a quality drop.

    Attributes:
        window: number of most recent labels checked (the check needs this many).
        threshold: accuracy under which the window is a drop, in [0, 1].
        cooldown_s: seconds between two drop alerts of one model.
    """

    window: int = 50
    threshold: float = 0.7
    cooldown_s: float = 3600.0


@dataclass(frozen=True)
class QualityDrop:
    """A detected drop: the evidence that goes into the alert and the retraining request.

    Attributes:
        accuracy: accuracy over the window, in [0, 1].
        samples: labels in the window.
        newest_feedback_id: id of the newest label of the window (names the window in the ids).
        window_start / window_end: served_at range of the window's predictions, UTC (end exclusive).
    """

    accuracy: float
    samples: int
    newest_feedback_id: str
    window_start: datetime
    window_end: datetime


def detect_drop(newest_first: Sequence[LabelOutcome], policy: DropPolicy) -> QualityDrop | None:
    """The drop shown by the most recent labels (newest first), or None.

    Only the first ``policy.window`` outcomes are used; fewer than that is never a drop.
    """
    window = list(newest_first[: policy.window])
    if not window or len(window) < policy.window:
        return None
    accuracy = sum(1 for outcome in window if outcome.correct) / len(window)
    if accuracy >= policy.threshold:
        return None
    served = [outcome.served_at for outcome in window]
    return QualityDrop(accuracy, len(window), window[0].feedback_id, min(served), max(served))


def cooled(last: datetime | None, now: datetime, cooldown_s: float) -> bool:
    """Whether an alert at ``now`` is allowed after the model's last one at ``last`` (None: never)."""
    return last is None or (now - last).total_seconds() >= cooldown_s


def _window_key(model_name: str, model_version: int, newest_feedback_id: str) -> str:
    return f"{model_name}/v{model_version}/{newest_feedback_id}"


def alert_id(model_name: str, model_version: int, newest_feedback_id: str) -> str:
    """Deterministic id of the QUALITY_DROP alert of a window of labels."""
    return str(uuid.uuid5(_NAMESPACE, "alert:" + _window_key(model_name, model_version, newest_feedback_id)))


def training_request_id(model_name: str, model_version: int, newest_feedback_id: str) -> str:
    """Deterministic id of the retraining request of a window of labels (the trainer's idempotency key)."""
    return str(uuid.uuid5(_NAMESPACE, "retrain:" + _window_key(model_name, model_version, newest_feedback_id)))


def correction_event_id(feedback_id: str) -> str:
    """Deterministic CloudEvents id of the label event a corrected label sends to the feature store."""
    return str(uuid.uuid5(_NAMESPACE, "correction:" + feedback_id))


def feedback_event_id(feedback_id: str) -> str:
    """Deterministic CloudEvents id of the FeedbackEvent of one feedback (re-publishes deduplicate)."""
    return str(uuid.uuid5(_NAMESPACE, "feedback:" + feedback_id))
