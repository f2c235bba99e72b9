"""Reference profiles: what a model version's served inputs are compared with (shared by trainer and monitor).

The trainer builds a profile from a version's training inputs and writes it, as a binary
``gyre.monitor.v1.ReferenceProfile``, to the artifact store; ``Lineage.reference_profile`` points
at it; the registry copies the lineage into VERSION_CREATED; the monitor reads it from there. One
builder, here, so both sides agree on every rule. Depends on numpy only; the protobuf form (what
the artifact store keeps) is :mod:`gyre_common.profile_wire`, so a service's domain can use profiles
without importing the contracts.

A profile holds, per monitored feature, exactly what Evidently's default tests need:

* numerical features keep a sample of raw values (K-S and Wasserstein need the sample, not a
  histogram): every value when the training set has at most ``max_values`` rows, otherwise a seeded
  random sample of ``max_values`` rows. Keep ``max_values`` above 1000, so the sample picks the same
  test as the full training set would (Evidently switches tests at 1000 reference rows);
* categorical features keep the count of every category over the whole training set (chi-squared,
  Z and Jensen-Shannon work on counts), keyed by :func:`category_key`.

A feature's kind follows Evidently 0.7's column-type inference (``infer_column_type``), applied to the
training column once, so the kind is fixed per version instead of re-guessed per window:

* float columns are numerical;
* integer columns are categorical with at most 10 distinct values, numerical otherwise;
* boolean columns are categorical;
* string columns are categorical, unless more than half of their values are distinct, which
  Evidently calls text: text columns are left out of the profile (Evidently's text drift trains a
  classifier, which does not belong on a streaming path);
* anything else (dates, mixed objects, empty columns) is left out too.

``categorical=`` / ``numerical=`` override the inference for named columns.

Values: served inputs arrive as JSON-like scalars, the reference as whatever the training set held.
Both sides go through the same two conversions (:func:`finite_floats`, :func:`category_key`), so a
category seen as ``3`` in training and ``3.0`` at serving time is the same category: booleans are
``"true"``/``"false"``, integral numbers their decimal digits, other floats their shortest
round-trip repr, strings themselves; missing and non-finite values are dropped.

Version numbers: a producer writes the profile *before* registering, so it cannot know the number
the registry will assign; it writes ``model_version = 0`` ("the version whose lineage points at
this profile") and the monitor takes the number from the VERSION_CREATED event.

Usage (a producer)::

    profile = build_reference_profile(X_train, model_name="churn", model_version=0,
                                      dataset_fingerprint=fingerprint)
    ref = artifacts.put(encode_profile(profile))          # gyre_common.artifacts
    lineage.reference_profile.CopyFrom(ArtifactRef(uri=ref.uri, sha256=ref.sha256,
                                                   size_bytes=ref.size, format=PROFILE_FORMAT))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from gyre_common.errors import InvalidArgument

__all__ = [
    "DEFAULT_MAX_VALUES",
    "INTEGER_CARDINALITY_LIMIT",
    "MAX_SAMPLE_VALUES",
    "PROFILE_FORMAT",
    "FeatureKind",
    "FeatureReference",
    "FloatArray",
    "KeyArray",
    "ProfileError",
    "ReferenceProfile",
    "build_reference_profile",
    "category_key",
    "category_keys",
    "finite_floats",
    "infer_feature_kind",
    "validate_profile",
    "with_version",
]

# -- values ----------------------------------------------------------------------------------

FloatArray = npt.NDArray[np.float64]
KeyArray = npt.NDArray[np.str_]


def category_key(value: object) -> str | None:
    """Canonical category key of one value, or None when the value is missing (None/NaN)."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return None
        if math.isfinite(number) and number.is_integer():
            return str(int(number))
        return repr(number)
    return str(value)


def category_keys(values: Iterable[object]) -> KeyArray:
    """Canonical keys of ``values``, missing ones dropped."""
    keys = [key for key in map(category_key, values) if key is not None]
    return np.asarray(keys, dtype=np.str_) if keys else np.empty(0, dtype=np.str_)


def _as_float(value: object) -> float:
    if value is None or isinstance(value, str):
        # Strings are not numbers here: a numerical feature sent as text counts as missing rather
        # than being parsed, so a serving bug shows up as missing values, not as silent coercion.
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def finite_floats(values: Iterable[object] | npt.ArrayLike) -> FloatArray:
    """``values`` as float64 with missing and non-finite entries dropped."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        array = values.astype(np.float64, copy=False)
    else:
        array = np.fromiter((_as_float(v) for v in values), dtype=np.float64)  # type: ignore[union-attr]
    return array[np.isfinite(array)]


# -- the profile -------------------------------------------------------------------------------

INTEGER_CARDINALITY_LIMIT = 10
"""Evidently's limit: integer columns with at most this many distinct values are categorical."""

MAX_SAMPLE_VALUES = 100_000
"""Most values one numerical feature's sample may hold (a profile must stay small)."""

DEFAULT_MAX_VALUES = 5000
"""Default size of the numerical reference sample."""


class ProfileError(InvalidArgument, ValueError):
    """A reference profile (or the data to build one from) is invalid; the message says why."""


class FeatureKind(StrEnum):
    """How a feature's values are compared."""

    NUMERICAL = "numerical"
    CATEGORICAL = "categorical"


@dataclass(frozen=True)
class FeatureReference:
    """Reference distribution of one feature.

    Attributes:
        name: feature (model input) name.
        kind: numerical or categorical.
        values: the numerical sample, finite float64 (empty for categorical features).
        counts: reference count per category key (empty for numerical features).
        missing: reference rows in which the feature was missing.
    """

    name: str
    kind: FeatureKind
    values: FloatArray = field(default_factory=lambda: np.empty(0, dtype=np.float64))
    counts: Mapping[str, int] = field(default_factory=dict)
    missing: int = 0

    @property
    def rows(self) -> int:
        """Non-missing reference rows the tests use (decides K-S/chi-squared vs Wasserstein/JS)."""
        return int(self.values.size) if self.kind is FeatureKind.NUMERICAL else int(sum(self.counts.values()))


@dataclass(frozen=True)
class ReferenceProfile:
    """The reference of one model version.

    Attributes:
        model_name: registered model.
        model_version: version; 0 means "not numbered yet" (a producer writes the profile before
            the registry assigns the number; see :func:`with_version`).
        features: one entry per monitored feature, in training-column order.
        rows: rows of the training set the profile was taken from.
        dataset_fingerprint: Lineage.dataset_fingerprint of that training set ("" if unknown).
        created_at: when the monitor stored it, UTC (None before it is stored).
    """

    model_name: str
    model_version: int
    features: tuple[FeatureReference, ...]
    rows: int
    dataset_fingerprint: str = ""
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        validate_profile(self)

    def feature_names(self) -> list[str]:
        """Names of the monitored features, in profile order."""
        return [feature.name for feature in self.features]


def with_version(profile: ReferenceProfile, model_name: str, model_version: int) -> ReferenceProfile:
    """The profile as the one of ``model_name`` version ``model_version`` (the number the registry gave).

    A profile written before registration carries version 0 and is adopted by the version whose
    lineage points at it; one that names a version must name this one.

    Raises:
        ProfileError: ``model_version`` not positive, or the profile names another model or version.
    """
    if model_version <= 0:
        raise ProfileError(f"model_version must be positive, got {model_version}")
    if profile.model_name != model_name:
        raise ProfileError(f"the profile belongs to model {profile.model_name!r}, not {model_name!r}")
    if profile.model_version not in (0, model_version):
        raise ProfileError(f"the profile belongs to version {profile.model_version}, not {model_version}")
    return profile if profile.model_version == model_version else replace(profile, model_version=model_version)


def validate_profile(profile: ReferenceProfile) -> None:
    """Check a profile's invariants.

    Raises:
        ProfileError: empty model name, a negative version, a duplicate or empty feature name, a
            numerical feature without values, a categorical one without counts (or with negative
            counts), or a sample over :data:`MAX_SAMPLE_VALUES` values.
    """
    if not profile.model_name:
        raise ProfileError("model_name must not be empty")
    if profile.model_version < 0:
        raise ProfileError(f"model_version must not be negative, got {profile.model_version}")
    seen: set[str] = set()
    for feature in profile.features:
        if not feature.name:
            raise ProfileError("a feature has an empty name")
        if feature.name in seen:
            raise ProfileError(f"feature {feature.name!r} appears twice")
        seen.add(feature.name)
        if feature.kind is FeatureKind.NUMERICAL:
            if feature.values.size == 0:
                raise ProfileError(f"numerical feature {feature.name!r} has no reference values")
            if feature.values.size > MAX_SAMPLE_VALUES:
                raise ProfileError(
                    f"numerical feature {feature.name!r} has {feature.values.size} values; "
                    f"at most {MAX_SAMPLE_VALUES} are allowed"
                )
            if not np.all(np.isfinite(feature.values)):
                raise ProfileError(f"numerical feature {feature.name!r} has non-finite values")
        else:
            if not feature.counts or sum(feature.counts.values()) <= 0:
                raise ProfileError(f"categorical feature {feature.name!r} has no category counts")
            if any(count < 0 for count in feature.counts.values()):
                raise ProfileError(f"categorical feature {feature.name!r} has a negative count")
        if feature.missing < 0:
            raise ProfileError(f"feature {feature.name!r} has a negative missing count")


# -- building a profile from a training set --------------------------------------------------------


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating) and math.isnan(float(value)):
        return True
    # pandas.NA / pandas.NaT without importing pandas.
    return type(value).__name__ in ("NAType", "NaTType")


def infer_feature_kind(column: np.ndarray) -> FeatureKind | None:
    """Evidently 0.7's column-type inference for one training column (see the module docstring).

    Returns None for columns Gyre does not monitor (text, dates, mixed or empty columns).
    """
    kind = column.dtype.kind
    if kind == "f":
        return FeatureKind.NUMERICAL
    if kind in "iu":
        distinct = np.unique(column).size
        return FeatureKind.CATEGORICAL if distinct <= INTEGER_CARDINALITY_LIMIT else FeatureKind.NUMERICAL
    if kind == "b":
        return FeatureKind.CATEGORICAL
    if kind in "US":
        return _string_kind([str(v) for v in column])
    if kind != "O":
        return None
    present = [v for v in column.tolist() if not _is_missing(v)]
    if not present:
        return None
    if all(isinstance(v, bool | np.bool_) for v in present):
        return FeatureKind.CATEGORICAL
    if all(isinstance(v, str) for v in present):
        return _string_kind(present)
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in present):
        return infer_feature_kind(np.asarray(present, dtype=np.int64))
    if all(isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) for v in present):
        return FeatureKind.NUMERICAL
    return None


def _string_kind(present: list[str]) -> FeatureKind | None:
    # Evidently: more distinct values than half the (non-missing) count means free text.
    return None if len(set(present)) > 0.5 * len(present) else FeatureKind.CATEGORICAL


def _columns(data: Mapping[str, Any] | Any) -> Iterable[tuple[str, Any]]:
    items = getattr(data, "items", None)
    if items is None:
        raise ProfileError("data must be a mapping of column name to values (a dict or a pandas DataFrame)")
    return list(items())


def _to_array(values: Any) -> np.ndarray:
    # pandas extension arrays (nullable ints, categoricals) become object arrays holding pd.NA.
    array = values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)
    if array.ndim != 1:
        raise ProfileError(f"columns must be one-dimensional, got shape {array.shape}")
    return array


def build_reference_profile(
    data: Mapping[str, Any] | Any,
    *,
    model_name: str,
    model_version: int,
    max_values: int = DEFAULT_MAX_VALUES,
    seed: int = 0,
    categorical: Iterable[str] = (),
    numerical: Iterable[str] = (),
    exclude: Iterable[str] = (),
    dataset_fingerprint: str = "",
) -> ReferenceProfile:
    """Build the reference profile of a model version from its training inputs.

    Args:
        data: the model's input columns, by feature name: a dict of 1-D arrays/lists or a pandas
            DataFrame. Leave the label out (or name it in ``exclude``).
        model_name, model_version: the version the profile belongs to.
        max_values: size of the numerical sample (rows kept; a seeded sample when there are more).
        seed: seed of that sample, for reproducible profiles.
        categorical, numerical: column names whose kind is forced instead of inferred.
        exclude: column names left out.
        dataset_fingerprint: Lineage.dataset_fingerprint of the training set.

    Returns:
        The profile; text, date and unsupported columns are left out (see the module docstring).

    Raises:
        ProfileError: columns of different lengths, no row, no monitorable column, a forced
            numerical column that holds no number, or an invalid result (see :func:`validate_profile`).
    """
    if max_values < 1 or max_values > MAX_SAMPLE_VALUES:
        raise ProfileError(f"max_values must be in [1, {MAX_SAMPLE_VALUES}], got {max_values}")
    forced_cat, forced_num, skip = set(categorical), set(numerical), set(exclude)
    if forced_cat & forced_num:
        raise ProfileError(f"columns both categorical and numerical: {sorted(forced_cat & forced_num)}")
    columns = [(str(name), _to_array(values)) for name, values in _columns(data) if str(name) not in skip]
    lengths = {array.size for _, array in columns}
    if len(lengths) > 1:
        raise ProfileError(f"columns have different lengths: {sorted(lengths)}")
    rows = lengths.pop() if lengths else 0
    if rows == 0:
        raise ProfileError("the training data has no rows")
    sample = None
    if rows > max_values:
        sample = np.sort(np.random.default_rng(seed).choice(rows, size=max_values, replace=False))
    features: list[FeatureReference] = []
    for name, array in columns:
        if name in forced_cat:
            kind: FeatureKind | None = FeatureKind.CATEGORICAL
        elif name in forced_num:
            kind = FeatureKind.NUMERICAL
        else:
            kind = infer_feature_kind(array)
        if kind is None:
            continue
        missing = sum(1 for v in array.tolist() if _is_missing(v)) if array.dtype.kind in "fO" else 0
        if kind is FeatureKind.NUMERICAL:
            values = finite_floats(array if sample is None else array[sample])
            if values.size == 0:
                raise ProfileError(f"numerical column {name!r} holds no finite number")
            features.append(FeatureReference(name, kind, values=values, missing=missing))
        else:
            keys, counts = np.unique(
                np.asarray([k for k in map(category_key, array.tolist()) if k is not None], dtype=np.str_),
                return_counts=True,
            )
            if keys.size == 0:
                continue  # nothing but missing values: nothing to compare with
            features.append(FeatureReference(
                name, kind, counts={str(k): int(c) for k, c in zip(keys, counts, strict=True)}, missing=missing,
            ))
    if not features:
        raise ProfileError("no column can be monitored (all text, dates or excluded)")
    return ReferenceProfile(model_name, model_version, tuple(features), rows, dataset_fingerprint)


PROFILE_FORMAT = "gyre.monitor.v1.ReferenceProfile"
"""``ArtifactRef.format`` of a stored profile: binary protobuf of that message (:mod:`gyre_common.profile_wire`)."""
