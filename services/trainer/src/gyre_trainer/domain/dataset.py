"""The training set the trainer works on, its canonical order and its fingerprint."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import pandas as pd


class FeatureKind(StrEnum):
    """How the search pipeline treats a column (and how the monitor compares its drift)."""

    NUMERICAL = "numerical"
    CATEGORICAL = "categorical"


class DatasetError(ValueError):
    """The training set cannot be trained on (too few rows, a single class, ...); permanent."""


@dataclass(frozen=True)
class TrainingSet:
    """A labelled, point-in-time correct training set.

    Attributes:
        features: one column per feature, in the order the model will take them (the view's
            order). Numeric columns are float64/int64/bool; categorical ones hold ``str`` or None.
        label: the label of each row (same index as ``features``).
        entity_ids: the entity each row is about.
        event_times: UTC time of each labelled event (``datetime64[ns, UTC]``).
        source_fingerprint: the fingerprint the data source computed, when it gives one.
    """

    features: pd.DataFrame
    label: pd.Series
    entity_ids: pd.Series
    event_times: pd.Series
    source_fingerprint: str = ""
    kinds: dict[str, FeatureKind] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.features)
        if not (len(self.label) == len(self.entity_ids) == len(self.event_times) == n):
            raise ValueError("features, label, entity_ids and event_times must have the same length")
        if not isinstance(self.event_times.dtype, pd.DatetimeTZDtype):
            object.__setattr__(self, "event_times", pd.to_datetime(self.event_times, utc=True))
        if not self.kinds:
            object.__setattr__(self, "kinds", {name: infer_kind(self.features[name]) for name in self.features})

    @property
    def rows(self) -> int:
        """Number of rows."""
        return len(self.features)

    @property
    def feature_names(self) -> list[str]:
        """Feature names in model order."""
        return [str(name) for name in self.features.columns]

    def canonical(self) -> TrainingSet:
        """The same rows ordered by (entity_id, event_time), index reset.

        The holdout split and the fingerprint are taken in this order, so they depend on the data
        only, not on the order the source streamed it.
        """
        times = pd.to_datetime(self.event_times, utc=True)
        order = np.lexsort((times.to_numpy(dtype="datetime64[ns]").astype("int64"),
                            self.entity_ids.astype(str).to_numpy()))
        return self.take(order)

    def take(self, positions: np.ndarray) -> TrainingSet:
        """A new set of the rows at ``positions`` (0-based), index reset."""
        return TrainingSet(
            features=self.features.iloc[positions].reset_index(drop=True),
            label=self.label.iloc[positions].reset_index(drop=True),
            entity_ids=self.entity_ids.iloc[positions].reset_index(drop=True),
            event_times=self.event_times.iloc[positions].reset_index(drop=True),
            source_fingerprint=self.source_fingerprint,
            kinds=dict(self.kinds),
        )


def infer_kind(column: pd.Series) -> FeatureKind:
    """Numbers and booleans are numerical; anything else (strings) categorical."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return FeatureKind.NUMERICAL
    return FeatureKind.CATEGORICAL


def fingerprint(data: TrainingSet) -> str:
    """Lowercase hex SHA-256 of the training set in canonical form.

    Canonical form: rows ordered by (entity_id, event_time); a JSON header with the feature names
    sorted, each one's kind and the label name; then, per column in header order (entity_id,
    event_time, features, label), every value encoded without ambiguity: numbers as little-endian
    float64 (NaN and None as one NaN pattern), text as UTF-8 with a length prefix (-1 for None),
    times as int64 nanoseconds since the Unix epoch, UTC. Equal data gives equal fingerprints
    whatever the column or row order it arrived in.
    """
    canon = data.canonical()
    digest = hashlib.sha256()
    names = sorted(canon.feature_names)
    header = {
        "features": [[name, canon.kinds[name].value] for name in names],
        "label": str(canon.label.name or "label"),
        "rows": canon.rows,
    }
    digest.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    digest.update(_encode_text(canon.entity_ids))
    times = pd.to_datetime(canon.event_times, utc=True).to_numpy(dtype="datetime64[ns]").astype("<i8")
    digest.update(times.tobytes())
    for name in names:
        digest.update(_encode_column(canon.features[name], canon.kinds[name]))
    digest.update(_encode_column(canon.label, infer_kind(canon.label)))
    return digest.hexdigest()


_NAN = struct.pack("<d", float("nan"))


def _encode_column(column: pd.Series, kind: FeatureKind) -> bytes:
    if kind is FeatureKind.NUMERICAL:
        values = pd.to_numeric(column, errors="coerce").astype("float64").to_numpy()
        out = values.astype("<f8").tobytes()
        if np.isnan(values).any():
            # Many NaN bit patterns exist; map all of them to one so equal data hashes equal.
            chunks = [_NAN if np.isnan(v) else struct.pack("<d", v) for v in values]
            out = b"".join(chunks)
        return out
    return _encode_text(column)


def _encode_text(column: pd.Series) -> bytes:
    parts: list[bytes] = []
    for value in column.tolist():
        if value is None or (isinstance(value, float) and np.isnan(value)):
            parts.append(struct.pack("<q", -1))
        else:
            raw = str(value).encode("utf-8")
            parts.append(struct.pack("<q", len(raw)) + raw)
    return b"".join(parts)
