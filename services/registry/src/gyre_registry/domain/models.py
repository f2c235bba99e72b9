"""What the registry keeps, as its use cases see it: registered models, versions with their artifact,
signature, lineage and holdout evaluation, promotion decisions, audit entries and registry events.

These mirror the ``gyre.registry.v1`` and ``gyre.events.v1`` messages field for field (the
conversion is :mod:`gyre_registry.convert`); an optional sub-message is ``None`` when unset. All
times are aware UTC datetimes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ArtifactRef:
    """Where a model's bytes are: ``uri``, their SHA-256 (64 lowercase hex characters), size and format."""

    uri: str = ""
    sha256: str = ""
    size_bytes: int = 0
    format: str = ""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: name, V2 datatype (e.g. ``FP64``), shape (-1: any size)."""

    name: str = ""
    datatype: str = ""
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelSignature:
    """A model's inputs and outputs."""

    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


@dataclass(frozen=True)
class Lineage:
    """Where a version came from: training request, feature views and window, dataset, run,
    hyperparameters, holdout metrics, code, and the reference profile saved with it."""

    training_request_id: str = ""
    feature_views: tuple[str, ...] = ()
    window_start: datetime | None = None
    window_end: datetime | None = None
    dataset_fingerprint: str = ""
    run_id: str = ""
    experiment_id: str = ""
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    code_version: str = ""
    label: str = ""
    training_rows: int = 0
    reference_profile: ArtifactRef | None = None


@dataclass(frozen=True)
class HoldoutEvaluation:
    """How a version was measured: its primary metric (a key of ``lineage.metrics``), the direction,
    the holdout's id, and optionally the champion re-scored on this version's holdout rows."""

    primary_metric: str = ""
    lower_is_better: bool = False
    holdout_id: str = ""
    champion_version: int = 0
    champion_score: float | None = None


class VersionStatus(enum.Enum):
    """A version is ready until it is archived."""

    READY = "ready"
    ARCHIVED = "archived"


@dataclass(frozen=True)
class ModelVersion:
    """One version of a registered model, with the aliases pointing at it (sorted)."""

    model_name: str
    version: int
    status: VersionStatus
    artifact: ArtifactRef
    signature: ModelSignature
    lineage: Lineage
    evaluation: HoldoutEvaluation
    aliases: tuple[str, ...]
    description: str
    tags: Mapping[str, str]
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class RegisteredModel:
    """A model name with its aliases (alias -> version) and its highest version number."""

    name: str
    description: str
    tags: Mapping[str, str]
    aliases: Mapping[str, int]
    latest_version: int
    created_at: datetime
    updated_at: datetime


class PromotionOutcome(enum.Enum):
    """What became of a new version: the policy's three answers (:class:`~.policy.Outcome`) or skipped."""

    PROMOTED = "promoted"
    CHALLENGER = "challenger"
    NOT_PROMOTED = "not_promoted"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class PromotionDecision:
    """The promotion of a new version: the outcome, the alias moved ('' when none) and where it
    pointed before (0: nowhere), the champion it was compared with (0: none), and why."""

    outcome: PromotionOutcome
    alias: str = ""
    previous_version: int = 0
    champion_version: int = 0
    reason: str = ""


@dataclass(frozen=True)
class VersionDraft:
    """A version to register (CreateModelVersion): ``artifact`` None means the caller gave none
    (refused); ``idempotency_key`` '' means no deduplication; ``skip_promotion`` leaves every alias
    alone."""

    model_name: str
    artifact: ArtifactRef | None
    signature: ModelSignature = field(default_factory=ModelSignature)
    lineage: Lineage = field(default_factory=Lineage)
    evaluation: HoldoutEvaluation = field(default_factory=HoldoutEvaluation)
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str = ""
    skip_promotion: bool = False


@dataclass(frozen=True)
class Registration:
    """A registered version and its promotion decision (None only for a version registered before
    decisions were kept)."""

    model_version: ModelVersion
    promotion: PromotionDecision | None


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the append-only audit log (``version`` 0: about the model itself)."""

    audit_id: str
    actor: str
    action: str
    model_name: str
    version: int
    details: Mapping[str, str]
    occurred_at: datetime


class RegistryEventKind(enum.Enum):
    """What a registry event announces (``gyre.events.v1.RegistryEventKind``)."""

    MODEL_CREATED = "model_created"
    VERSION_CREATED = "version_created"
    ALIAS_SET = "alias_set"
    ALIAS_REMOVED = "alias_removed"
    VERSION_ARCHIVED = "version_archived"


@dataclass(frozen=True)
class RegistryEvent:
    """A change announced on ``registry.events`` (keyed by model name).

    ``version`` is the version the event is about (for alias events the version the alias points
    at now, 0 after ALIAS_REMOVED); ``previous_version`` where the alias pointed before (0: none).
    ``artifact``, ``lineage`` and ``signature`` are None when the event does not carry them.
    """

    kind: RegistryEventKind
    model_name: str
    occurred_at: datetime
    audit_id: str
    actor: str
    version: int = 0
    alias: str = ""
    previous_version: int = 0
    artifact: ArtifactRef | None = None
    lineage: Lineage | None = None
    signature: ModelSignature | None = None
    comment: str = ""


@dataclass(frozen=True)
class Listing(Generic[T]):
    """One page of a list call; ``next_page_token`` is empty on the last page."""

    items: list[T]
    next_page_token: str = ""
