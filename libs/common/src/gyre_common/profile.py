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
  Evidently calls text: inferred text columns are left out of the profile unless named in
  ``text=`` (a text profile embeds its texts, which needs ``gyre-ml``: a choice, never a guess);
* anything else (dates, mixed objects, empty columns) is left out too.

``categorical=`` / ``numerical=`` override the inference for named columns; ``text=`` names text
columns (see "Text features" below).

Text features (:func:`text_feature_profile`) keep what text drift needs, bounded in size:

* a seeded sample of at most ``embedding_sample`` (default 1,000) sentence embeddings of the
  non-empty reference texts, by the named encoder (``gyre_ml.encoders``, all-MiniLM-L6-v2 by
  default: 384 float32 dimensions, L2-normalised), stored as float16 (little-endian, row-major: 768 KB
  for 1,000 rows; float16 keeps about 3 significant digits, far below what a domain classifier
  notices). The monitor embeds served texts with the same encoder and tests them against this sample;
* descriptors, each an ordinary numerical/categorical :class:`FeatureReference`, so the per-feature
  tests above apply to them unchanged: ``length`` (characters per text), ``oov_share`` (share of a
  non-empty text's word tokens outside the stored vocabulary) and ``empty`` (category ``"true"`` when
  a text has no non-whitespace character, ``"false"`` otherwise);
* the vocabulary: the ``vocabulary_size`` most frequent word tokens (:func:`text_tokens`: lowercased
  Unicode ``\\w+`` runs) of one seeded half of the reference texts. The reference ``oov_share``
  values are measured on the *other* half: measured on the texts the vocabulary came from, they would
  all be 0 and any unseen word in served traffic would look like drift.

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
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from gyre_common.errors import InvalidArgument

__all__ = [
    "DEFAULT_EMBEDDING_SAMPLE",
    "DEFAULT_ENCODER",
    "DEFAULT_MAX_VALUES",
    "DEFAULT_VOCABULARY_SIZE",
    "INTEGER_CARDINALITY_LIMIT",
    "MAX_EMBEDDING_DIMENSIONS",
    "MAX_EMBEDDING_ROWS",
    "MAX_SAMPLE_VALUES",
    "MAX_VOCABULARY_SIZE",
    "PROFILE_FORMAT",
    "Embed",
    "FeatureKind",
    "FeatureReference",
    "FloatArray",
    "KeyArray",
    "ProfileError",
    "ReferenceProfile",
    "TextDescriptor",
    "TextReference",
    "build_reference_profile",
    "category_key",
    "category_keys",
    "finite_floats",
    "infer_feature_kind",
    "is_empty_text",
    "oov_share",
    "text_feature_profile",
    "text_tokens",
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


DEFAULT_ENCODER = "all-MiniLM-L6-v2"
"""Sentence encoder of text features unless named (``gyre_ml.encoders.DEFAULT_ENCODER``)."""

DEFAULT_EMBEDDING_SAMPLE = 1000
"""Default size of a text feature's reference sample of embeddings (Evidently's embedding drift
switches from a bootstrapped to a fixed 0.55 ROC AUC threshold at 1,000 reference rows)."""

MAX_EMBEDDING_ROWS = 5000
"""Most reference embeddings one text feature may hold (5,000 x 384 float16 is 3.7 MB)."""

MAX_EMBEDDING_DIMENSIONS = 4096
"""Widest embedding a text feature may hold."""

DEFAULT_VOCABULARY_SIZE = 20_000
"""Default number of most frequent reference words kept as a text feature's vocabulary."""

MAX_VOCABULARY_SIZE = 100_000
"""Largest vocabulary a text feature may keep."""


class ProfileError(InvalidArgument, ValueError):
    """A reference profile (or the data to build one from) is invalid; the message says why."""


class FeatureKind(StrEnum):
    """How a feature's values are compared."""

    NUMERICAL = "numerical"
    CATEGORICAL = "categorical"
    TEXT = "text"


@dataclass(frozen=True)
class FeatureReference:
    """Reference distribution of one feature.

    Attributes:
        name: feature (model input) name.
        kind: numerical, categorical or text.
        values: the numerical sample, finite float64 (empty for other kinds).
        counts: reference count per category key (empty for other kinds).
        missing: reference rows in which the feature was missing.
        text: embeddings, vocabulary and descriptors of a text feature (None for other kinds).
    """

    name: str
    kind: FeatureKind
    values: FloatArray = field(default_factory=lambda: np.empty(0, dtype=np.float64))
    counts: Mapping[str, int] = field(default_factory=dict)
    missing: int = 0
    text: TextReference | None = None

    @property
    def rows(self) -> int:
        """Non-missing reference rows the tests use (decides K-S/chi-squared vs Wasserstein/JS); for a
        text feature, its non-missing texts."""
        if self.kind is FeatureKind.NUMERICAL:
            return int(self.values.size)
        if self.kind is FeatureKind.TEXT:
            length = self.text.descriptor(TextDescriptor.LENGTH) if self.text is not None else None
            return length.rows if length is not None else 0
        return int(sum(self.counts.values()))


class TextDescriptor(StrEnum):
    """Simple descriptors of a text feature, each tested like a numerical or categorical feature."""

    LENGTH = "length"
    """Characters per text (Unicode code points), numerical."""
    OOV_SHARE = "oov_share"
    """Share of a non-empty text's word tokens outside the reference vocabulary, in [0, 1], numerical."""
    EMPTY = "empty"
    """Whether a text has no non-whitespace character: categories ``"true"`` / ``"false"``."""


@dataclass(frozen=True)
class TextReference:
    """What a text feature is compared with (see "Text features" in the module docstring).

    Attributes:
        encoder: name of the sentence encoder the embeddings come from (``gyre_ml.encoders``).
        embeddings: reference sample of embeddings, float32 of shape (rows, dimensions), values as
            stored (float16-rounded); shape (0, 0) when there is none (no non-empty reference text,
            or a profile built with ``embedding_sample=0``): the monitor then tests descriptors only.
        vocabulary: word tokens of the reference vocabulary, most frequent first.
        descriptors: one :class:`FeatureReference` per available descriptor, named by
            :class:`TextDescriptor` values (a descriptor without reference values is left out).
    """

    encoder: str
    embeddings: npt.NDArray[np.float32]
    vocabulary: tuple[str, ...]
    descriptors: tuple[FeatureReference, ...]

    def descriptor(self, name: TextDescriptor | str) -> FeatureReference | None:
        """The reference of descriptor ``name``, or None when the profile has none."""
        return next((d for d in self.descriptors if d.name == name), None)


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
        _validate_feature(feature)


def _validate_feature(feature: FeatureReference) -> None:
    if feature.kind is FeatureKind.TEXT:
        _validate_text(feature)
    else:
        if feature.text is not None:
            raise ProfileError(f"{feature.kind.value} feature {feature.name!r} carries a text reference")
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


def _validate_text(feature: FeatureReference) -> None:
    text = feature.text
    if text is None:
        raise ProfileError(f"text feature {feature.name!r} has no text reference")
    if not text.encoder:
        raise ProfileError(f"text feature {feature.name!r} names no encoder")
    embeddings = text.embeddings
    if embeddings.ndim != 2:
        raise ProfileError(f"text feature {feature.name!r}: embeddings must be 2-D, got shape {embeddings.shape}")
    if embeddings.shape[0] > MAX_EMBEDDING_ROWS:
        raise ProfileError(f"text feature {feature.name!r} has {embeddings.shape[0]} embeddings; "
                           f"at most {MAX_EMBEDDING_ROWS} are allowed")
    if embeddings.shape[0] and not 1 <= embeddings.shape[1] <= MAX_EMBEDDING_DIMENSIONS:
        raise ProfileError(f"text feature {feature.name!r}: embeddings need 1 to {MAX_EMBEDDING_DIMENSIONS} "
                           f"dimensions, got {embeddings.shape[1]}")
    if not np.all(np.isfinite(embeddings)):
        raise ProfileError(f"text feature {feature.name!r} has non-finite embeddings")
    if len(text.vocabulary) > MAX_VOCABULARY_SIZE:
        raise ProfileError(f"text feature {feature.name!r} has a vocabulary of {len(text.vocabulary)} words; "
                           f"at most {MAX_VOCABULARY_SIZE} are allowed")
    if not text.descriptors:
        raise ProfileError(f"text feature {feature.name!r} has no descriptor")
    kinds = {TextDescriptor.LENGTH: FeatureKind.NUMERICAL, TextDescriptor.OOV_SHARE: FeatureKind.NUMERICAL,
             TextDescriptor.EMPTY: FeatureKind.CATEGORICAL}
    seen: set[str] = set()
    for descriptor in text.descriptors:
        if descriptor.name not in kinds:
            raise ProfileError(f"text feature {feature.name!r}: unknown descriptor {descriptor.name!r}; "
                               f"known: {', '.join(kinds)}")
        if descriptor.name in seen:
            raise ProfileError(f"text feature {feature.name!r}: descriptor {descriptor.name!r} appears twice")
        seen.add(descriptor.name)
        if descriptor.kind is not kinds[TextDescriptor(descriptor.name)]:
            raise ProfileError(f"text feature {feature.name!r}: descriptor {descriptor.name!r} must be "
                               f"{kinds[TextDescriptor(descriptor.name)].value}")
        try:
            _validate_feature(descriptor)
        except ProfileError as exc:
            raise ProfileError(f"text feature {feature.name!r}, descriptor: {exc}") from None


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
    text: Iterable[str] = (),
    encoder: str = DEFAULT_ENCODER,
    embed: Embed | None = None,
    embedding_sample: int = DEFAULT_EMBEDDING_SAMPLE,
    vocabulary_size: int = DEFAULT_VOCABULARY_SIZE,
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
        text: columns profiled as text features (:func:`text_feature_profile`, with ``encoder``,
            ``embed``, ``embedding_sample``, ``vocabulary_size``, ``max_values`` and ``seed``).
        encoder, embed, embedding_sample, vocabulary_size: see :func:`text_feature_profile`.

    Returns:
        The profile; date, unsupported and text columns not named in ``text`` are left out (see
        the module docstring).

    Raises:
        ProfileError: columns of different lengths, no row, no monitorable column, a forced
            numerical column that holds no number, a ``text`` column without text, or an invalid
            result (see :func:`validate_profile`).
        ImportError: a ``text`` column, no ``embed`` and ``gyre-ml`` not installed.
    """
    if max_values < 1 or max_values > MAX_SAMPLE_VALUES:
        raise ProfileError(f"max_values must be in [1, {MAX_SAMPLE_VALUES}], got {max_values}")
    forced_cat, forced_num, forced_text, skip = set(categorical), set(numerical), set(text), set(exclude)
    for first, second, label in ((forced_cat, forced_num, "categorical and numerical"),
                                 (forced_cat, forced_text, "categorical and text"),
                                 (forced_num, forced_text, "numerical and text")):
        if first & second:
            raise ProfileError(f"columns both {label}: {sorted(first & second)}")
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
        if name in forced_text:
            features.append(text_feature_profile(
                name, array.tolist(), encoder=encoder, embed=embed, embedding_sample=embedding_sample,
                vocabulary_size=vocabulary_size, max_values=max_values, seed=seed,
            ))
            continue
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
        raise ProfileError("no column can be monitored (all dates, unnamed text or excluded)")
    return ReferenceProfile(model_name, model_version, tuple(features), rows, dataset_fingerprint)


# -- text features ------------------------------------------------------------------------------

Embed = Callable[[Sequence[str]], npt.NDArray[Any]]
"""Sentence embeddings of texts: one row per text, float, same width for every call."""

_WORD = re.compile(r"\w+")


def text_tokens(text: str) -> list[str]:
    """Word tokens of a text for the vocabulary and ``oov_share``: lowercased runs of Unicode word
    characters (``\\w+``), so punctuation never counts as a word and scripts without spaces count a
    run as one word."""
    return _WORD.findall(text.lower())


def is_empty_text(text: str) -> bool:
    """Whether a text has no non-whitespace character (the ``empty`` descriptor)."""
    return not text.strip()


def oov_share(text: str, vocabulary: frozenset[str] | set[str]) -> float | None:
    """Share of the text's word tokens that are not in ``vocabulary``, in [0, 1]; None when the text
    has no word token (it has no share to compare)."""
    tokens = text_tokens(text)
    if not tokens:
        return None
    return sum(1 for token in tokens if token not in vocabulary) / len(tokens)


def _default_embed(encoder: str) -> Embed:
    try:
        from gyre_ml.encoders import shared_encoder  # torch: only where text features are profiled
    except ImportError as exc:
        raise ImportError(f"embedding text features needs gyre-ml (torch) installed: {exc}") from exc
    return shared_encoder(encoder).embed


def _numerical(name: str, values: list[float], max_values: int, rng: np.random.Generator) -> FeatureReference | None:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return None
    if array.size > max_values:
        array = array[np.sort(rng.choice(array.size, size=max_values, replace=False))]
    return FeatureReference(name, FeatureKind.NUMERICAL, values=array)


def text_feature_profile(
    name: str,
    texts: Iterable[object],
    *,
    encoder: str = DEFAULT_ENCODER,
    embed: Embed | None = None,
    embedding_sample: int = DEFAULT_EMBEDDING_SAMPLE,
    vocabulary_size: int = DEFAULT_VOCABULARY_SIZE,
    max_values: int = DEFAULT_MAX_VALUES,
    seed: int = 0,
) -> FeatureReference:
    """The reference of one text feature: embeddings sample, vocabulary and descriptors.

    Blocking: embedding runs the encoder (about 65 texts/s per CPU core for all-MiniLM-L6-v2 here),
    so ``embedding_sample`` bounds the time as well as the size. Deterministic for a seed.

    Args:
        name: feature (model input) name.
        texts: the training column; None / NaN count as missing, other non-strings as their ``str``.
        encoder: sentence encoder the monitor must embed served texts with (recorded in the profile).
        embed: embeds texts; default ``gyre_ml.encoders.shared_encoder(encoder).embed`` (imported
            only when called: needs ``gyre-ml``). Pass your own to reuse embeddings computed anyway.
        embedding_sample: most non-empty texts embedded (a seeded sample when there are more);
            0 keeps no embeddings (the monitor then tests descriptors only).
        vocabulary_size: most frequent words kept as the vocabulary.
        max_values: size of each numerical descriptor's sample (as for numerical features).
        seed: seed of every sample and of the vocabulary/held-out split.

    Returns:
        A :class:`FeatureReference` of kind TEXT.

    Raises:
        ProfileError: bad sizes, no non-missing text, or embeddings of the wrong shape.
        ImportError: ``embed`` not given and ``gyre-ml`` not installed.
    """
    if not 0 <= embedding_sample <= MAX_EMBEDDING_ROWS:
        raise ProfileError(f"embedding_sample must be in [0, {MAX_EMBEDDING_ROWS}], got {embedding_sample}")
    if not 0 <= vocabulary_size <= MAX_VOCABULARY_SIZE:
        raise ProfileError(f"vocabulary_size must be in [0, {MAX_VOCABULARY_SIZE}], got {vocabulary_size}")
    if max_values < 1 or max_values > MAX_SAMPLE_VALUES:
        raise ProfileError(f"max_values must be in [1, {MAX_SAMPLE_VALUES}], got {max_values}")
    present: list[str] = []
    missing = 0
    for value in texts:
        if _is_missing(value):
            missing += 1
        else:
            present.append(value if isinstance(value, str) else str(value))
    if not present:
        raise ProfileError(f"text column {name!r} holds no text")
    rng = np.random.default_rng(seed)
    # Vocabulary from one half, reference oov_share from the other (see the module docstring).
    order = rng.permutation(len(present))
    half = (len(present) + 1) // 2
    counter: Counter[str] = Counter()
    for index in order[:half]:
        counter.update(text_tokens(present[index]))
    vocabulary = tuple(word for word, _ in counter.most_common(vocabulary_size))
    known = frozenset(vocabulary)
    shares = [share for index in order[half:] if (share := oov_share(present[index], known)) is not None]
    empty = sum(1 for text in present if is_empty_text(text))
    descriptors = [d for d in (
        _numerical(TextDescriptor.LENGTH.value, [float(len(text)) for text in present], max_values, rng),
        _numerical(TextDescriptor.OOV_SHARE.value, shares, max_values, rng),
        FeatureReference(TextDescriptor.EMPTY.value, FeatureKind.CATEGORICAL,
                         counts={k: c for k, c in (("true", empty), ("false", len(present) - empty)) if c}),
    ) if d is not None]
    candidates = [text for text in present if not is_empty_text(text)]
    if len(candidates) > embedding_sample:
        candidates = [candidates[i] for i in np.sort(rng.choice(len(candidates), size=embedding_sample,
                                                                 replace=False))]
    if candidates and embedding_sample:
        raw = np.asarray((embed or _default_embed(encoder))(candidates))
        if raw.ndim != 2 or raw.shape[0] != len(candidates):
            raise ProfileError(f"text column {name!r}: the encoder returned shape {raw.shape} for "
                               f"{len(candidates)} texts")
        # Stored as float16 (profile_wire); rounded here already, so a profile equals its decoded copy.
        embeddings = raw.astype(np.float16).astype(np.float32)
    else:
        embeddings = np.zeros((0, 0), dtype=np.float32)
    return FeatureReference(name, FeatureKind.TEXT, missing=missing,
                            text=TextReference(encoder, embeddings, vocabulary, tuple(descriptors)))


PROFILE_FORMAT = "gyre.monitor.v1.ReferenceProfile"
"""``ArtifactRef.format`` of a stored profile: binary protobuf of that message (:mod:`gyre_common.profile_wire`)."""
