"""Dataset profiles (EDA): summary statistics of a view's events over a window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gyre_features.domain.values import ValueType


@dataclass(frozen=True)
class CategoryCount:
    """One of the most frequent values of a categorical (string/bool) feature."""

    value: str
    count: int


@dataclass(frozen=True)
class FeatureProfile:
    """Summary statistics of one feature over the events of a window.

    Attributes:
        name, type: the feature.
        count: events in the window that carry a non-null value.
        missing: events in the window without a value for it (not named, or null).
        measure: what mean/std/min/max describe: ``value`` (FLOAT, INT), ``length`` (TEXT: the
            length in characters) or ``norm`` (FLOAT_VECTOR: the L2 norm); ``""`` for categorical
            features, which have none.
        mean, std, min, max: statistics of ``measure`` (std is the sample standard deviation, None
            under 2 values).
        distinct: categorical features only: number of distinct values.
        top: categorical features only: most frequent values, most frequent first.
    """

    name: str
    type: ValueType
    count: int
    missing: int
    measure: str = ""
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    distinct: int | None = None
    top: tuple[CategoryCount, ...] = ()


@dataclass(frozen=True)
class DatasetProfile:
    """A profile of a view's events over [start, end) (UTC; None = unbounded).

    Attributes:
        rows: events in the window; entities: distinct entities among them.
    """

    feature_view: str
    start: datetime | None
    end: datetime | None
    rows: int
    entities: int
    features: tuple[FeatureProfile, ...]
