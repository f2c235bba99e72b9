"""The trainer's view of the services it depends on, as small interfaces.

The service layer (:mod:`gyre_trainer.handlers`) talks only to these; :mod:`gyre_trainer.adapters`
implements them over gRPC, and unit tests use in-memory fakes. Errors are split in two:
:class:`DependencyUnavailable` (try the job again later) and :class:`DependencyRejected` (the
request itself is wrong; the job fails).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from gyre_common.artifacts import ArtifactRef
from gyre_common.profile import ReferenceProfile
from gyre_trainer.domain.dataset import TrainingSet
from gyre_trainer.domain.search import TrialResult
from gyre_trainer.domain.signature import Signature


class DependencyUnavailable(RuntimeError):
    """Another service could not be reached or timed out; the job is retried later."""


class DependencyRejected(ValueError):
    """Another service refused the request (not found, invalid); retrying would not help."""


@dataclass(frozen=True)
class LoadedTrainingSet:
    """A training set with the window it was actually built over (UTC; unset bounds resolved)."""

    data: TrainingSet
    window_start: datetime | None
    window_end: datetime | None


class TrainingDataSource(ABC):
    """Where point-in-time correct training sets come from (the features service)."""

    @abstractmethod
    async def training_set(self, feature_view: str, label: str, window_start: datetime | None,
                           window_end: datetime | None) -> LoadedTrainingSet:
        """Every labelled row of ``feature_view`` with event time in [window_start, window_end).

        Raises:
            DependencyRejected: unknown view or label, empty window.
            DependencyUnavailable: the source cannot be reached.
        """


@dataclass(frozen=True)
class SearchRun:
    """The tracking run of a whole search (parent of the trial runs)."""

    experiment_id: str
    run_id: str


class RunLogger(ABC):
    """Where searches and trials are tracked (the tracking service)."""

    @abstractmethod
    async def start_search(self, *, experiment: str, run_id: str, run_name: str,
                           tags: Mapping[str, str]) -> SearchRun:
        """Create (idempotently, by ``run_id``) the parent run of a search in ``experiment``."""

    @abstractmethod
    async def log_trial(self, search: SearchRun, *, run_id: str, trial: TrialResult,
                        tags: Mapping[str, str]) -> str:
        """Record one finished trial as a child run (params, ``val_*`` metrics, status); its run id.

        A trial with a ``history`` (per-epoch metrics) gets each of them as metric history, step =
        epoch, timestamp = the epoch's end; its final ``val_*`` metrics are the last epoch's, so
        they are not logged a second time at step 0."""

    @abstractmethod
    async def finish_search(self, search: SearchRun, *, succeeded: bool, best_run_id: str,
                            metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
        """Log the holdout metrics and tags on the parent and best runs and end the parent run."""


@dataclass(frozen=True)
class Lineage:
    """Where a version came from (mirrors ``gyre.events.v1.Lineage``)."""

    training_request_id: str
    feature_views: tuple[str, ...]
    window_start: datetime | None
    window_end: datetime | None
    dataset_fingerprint: str
    run_id: str
    experiment_id: str
    hyperparameters: dict[str, str]
    metrics: dict[str, float]
    code_version: str
    label: str
    training_rows: int
    reference_profile: ArtifactRef | None = None
    reference_profile_format: str = ""


@dataclass(frozen=True)
class HoldoutEvaluation:
    """What the registry's promotion policy compares (mirrors ``gyre.registry.v1.HoldoutEvaluation``).

    Attributes:
        primary_metric: key of ``Lineage.metrics`` that ranks versions, e.g. ``holdout_roc_auc``.
        lower_is_better: direction of that metric.
        holdout_id: id of the holdout definition it was measured on
            (:func:`gyre_trainer.domain.holdout.holdout_id`).
        champion_version: the production version re-scored on this holdout's rows (0: none).
        champion_score: its ``primary_metric`` there, so the registry compares both on the same rows.
    """

    primary_metric: str
    lower_is_better: bool
    holdout_id: str
    champion_version: int = 0
    champion_score: float | None = None


@dataclass(frozen=True)
class Registration:
    """Everything CreateModelVersion needs.

    Attributes:
        artifact_format: ``ArtifactRef.format`` (``"skops"``, ``"safetensors-text"``).
        tags: free-form tags, e.g. the holdout definition and the reference-profile artifact.
        idempotency_key: makes a retried registration return the first version.
        evaluation: how the version scored, for the registry's promotion policy.
        skip_promotion: register without running the policy (no alias moves).
    """

    model_name: str
    artifact: ArtifactRef
    artifact_format: str
    signature: Signature
    lineage: Lineage
    description: str
    tags: dict[str, str]
    idempotency_key: str
    evaluation: HoldoutEvaluation | None = None
    skip_promotion: bool = False


@dataclass(frozen=True)
class Promotion:
    """What the registry's promotion policy decided (mirrors ``gyre.registry.v1.PromotionDecision``).

    Attributes:
        outcome: ``promoted``, ``challenger``, ``not_promoted`` or ``skipped``.
        alias: the alias pointed at the new version ("" when none moved).
        champion_version: the version holding the champion alias when the policy ran (0: none).
        reason: the policy's one-sentence reason.
    """

    outcome: str
    alias: str = ""
    champion_version: int = 0
    reason: str = ""

    @property
    def promoted(self) -> bool:
        """Whether the new version now holds the champion alias."""
        return self.outcome == "promoted"


@dataclass(frozen=True)
class RegisteredNew:
    """The answer to a registration: the version number and the policy's decision."""

    version: int
    promotion: Promotion


@dataclass(frozen=True)
class RegisteredVersion:
    """A version as the registry describes it (enough to evaluate it on a holdout)."""

    model_name: str
    version: int
    artifact: ArtifactRef
    input_names: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    artifact_format: str = ""
    """``ArtifactRef.format`` (``skops``, ``safetensors-text``): which backend loads it; "" is skops."""


class ModelRegistryClient(ABC):
    """The model registry."""

    @abstractmethod
    async def register(self, registration: Registration) -> RegisteredNew:
        """Create the version (idempotent on ``idempotency_key``: a retry returns the first answer);
        the registry runs its promotion policy in the same transaction."""

    @abstractmethod
    async def version_by_alias(self, model_name: str, alias: str) -> RegisteredVersion | None:
        """The version ``alias`` points at; None when the model or the alias does not exist."""


class ProfileSink(ABC):
    """Where reference profiles are written (the artifact store, in the monitor's wire format)."""

    format: str = ""
    """``ArtifactRef.format`` of the written profile."""

    @abstractmethod
    async def save(self, profile: ReferenceProfile) -> ArtifactRef:
        """Write ``profile`` of a coming version; its reference (goes into ``Lineage.reference_profile``).
        The version number is not known yet: the profile carries 0 and the monitor takes the number
        from the VERSION_CREATED event whose lineage points at it."""
