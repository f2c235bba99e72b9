"""Training sets: what the trainer asks for, the columns it gets, and the rows in chunks.

A training row at ``t`` is the entity's state as of ``t`` (point-in-time correct: nothing from
after ``t`` leaks in); the store computes it, this module says what is asked and returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gyre_features.domain.errors import InvalidArgument
from gyre_features.domain.values import Value
from gyre_features.domain.views import FeatureSpec, FeatureView


@dataclass(frozen=True)
class EntityRow:
    """One row of an entity dataframe: an entity and the time its features are wanted at (UTC)."""

    entity_id: str
    timestamp: datetime


@dataclass(frozen=True)
class TrainingSetQuery:
    """What the trainer asks for.

    Attributes:
        feature_view: the view the features and the label come from.
        label: the label feature (a feature of the same view; see docs/services/features.md).
        features: features to return besides the label; empty = every other feature of the view.
        start, end: event-time window [start, end) in UTC; None = unbounded on that side. Without
            entity rows, the spine is every distinct (entity, event_time) of the view's events in
            the window; with entity rows, it filters their timestamps.
        entity_rows: optional entity dataframe; each row gets the features as of its timestamp.
        keep_unlabelled: keep rows whose label is absent (null, never set or outside TTL); by
            default they are dropped and counted.
    """

    feature_view: str
    label: str
    features: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    entity_rows: tuple[EntityRow, ...] = ()
    keep_unlabelled: bool = False

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise InvalidArgument(f"window start {self.start.isoformat()} must be before end {self.end.isoformat()}")


def training_columns(view: FeatureView, query: TrainingSetQuery) -> list[FeatureSpec]:
    """The feature columns of a training set, label last, in view order (or the order asked for).

    Raises:
        NotFound: the label or a requested feature is not in the view.
        InvalidArgument: a feature is asked for twice or is the label.
    """
    label = view.feature(query.label)
    if query.features:
        if len(set(query.features)) != len(query.features):
            raise InvalidArgument("a feature is requested twice")
        if query.label in query.features:
            raise InvalidArgument(f"the label {query.label!r} must not also be requested as a feature")
        chosen = [view.feature(name) for name in query.features]
    else:
        chosen = [spec for spec in view.features if spec.name != query.label]
    return [*chosen, label]


@dataclass(frozen=True)
class TrainingSetSchema:
    """The columns and window of a training set.

    Attributes:
        feature_view: the view it is built from.
        features: feature columns, in order.
        label: the label column.
        start, end: the window used, UTC (start None = open).
    """

    feature_view: str
    features: tuple[FeatureSpec, ...]
    label: FeatureSpec
    start: datetime | None
    end: datetime


@dataclass
class TrainingSetChunk:
    """Consecutive rows of a training set, column by column.

    Attributes:
        entity_ids, event_times: the row keys (event_times UTC: the time features are as of).
        columns: one list per feature column (schema order), one entry per row; None = missing.
        label: the label of each row; None = missing (only with keep_unlabelled).
    """

    entity_ids: list[str]
    event_times: list[datetime]
    columns: list[list[Value | None]]
    label: list[Value | None]

    def __len__(self) -> int:
        return len(self.entity_ids)
