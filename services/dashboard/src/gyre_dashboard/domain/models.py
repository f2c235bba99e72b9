"""What the dashboard shows of models: registry versions and aliases, drift, quality, alerts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class VersionSummary:
    """One model version as the registry describes it.

    Attributes:
        version: number, from 1.
        status: lifecycle state without the enum prefix (``READY``, ``ARCHIVED``).
        aliases: aliases pointing at it.
        created_at: registration time, UTC.
        created_by: who registered it.
        primary_metric: metric that ranks versions (``holdout_accuracy``), empty if none.
        metrics: holdout metrics from its lineage.
        run_id: tracking run it came from.
    """

    version: int
    status: str = ""
    aliases: tuple[str, ...] = ()
    created_at: datetime | None = None
    created_by: str = ""
    primary_metric: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str = ""


@dataclass(frozen=True)
class ModelSummary:
    """A registered model with its aliases and newest versions.

    Attributes:
        name: model name.
        description: what it does.
        latest_version: newest version number, 0 while there is none.
        aliases: alias -> version it points at.
        updated_at: last change, UTC.
        versions: newest versions first (at most ``versions_per_model``).
        versions_error: why ``versions`` could not be read, empty otherwise.
    """

    name: str
    description: str = ""
    latest_version: int = 0
    aliases: dict[str, int] = field(default_factory=dict)
    updated_at: datetime | None = None
    versions: tuple[VersionSummary, ...] = ()
    versions_error: str = ""


@dataclass(frozen=True)
class FeatureDriftRow:
    """Drift test result of one feature over one window (Evidently's column drift).

    Attributes:
        feature: input name.
        test_name: ``ks``, ``chisquare``, ``z``, ``wasserstein`` or ``jensenshannon``.
        statistic: test statistic or distance.
        p_value: p-value of a hypothesis test, None for distances.
        threshold: the drift threshold.
        drifted: whether it drifted.
    """

    feature: str
    test_name: str = ""
    statistic: float = 0.0
    p_value: float | None = None
    threshold: float = 0.0
    drifted: bool = False


@dataclass(frozen=True)
class ModelDrift:
    """The monitor's latest evaluated window of one model.

    Attributes:
        model_name: the model.
        model_version: the version served in the window.
        window_start: start (inclusive), UTC.
        window_end: end (exclusive), UTC.
        current_rows: predictions in the window.
        drift_share: share of features that drifted, in [0, 1].
        dataset_drift: whether the share reached the threshold.
        features: one row per tested feature.
    """

    model_name: str
    model_version: int = 0
    window_start: datetime | None = None
    window_end: datetime | None = None
    current_rows: int = 0
    drift_share: float = 0.0
    dataset_drift: bool = False
    features: tuple[FeatureDriftRow, ...] = ()

    @property
    def drifted_features(self) -> tuple[str, ...]:
        """Names of the features that drifted."""
        return tuple(row.feature for row in self.features if row.drifted)


@dataclass(frozen=True)
class VersionQuality:
    """Feedback quality of one model version over the quality window; a metric without data is None.

    Attributes:
        model_version: version number.
        predictions: predictions served in the window.
        feedback_count: feedback items on them.
        labelled_count: items with a corrected label.
        accuracy: share of labelled predictions that were right, in [0, 1].
        mean_stars: mean star rating, in [1, 5].
        thumbs_up_rate: share of thumbs up, in [0, 1].
        mean_score: mean normalised score, in [0, 1].
        bleu: corpus BLEU of text outputs, in [0, 1].
        rouge_l: mean ROUGE-L F1 of text outputs, in [0, 1].
    """

    model_version: int
    predictions: int = 0
    feedback_count: int = 0
    labelled_count: int = 0
    accuracy: float | None = None
    mean_stars: float | None = None
    thumbs_up_rate: float | None = None
    mean_score: float | None = None
    bleu: float | None = None
    rouge_l: float | None = None


@dataclass(frozen=True)
class ModelQuality:
    """Feedback quality of a model's versions over one window (UTC), newest version first."""

    model_name: str
    window_start: datetime | None = None
    window_end: datetime | None = None
    versions: tuple[VersionQuality, ...] = ()


@dataclass(frozen=True)
class AlertSummary:
    """One monitor alert (drift or quality drop).

    Attributes:
        alert_id: its id.
        kind: without the enum prefix (``DRIFT``, ``QUALITY_DROP``).
        model_name: model concerned.
        model_version: version concerned.
        detected_at: when it was raised, UTC.
        drift_share: share of drifted features, in [0, 1] (drift alerts).
        drifted_features: names of the drifted features (drift alerts).
    """

    alert_id: str
    kind: str = ""
    model_name: str = ""
    model_version: int = 0
    detected_at: datetime | None = None
    drift_share: float = 0.0
    drifted_features: tuple[str, ...] = ()
