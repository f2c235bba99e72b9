"""Feedback on one prediction: the value object, its validation, and how labels are compared.

Rules (the contract in proto/gyre/feedback/v1/feedback_service.proto):

* ``prediction_id``: 1 to :data:`MAX_ID_CHARS` characters, no whitespace or control characters
  (serving's ids are the request id, or ``<request id>:<row>`` for a batch row);
* ``feedback_id``: same rules; generated (UUID4) when the client gives none;
* at most one rating: ``thumbs_up``, ``stars`` (integer 1 to 5), ``score`` (in [0, 1]) or
  ``corrected_label`` (a string, number or boolean); a comment-only feedback has no rating, but
  feedback with neither a rating nor a comment is refused;
* ``comment`` at most :data:`MAX_COMMENT_CHARS` characters, ``author`` and ``model_name`` at most
  :data:`MAX_NAME_CHARS`, ``model_version`` not negative;
* ``submitted_at`` an aware datetime (UTC); defaults to now.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from gyre_common.errors import InvalidArgument

MAX_ID_CHARS = 200
"""Longest prediction or feedback id (serving's request ids are at most 128 characters, plus ``:<row>``)."""
MAX_COMMENT_CHARS = 4096
"""Longest comment, in characters."""
MAX_NAME_CHARS = 256
"""Longest author or model name, in characters."""
MAX_LABEL_CHARS = 4096
"""Longest corrected label given as text (reference texts of generative models included)."""

_ID = re.compile(r"[^\s\x00-\x1f\x7f]+")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")

LabelValue = str | int | float | bool
"""A corrected label or a model output: one scalar, as in ``gyre.events.v1.FeatureValue``."""


class RatingKind(StrEnum):
    """Which kind of rating a feedback carries."""

    THUMBS = "thumbs"
    STARS = "stars"
    SCORE = "score"
    LABEL = "label"
    COMMENT = "comment"
    """No rating: a comment only."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of a feedback (``field`` uses the contract's field names)."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidFeedback(InvalidArgument, ValueError):
    """The feedback breaks the rules in the module docstring; ``errors`` lists every problem."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class Feedback:
    """Validated feedback on one prediction. Build it with :func:`validate_feedback`.

    Attributes:
        feedback_id: idempotency key.
        prediction_id: the prediction the feedback is about.
        model_name, model_version: what the UI said made the prediction ('' / 0 when it did not
            know); the inference event is authoritative for quality.
        thumbs_up, stars, score, corrected_label: at most one is set (see :attr:`kind`).
        comment, author: free text.
        submitted_at: when the feedback was given, aware UTC.
    """

    feedback_id: str
    prediction_id: str
    model_name: str
    model_version: int
    thumbs_up: bool | None
    stars: int | None
    score: float | None
    corrected_label: LabelValue | None
    comment: str
    author: str
    submitted_at: datetime

    @property
    def kind(self) -> RatingKind:
        """The rating this feedback carries."""
        if self.thumbs_up is not None:
            return RatingKind.THUMBS
        if self.stars is not None:
            return RatingKind.STARS
        if self.score is not None:
            return RatingKind.SCORE
        if self.corrected_label is not None:
            return RatingKind.LABEL
        return RatingKind.COMMENT

    @property
    def canonical_label(self) -> str | None:
        """The corrected label in the form compared with predictions (:func:`canonical_value`)."""
        return None if self.corrected_label is None else canonical_value(self.corrected_label)


def _check_id(name: str, value: str, errors: list[FieldError]) -> None:
    if not value:
        errors.append(FieldError(name, "must not be empty"))
    elif len(value) > MAX_ID_CHARS:
        errors.append(FieldError(name, f"has {len(value)} characters; at most {MAX_ID_CHARS}"))
    elif not _ID.fullmatch(value):
        errors.append(FieldError(name, "must not contain whitespace or control characters"))


def validate_feedback(
    *,
    prediction_id: str,
    feedback_id: str = "",
    model_name: str = "",
    model_version: int = 0,
    thumbs_up: bool | None = None,
    stars: int | None = None,
    score: float | None = None,
    corrected_label: LabelValue | None = None,
    comment: str = "",
    author: str = "",
    submitted_at: datetime | None = None,
    now: datetime | None = None,
) -> Feedback:
    """Check feedback against the rules in the module docstring and return it as a :class:`Feedback`.

    Args:
        feedback_id: '' generates a UUID4.
        submitted_at: None means ``now``.
        now: the current time, aware (defaults to the wall clock, UTC).

    Raises:
        InvalidFeedback: listing every broken rule at once.
    """
    errors: list[FieldError] = []
    _check_id("prediction_id", prediction_id, errors)
    if feedback_id:
        _check_id("feedback_id", feedback_id, errors)
    if len(model_name) > MAX_NAME_CHARS:
        errors.append(FieldError("model_name", f"has {len(model_name)} characters; at most {MAX_NAME_CHARS}"))
    if model_version < 0:
        errors.append(FieldError("model_version", f"must not be negative, got {model_version}"))
    if len(author) > MAX_NAME_CHARS:
        errors.append(FieldError("author", f"has {len(author)} characters; at most {MAX_NAME_CHARS}"))
    if len(comment) > MAX_COMMENT_CHARS:
        errors.append(FieldError("comment", f"has {len(comment)} characters; at most {MAX_COMMENT_CHARS}"))

    given = [name for name, value in (("thumbs_up", thumbs_up), ("stars", stars), ("score", score),
                                      ("corrected_label", corrected_label)) if value is not None]
    if len(given) > 1:
        errors.append(FieldError("rating", f"give exactly one of thumbs_up, stars, score, corrected_label; "
                                           f"got {', '.join(given)}"))
    if not given and not comment.strip():
        errors.append(FieldError("rating", "give one of thumbs_up, stars, score, corrected_label, or a comment"))
    if stars is not None and (isinstance(stars, bool) or not isinstance(stars, int) or not 1 <= stars <= 5):
        errors.append(FieldError("stars", f"must be an integer from 1 to 5, got {stars!r}"))
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)
                              or not math.isfinite(score) or not 0.0 <= score <= 1.0):
        errors.append(FieldError("score", f"must be a number in [0, 1], got {score!r}"))
    if corrected_label is not None:
        if isinstance(corrected_label, float) and not math.isfinite(corrected_label):
            errors.append(FieldError("corrected_label", "must be a finite number"))
        elif isinstance(corrected_label, str) and not corrected_label.strip():
            errors.append(FieldError("corrected_label", "must not be blank"))
        elif isinstance(corrected_label, str) and len(corrected_label) > MAX_LABEL_CHARS:
            errors.append(FieldError("corrected_label",
                                     f"has {len(corrected_label)} characters; at most {MAX_LABEL_CHARS}"))
    if submitted_at is not None and submitted_at.tzinfo is None:
        errors.append(FieldError("submitted_at", "must carry a time zone (UTC)"))
    if errors:
        raise InvalidFeedback(errors)
    clock = now or datetime.now(UTC)
    return Feedback(
        feedback_id=feedback_id or str(uuid.uuid4()),
        prediction_id=prediction_id,
        model_name=model_name,
        model_version=model_version,
        thumbs_up=thumbs_up,
        stars=stars,
        score=None if score is None else float(score),
        corrected_label=corrected_label,
        comment=comment,
        author=author,
        submitted_at=(submitted_at or clock).astimezone(UTC),
    )


def canonical_value(value: LabelValue) -> str | None:
    """The text a label or an output is compared by, so that equal values of different types match.

    Booleans become ``true``/``false``; integral numbers their integer text (``1``, ``1.0`` and
    ``"1"`` all give ``1``); other finite numbers Python's shortest float text; strings are
    stripped, and read as a number or a boolean when they spell one. NaN and infinities give None
    (they never match).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return repr(value)
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return canonical_value(float(text)) if not text.lstrip("+-").isdigit() else str(int(text))
    if text.lower() in ("true", "false"):
        return text.lower()
    return text
