"""The reference profile the monitor measures drift against, taken from the training inputs.

The wire format is the monitor's: a binary ``gyre.monitor.v1.ReferenceProfile`` in the artifact
store, referenced by ``Lineage.reference_profile`` (see proto/gyre/events/v1/common.proto). The
rules below are the monitor's (``gyre_monitor.domain.profile``, Evidently 0.7's column typing), kept
in step by tests/unit/test_trainer_profile.py, which compares both builders when the monitor is
installed. A service never imports another, so this copy lives here until that builder moves to
``libs/common``:

* float columns are numerical; integer columns categorical with at most 10 distinct values,
  numerical otherwise; boolean columns categorical; string columns categorical unless more than
  half their (non-missing) values are distinct (free text, left out); anything else left out;
* numerical features keep a sample of finite values: every row when there are at most
  ``max_values`` rows, else the same seeded sample of ``max_values`` rows for every feature;
* categorical features keep the count of every category key over all rows (``true``/``false``
  for booleans, integers and integral floats as decimal integers, other floats as ``repr``);
* each feature records how many rows had it missing; ``rows`` is the number of training rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gyre_trainer.domain.dataset import FeatureKind

INTEGER_CARDINALITY_LIMIT = 10
"""Integer columns with at most this many distinct values are categorical (Evidently's limit)."""


class ProfileError(ValueError):
    """No profile can be taken (no row, or no column the monitor can compare)."""


@dataclass(frozen=True)
class FeatureReference:
    """Reference distribution of one feature.

    Attributes:
        feature: feature (model input) name.
        kind: numerical or categorical.
        values: finite reference sample (numerical).
        category_counts: rows per category key (categorical).
        missing_count: rows where the feature was missing.
    """

    feature: str
    kind: FeatureKind
    values: tuple[float, ...] = ()
    category_counts: dict[str, int] = field(default_factory=dict)
    missing_count: int = 0


@dataclass(frozen=True)
class ReferenceProfile:
    """Reference of the monitorable model inputs.

    Attributes:
        features: one entry per monitored feature, in model input order.
        rows: training rows the profile was taken from.
        dataset_fingerprint: Lineage.dataset_fingerprint of the training set.
    """

    features: tuple[FeatureReference, ...]
    rows: int
    dataset_fingerprint: str


def drift_kind(column: pd.Series) -> FeatureKind | None:
    """How the monitor compares ``column`` (Evidently's inference), or None when it does not."""
    array = column.to_numpy()
    kind = array.dtype.kind
    if kind == "f":
        return FeatureKind.NUMERICAL
    if kind in "iu":
        return (FeatureKind.CATEGORICAL if np.unique(array).size <= INTEGER_CARDINALITY_LIMIT
                else FeatureKind.NUMERICAL)
    if kind == "b":
        return FeatureKind.CATEGORICAL
    if kind in "US":
        return _string_kind([str(v) for v in array])
    if kind != "O":
        return None
    present = [v for v in array.tolist() if not _missing(v)]
    if not present:
        return None
    if all(isinstance(v, bool | np.bool_) for v in present):
        return FeatureKind.CATEGORICAL
    if all(isinstance(v, str) for v in present):
        return _string_kind(present)
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in present):
        return drift_kind(pd.Series(np.asarray(present, dtype=np.int64)))
    if all(isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) for v in present):
        return FeatureKind.NUMERICAL
    return None


def _string_kind(present: list[str]) -> FeatureKind | None:
    return None if len(set(present)) > 0.5 * len(present) else FeatureKind.CATEGORICAL


def _missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating) and math.isnan(float(value)):
        return True
    return type(value).__name__ in ("NAType", "NaTType")


def category_key(value: object) -> str | None:
    """Canonical category key of one value; None when missing."""
    if _missing(value):
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isfinite(number) and number.is_integer():
            return str(int(number))
        return repr(number)
    return str(value)


def build_reference_profile(features: pd.DataFrame, *, dataset_fingerprint: str, max_values: int,
                            seed: int) -> ReferenceProfile:
    """Profile the model inputs ``features`` (the rows the model was fitted on, label left out).

    Raises:
        ProfileError: no rows, or no column the monitor can compare.
    """
    rows = len(features)
    if rows == 0:
        raise ProfileError("the training data has no rows")
    sample = None
    if rows > max_values:
        sample = np.sort(np.random.default_rng(seed).choice(rows, size=max_values, replace=False))
    references: list[FeatureReference] = []
    for name in features.columns:
        column = features[name]
        kind = drift_kind(column)
        if kind is None:
            continue
        array = column.to_numpy()
        missing = sum(1 for v in array.tolist() if _missing(v)) if array.dtype.kind in "fO" else 0
        if kind is FeatureKind.NUMERICAL:
            chosen = array if sample is None else array[sample]
            values = pd.to_numeric(pd.Series(chosen), errors="coerce").to_numpy(dtype="float64")
            values = values[np.isfinite(values)]
            if values.size == 0:
                continue
            references.append(FeatureReference(str(name), kind, tuple(values.tolist()), missing_count=missing))
        else:
            keys = [k for k in map(category_key, array.tolist()) if k is not None]
            if not keys:
                continue
            unique, counts = np.unique(np.asarray(keys, dtype=np.str_), return_counts=True)
            references.append(FeatureReference(
                str(name), kind, category_counts={str(k): int(c) for k, c in zip(unique, counts, strict=True)},
                missing_count=missing))
    if not references:
        raise ProfileError("no input column can be monitored (all text, dates or empty)")
    return ReferenceProfile(tuple(references), rows, dataset_fingerprint)
