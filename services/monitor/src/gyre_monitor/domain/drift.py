"""Per-feature and dataset drift with Evidently 0.7's default tests, in numpy/scipy.

The rules below are Evidently's (``evidently.legacy.calculations.stattests``: ``registry.
_get_default_stattest`` and the test modules), reproduced on arrays so that a window of thousands of
predictions is tested without pandas. ``tests/unit/monitor/test_monitor_evidently_agreement.py``
checks that results agree with ``Report([DataDriftPreset()])`` on the same data.

Test choice per feature, with ``n`` the distinct values of reference and current together and
``rows`` the non-missing reference rows:

================  =========================  ==================================
kind              rows <= 1000               rows > 1000
================  =========================  ==================================
numerical, n > 5  ``ks`` (p <= 0.05)         ``wasserstein`` normed (>= 0.1)
numerical, n <= 5 ``chisquare`` if n > 2     ``jensenshannon`` (>= 0.1)
                  else ``z`` (p < 0.05)
categorical       ``chisquare`` if n > 2     ``jensenshannon`` (>= 0.1)
                  else ``z`` (p < 0.05)
================  =========================  ==================================

The dataset drifts when the share of drifted features reaches ``drift_share`` (0.5). Missing and
non-finite values are dropped first; a feature with no value left on either side is not tested
(Evidently refuses such a column) and is reported as skipped, outside the share.

Text features (:mod:`gyre_monitor.domain.text_drift`) give one result per check: ``embedding``
(test ``model``, a domain classifier, when an embedder is available) and one per descriptor
(``length``, ``oov_share``, ``empty``, tested as above). A text feature counts once in the share,
as drifted when any of its checks drifted; checks that cannot run are reported as skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from scipy import stats
from scipy.spatial import distance

from gyre_common.profile import (
    FeatureKind,
    FeatureReference,
    ReferenceProfile,
    TextDescriptor,
    category_keys,
    finite_floats,
    is_empty_text,
    oov_share,
)
from gyre_monitor.domain.text_drift import (
    EMBEDDING_DRIFT_THRESHOLD,
    Embedder,
    TextValues,
    embedding_drift,
    sample_texts,
    served_text,
    text_values,
)

SMALL_REFERENCE_ROWS = 1000
"""Up to this many reference rows, Evidently uses hypothesis tests; above, distances."""

FEW_VALUES = 5
"""Numerical features with at most this many distinct values are tested like categories."""

DEFAULT_DRIFT_SHARE = 0.5
"""Share of drifted features at which the dataset counts as drifted (Evidently's default)."""

DEFAULT_MAX_EMBEDDED_TEXTS = 500
"""Most texts of one text feature embedded per window (a seeded sample beyond): embedding is the cost."""

EMBEDDING = "embedding"
"""``FeatureDrift.descriptor`` of a text feature's embedding drift."""

TEXT_EXTRA_MISSING = "not checked: install gyre-monitor[text]"
"""Why embedding drift is skipped when the monitor runs without its ``text`` extra (no encoder)."""

DIGESTS_ONLY = "texts arrived as sha256 + length only"
"""Why embedding and oov_share drift are skipped when serving ships hashes instead of texts."""

# Evidently's normalisation floor of the Wasserstein distance (std of a constant reference).
_MIN_STD = 0.001


class StatTest(StrEnum):
    """Drift tests, named as Evidently names them (also ``FeatureDrift.test_name`` in events)."""

    KS = "ks"
    CHISQUARE = "chisquare"
    Z = "z"
    WASSERSTEIN = "wasserstein"
    JENSENSHANNON = "jensenshannon"
    MODEL = "model"
    """A domain classifier's ROC AUC on embeddings (Evidently's embedding drift method name)."""

    @property
    def is_hypothesis_test(self) -> bool:
        """True for tests that give a p-value (drift when p is small), False for distances."""
        return self in (StatTest.KS, StatTest.CHISQUARE, StatTest.Z)


DEFAULT_THRESHOLDS: Mapping[StatTest, float] = {
    StatTest.KS: 0.05,
    StatTest.CHISQUARE: 0.05,
    StatTest.Z: 0.05,
    StatTest.WASSERSTEIN: 0.1,
    StatTest.JENSENSHANNON: 0.1,
    StatTest.MODEL: EMBEDDING_DRIFT_THRESHOLD,
}
"""Evidently's default threshold of each test."""


@dataclass(frozen=True)
class DriftOptions:
    """Knobs of the drift computation; the defaults are Evidently's.

    Attributes:
        drift_share: share of drifted features at which the dataset drifts, in (0, 1].
        thresholds: threshold per test (p-value level for tests, distance for distances, ROC AUC for
            ``model``; with fewer than 1,000 reference embeddings ``model`` bootstraps its threshold).
        max_embedded_texts: most texts of a text feature embedded per window.
    """

    drift_share: float = DEFAULT_DRIFT_SHARE
    thresholds: Mapping[StatTest, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    max_embedded_texts: int = DEFAULT_MAX_EMBEDDED_TEXTS

    def threshold(self, test: StatTest) -> float:
        """Threshold of ``test`` (Evidently's default when not overridden)."""
        return self.thresholds.get(test, DEFAULT_THRESHOLDS[test])


@dataclass(frozen=True)
class FeatureDrift:
    """Drift test result of one feature over one window.

    Attributes:
        feature: feature name.
        kind: numerical or categorical.
        test: the test used.
        statistic: the test statistic (K-S D, chi-squared, z) or the distance.
        p_value: p-value of a hypothesis test; None for distances.
        threshold: the drift threshold applied.
        drifted: whether the feature drifted.
        reference_rows: non-missing reference values used.
        current_rows: non-missing window values used.
        descriptor: what of a text feature was tested (``embedding``, ``length``, ``oov_share``,
            ``empty``); empty for numerical and categorical features.
    """

    feature: str
    kind: FeatureKind
    test: StatTest
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int
    descriptor: str = ""

    @property
    def drift_score(self) -> float:
        """Evidently's ``drift_score``: the p-value of a test, the value of a distance."""
        return self.p_value if self.p_value is not None else self.statistic


@dataclass(frozen=True)
class SkippedFeature:
    """A monitored feature (or one check of a text feature: ``descriptor``) that could not be tested
    in a window, and why."""

    feature: str
    reason: str
    descriptor: str = ""


@dataclass(frozen=True)
class DatasetDrift:
    """Drift of one window against a reference profile.

    Attributes:
        features: one result per tested feature (per check of a text feature), in profile order.
        skipped: features or checks that could not run (no value in the window, texts as hashes,
            no encoder).
        drift_share: drifted / tested features (0 when none was tested); a text feature counts once.
        drift_share_threshold: the share at which the dataset drifts.
        dataset_drift: ``drift_share >= drift_share_threshold`` (False when nothing was tested).
        current_rows: rows in the window.
    """

    features: tuple[FeatureDrift, ...]
    skipped: tuple[SkippedFeature, ...]
    drift_share: float
    drift_share_threshold: float
    dataset_drift: bool
    current_rows: int

    @property
    def drifted_features(self) -> list[str]:
        """Names of the drifted features, in profile order, each once."""
        return list(dict.fromkeys(result.feature for result in self.features if result.drifted))

    @property
    def drifted_checks(self) -> list[str]:
        """The drifted checks: ``feature`` for plain features, ``feature:descriptor`` for text ones."""
        return [f"{r.feature}:{r.descriptor}" if r.descriptor else r.feature for r in self.features if r.drifted]


# -- the reference, prepared once per profile -------------------------------------------------------


@dataclass(frozen=True)
class _NumericalReference:
    values: npt.NDArray[np.float64]
    std: float


@dataclass(frozen=True)
class _CategoricalReference:
    keys: npt.NDArray[np.str_]  # sorted
    counts: npt.NDArray[np.int64]


@dataclass(frozen=True)
class _TextReference:
    encoder: str
    embeddings: npt.NDArray[np.float32]
    vocabulary: frozenset[str]
    descriptors: dict[str, _NumericalReference | _CategoricalReference]


_Prepared = _NumericalReference | _CategoricalReference | _TextReference


def _prepare(feature: FeatureReference) -> _Prepared:
    if feature.kind is FeatureKind.NUMERICAL:
        values = np.sort(feature.values)
        return _NumericalReference(values, float(np.std(values)))
    if feature.kind is FeatureKind.CATEGORICAL:
        keys = np.asarray(sorted(feature.counts), dtype=np.str_)
        counts = np.asarray([feature.counts[str(k)] for k in keys], dtype=np.int64)
        return _CategoricalReference(keys, counts)
    assert feature.text is not None  # validate_profile guarantees it
    descriptors: dict[str, _NumericalReference | _CategoricalReference] = {}
    for descriptor in feature.text.descriptors:
        prepared = _prepare(descriptor)
        assert not isinstance(prepared, _TextReference)
        descriptors[descriptor.name] = prepared
    return _TextReference(feature.text.encoder, feature.text.embeddings, frozenset(feature.text.vocabulary),
                          descriptors)


class PreparedReference:
    """A reference profile in the form the tests consume; build once per profile and reuse."""

    def __init__(self, profile: ReferenceProfile) -> None:
        self.profile = profile
        self._features: list[tuple[FeatureReference, _Prepared]] = [(f, _prepare(f)) for f in profile.features]

    @property
    def has_text(self) -> bool:
        """Whether the profile monitors a text feature (its test may embed texts: run it in a thread)."""
        return any(isinstance(prepared, _TextReference) for _, prepared in self._features)

    def detect(self, current: Mapping[str, Sequence[object]], rows: int,
               options: DriftOptions | None = None, embedder: Embedder | None = None) -> DatasetDrift:
        """Test a window against the reference.

        Blocking when the profile has text features and ``embedder`` is given (it embeds up to
        ``options.max_embedded_texts`` texts per text feature): call it from a worker thread.

        Args:
            current: the window's raw values per feature name (``None`` for missing); features of
                the profile absent from the mapping count as all-missing.
            rows: number of predictions in the window.
            options: thresholds and drift share (Evidently's defaults when None).
            embedder: embeds texts for embedding drift; None skips it (reported as
                :data:`TEXT_EXTRA_MISSING`).
        """
        options = options or DriftOptions()
        results: list[FeatureDrift] = []
        skipped: list[SkippedFeature] = []
        for feature, reference in self._features:
            raw = current.get(feature.name, ())
            if isinstance(reference, _TextReference):
                found, missed = _text_drift(feature.name, reference, text_values(raw), options, embedder)
                results.extend(found)
                skipped.extend(missed)
                continue
            if isinstance(reference, _NumericalReference):
                result = _numerical_drift(feature.name, reference, finite_floats(raw), options)
            else:
                result = _categorical_drift(feature.name, reference, category_keys(raw), options)
            if result is None:
                skipped.append(SkippedFeature(feature.name, "no value in the window"))
            else:
                results.append(result)
        tested = {result.feature for result in results}
        drifted = len({result.feature for result in results if result.drifted})
        share = drifted / len(tested) if tested else 0.0
        return DatasetDrift(
            features=tuple(results),
            skipped=tuple(skipped),
            drift_share=share,
            drift_share_threshold=options.drift_share,
            dataset_drift=bool(results) and share >= options.drift_share,
            current_rows=rows,
        )


def window_columns(profile: ReferenceProfile, inputs: Sequence[Mapping[str, object]]) -> dict[str, list[object]]:
    """A window's values per monitored feature, from each prediction's inputs (``None`` when absent;
    a text feature served as sha256 + length becomes a :class:`~gyre_monitor.domain.text_drift.TextDigest`)."""
    columns: dict[str, list[object]] = {}
    for feature in profile.features:
        name = feature.name
        if feature.kind is FeatureKind.TEXT:
            columns[name] = [served_text(row, name) for row in inputs]
        else:
            columns[name] = [row.get(name) for row in inputs]
    return columns


def detect_drift(profile: ReferenceProfile, current: Mapping[str, Sequence[object]], rows: int,
                 options: DriftOptions | None = None) -> DatasetDrift:
    """One-off :meth:`PreparedReference.detect` (prefer a cached :class:`PreparedReference`)."""
    return PreparedReference(profile).detect(current, rows, options)


# -- the tests ---------------------------------------------------------------------------------------


def _text_drift(name: str, ref: _TextReference, values: TextValues, options: DriftOptions,
                embedder: Embedder | None) -> tuple[list[FeatureDrift], list[SkippedFeature]]:
    results: list[FeatureDrift] = []
    skipped: list[SkippedFeature] = []
    if not values.texts and not values.digest_lengths:
        return [], [SkippedFeature(name, "no value in the window")]
    digests_only = bool(values.digest_lengths) and not values.texts
    # Embeddings first: the alert names the strongest evidence first.
    if ref.embeddings.shape[0] == 0:
        skipped.append(SkippedFeature(name, "the reference profile has no embeddings", EMBEDDING))
    elif digests_only:
        skipped.append(SkippedFeature(name, DIGESTS_ONLY, EMBEDDING))
    elif embedder is None:
        skipped.append(SkippedFeature(name, TEXT_EXTRA_MISSING, EMBEDDING))
    else:
        sample = sample_texts([t for t in values.texts if not is_empty_text(t)], options.max_embedded_texts)
        if len(sample) < 2:
            skipped.append(SkippedFeature(name, "fewer than 2 non-empty texts in the window", EMBEDDING))
        else:
            current = np.asarray(embedder(ref.encoder, sample), dtype=np.float32)
            try:
                outcome = embedding_drift(ref.embeddings, current, threshold=options.threshold(StatTest.MODEL))
            except ValueError as exc:  # a different encoder width, or too few rows to split
                skipped.append(SkippedFeature(name, str(exc), EMBEDDING))
            else:
                results.append(FeatureDrift(name, FeatureKind.TEXT, StatTest.MODEL, outcome.roc_auc, None,
                                            outcome.threshold, outcome.drifted, outcome.reference_rows,
                                            outcome.current_rows, EMBEDDING))
    checks: list[tuple[TextDescriptor, FeatureDrift | str | None]] = []
    for descriptor in TextDescriptor:
        reference = ref.descriptors.get(descriptor.value)
        if reference is None:
            continue  # the profile has no reference values for it: nothing to compare with
        if descriptor is TextDescriptor.LENGTH:
            assert isinstance(reference, _NumericalReference)
            outcome_or_reason: FeatureDrift | str | None = _numerical_drift(
                name, reference, np.asarray(values.lengths, dtype=np.float64), options)
        elif descriptor is TextDescriptor.EMPTY:
            assert isinstance(reference, _CategoricalReference)
            flags = [is_empty_text(t) for t in values.texts] + [n == 0 for n in values.digest_lengths]
            outcome_or_reason = _categorical_drift(name, reference, category_keys(flags), options)
        elif digests_only:
            outcome_or_reason = DIGESTS_ONLY
        else:
            assert isinstance(reference, _NumericalReference)
            shares = [s for t in values.texts if (s := oov_share(t, ref.vocabulary)) is not None]
            outcome_or_reason = _numerical_drift(name, reference, np.asarray(shares, dtype=np.float64), options)
        checks.append((descriptor, outcome_or_reason))
    for descriptor, outcome_or_reason in checks:
        if isinstance(outcome_or_reason, FeatureDrift):
            results.append(replace(outcome_or_reason, kind=FeatureKind.TEXT, descriptor=descriptor.value))
        else:
            skipped.append(SkippedFeature(name, outcome_or_reason or "no value in the window", descriptor.value))
    return results, skipped


def _numerical_drift(name: str, ref: _NumericalReference, cur: npt.NDArray[np.float64],
                     options: DriftOptions) -> FeatureDrift | None:
    if cur.size == 0:
        return None
    small = ref.values.size <= SMALL_REFERENCE_ROWS
    distinct = np.unique(np.concatenate([ref.values, cur])).size
    if distinct <= FEW_VALUES:
        ref_keys, ref_counts = np.unique(ref.values, return_counts=True)
        ref_aligned, cur_aligned = _aligned_counts(ref_keys, ref_counts, cur)
        return _count_test(name, FeatureKind.NUMERICAL, small, ref_aligned, cur_aligned, options)
    if small:
        test = StatTest.KS
        outcome = stats.ks_2samp(ref.values, cur)
        p_value = float(outcome.pvalue)
        threshold = options.threshold(test)
        return FeatureDrift(name, FeatureKind.NUMERICAL, test, float(outcome.statistic), p_value, threshold,
                            p_value <= threshold, ref.values.size, cur.size)  # K-S: p <= threshold
    test = StatTest.WASSERSTEIN
    value = float(stats.wasserstein_distance(ref.values, cur)) / max(ref.std, _MIN_STD)
    threshold = options.threshold(test)
    return FeatureDrift(name, FeatureKind.NUMERICAL, test, value, None, threshold, value >= threshold,
                        ref.values.size, cur.size)


def _categorical_drift(name: str, ref: _CategoricalReference, cur: npt.NDArray[np.str_],
                       options: DriftOptions) -> FeatureDrift | None:
    if cur.size == 0:
        return None
    small = int(ref.counts.sum()) <= SMALL_REFERENCE_ROWS
    ref_aligned, cur_aligned = _aligned_counts(ref.keys, ref.counts, cur)
    return _count_test(name, FeatureKind.CATEGORICAL, small, ref_aligned, cur_aligned, options)


def _aligned_counts(ref_keys: np.ndarray, ref_counts: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference and current counts over the sorted union of their keys."""
    cur_keys, cur_counts = np.unique(cur, return_counts=True)
    keys = np.union1d(ref_keys, cur_keys)
    ref_aligned = np.zeros(keys.size, dtype=np.float64)
    cur_aligned = np.zeros(keys.size, dtype=np.float64)
    ref_aligned[np.searchsorted(keys, ref_keys)] = ref_counts
    cur_aligned[np.searchsorted(keys, cur_keys)] = cur_counts
    return ref_aligned, cur_aligned


def _count_test(name: str, kind: FeatureKind, small: bool, ref: np.ndarray, cur: np.ndarray,
                options: DriftOptions) -> FeatureDrift:
    n_ref, n_cur = float(ref.sum()), float(cur.sum())
    if not small:
        test = StatTest.JENSENSHANNON
        value = float(distance.jensenshannon(ref / n_ref, cur / n_cur))
        threshold = options.threshold(test)
        return FeatureDrift(name, kind, test, value, None, threshold, value >= threshold, int(n_ref), int(n_cur))
    if ref.size > 2:
        test = StatTest.CHISQUARE
        with np.errstate(divide="ignore", invalid="ignore"):
            # A category the reference never saw has expected count 0: statistic inf, p 0 (as Evidently).
            outcome = stats.chisquare(cur, ref * (n_cur / n_ref))
        statistic, p_value = float(outcome.statistic), float(outcome.pvalue)
    else:
        test = StatTest.Z
        statistic, p_value = _z_test(ref, cur)
    threshold = options.threshold(test)
    return FeatureDrift(name, kind, test, statistic, p_value, threshold, p_value < threshold, int(n_ref), int(n_cur))


def _z_test(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """Evidently's two-proportion Z test on the counts of (at most) two categories."""
    if ref.size == 1:
        return 0.0, 1.0  # one value on both sides: identical distributions
    n_ref, n_cur = float(ref.sum()), float(cur.sum())
    # Share of rows that are not the first (sorted) category; the p-value does not depend on which
    # category is first, only the sign of z does.
    p_ref = (n_ref - ref[0]) / n_ref
    p_cur = (n_cur - cur[0]) / n_cur
    pooled = (p_ref * n_ref + p_cur * n_cur) / (n_ref + n_cur)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p_ref - p_cur) / np.sqrt(pooled * (1 - pooled) * (1.0 / n_ref + 1.0 / n_cur))
    # 2 * (1 - cdf) rather than 2 * sf, as Evidently does, so tiny p-values agree too.
    return float(z), float(2 * (1 - stats.norm.cdf(np.abs(z))))


@dataclass(frozen=True)
class DriftReport:
    """Drift of one version over an arbitrary time range (on demand)."""

    model_name: str
    model_version: int
    window_start: datetime
    window_end: datetime
    drift: DatasetDrift
    html: str = ""
