"""Training jobs: the request a job answers, the record of one job, and request validation.

:class:`TrainingRequest` mirrors ``gyre.events.v1.TrainingRequest`` (the transports convert, see
:mod:`gyre_trainer.convert`); nothing here knows protobuf.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum

from gyre_common import errors
from gyre_trainer.domain.backends import BACKENDS, SKLEARN, TEXT_HEAD_FAMILY, TORCH_TEXT
from gyre_trainer.domain.backends.options import TextOptions
from gyre_trainer.domain.space import FAMILIES
from gyre_trainer.domain.task import Task


class TrainingReason(IntEnum):
    """Why a training was requested (the numbers of ``gyre.events.v1.TrainingReason``)."""

    UNSPECIFIED = 0
    MANUAL = 1
    DRIFT = 2
    FEEDBACK = 3
    SCHEDULE = 4


@dataclass(frozen=True)
class SearchSpec:
    """How to search (``gyre.events.v1.SearchConfig``); zeros and empties mean the trainer's default.

    ``timeout_seconds`` is the wall-clock budget of the whole search in seconds (0: none);
    ``holdout_fraction`` the share of rows held out, in (0, 1).
    """

    max_evals: int = 0
    estimator_families: tuple[str, ...] = ()
    objective_metric: str = ""
    timeout_seconds: int = 0
    random_seed: int = 0
    holdout_fraction: float = 0.0


@dataclass(frozen=True)
class TrainingRequest:
    """A request to train a new version of ``model_name``; idempotent on ``request_id``.

    Times are aware UTC; an unset window bound is None ("from the start" / "now"). ``task`` None
    lets the trainer infer the task from the label; ``promote_to_alias`` "" means register only.
    ``backend`` "" means the champion's backend (``sklearn`` for a model without one);
    ``text_feature`` names the torch-text model's input ("" : the champion's, else the only text
    feature).
    """

    request_id: str
    model_name: str
    feature_view: str
    label: str
    reason: TrainingReason = TrainingReason.UNSPECIFIED
    window_start: datetime | None = None
    window_end: datetime | None = None
    evidence: Mapping[str, str] = field(default_factory=dict)
    requested_by: str = ""
    requested_at: datetime | None = None
    task: Task | None = None
    search: SearchSpec = field(default_factory=SearchSpec)
    promote_to_alias: str = ""
    backend: str = ""
    text_feature: str = ""


class JobStatus(StrEnum):
    """Where a job is. QUEUED jobs wait for a worker; RUNNING ones hold a lease."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        """Whether the job is over (no further work or events)."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


# Namespace of deterministic ids (job ids, run ids, event ids): the same request always maps to
# the same job id, so a retry anywhere lands on the same records.
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:gyre:trainer")


def job_id_for(request_id: str) -> str:
    """The job id of a request: a UUID5 of its request id (32 hex characters)."""
    return uuid.uuid5(ID_NAMESPACE, f"job/{request_id}").hex


def derived_id(*parts: object) -> str:
    """A deterministic 32-hex id from ``parts`` (run ids, event ids)."""
    return uuid.uuid5(ID_NAMESPACE, "/".join(str(p) for p in parts)).hex


@dataclass
class Job:
    """One training job (mirrors ``gyre.trainer.v1.TrainingJob``). Times are aware UTC.

    ``attempts`` counts how often a worker started the job (a transient failure re-queues it);
    ``cancel_requested`` asks the running worker to stop at the next trial.
    """

    job_id: str
    request: TrainingRequest
    status: JobStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    parent_run_id: str = ""
    trials_completed: int = 0
    best_run_id: str = ""
    best_metrics: dict[str, float] = field(default_factory=dict)
    model_version: int = 0
    promoted: bool = False
    champion_version: int = 0
    champion_metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    attempts: int = 0
    cancel_requested: bool = False

    @property
    def request_id(self) -> str:
        """The request's idempotency key."""
        return self.request.request_id

    @property
    def model_name(self) -> str:
        """Model the job trains."""
        return self.request.model_name


class InvalidRequest(errors.InvalidArgument, ValueError):
    """A TrainingRequest that cannot be answered as given; ``field`` names the culprit."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


class JobNotFound(errors.NotFound, LookupError):
    """No job with that id."""


class JobAlreadyEnded(errors.FailedPrecondition, RuntimeError):
    """The job already succeeded or failed."""


class InvalidQuery(errors.InvalidArgument, ValueError):
    """A lookup or listing asked wrongly: neither job id nor request id, a page size out of range,
    a page token this service did not issue (gRPC INVALID_ARGUMENT, HTTP 400)."""


def validate_request(request: TrainingRequest, *, max_max_evals: int) -> None:
    """Check what can be checked before any data is read.

    Raises:
        InvalidRequest: an empty request_id, model_name, feature_view or label; an unspecified
            reason; a window whose end is not after its start; max_evals negative or above
            ``max_max_evals``; a holdout_fraction outside [0, 1); an unknown estimator family
            (for the backend); a negative timeout; an unknown backend; a text_feature for sklearn.
    """
    for name in ("request_id", "model_name", "feature_view", "label"):
        if not getattr(request, name).strip():
            raise InvalidRequest(name, "must not be empty")
    if request.reason == TrainingReason.UNSPECIFIED:
        raise InvalidRequest("reason", "must be set (MANUAL, DRIFT, FEEDBACK or SCHEDULE)")
    if request.window_start is not None and request.window_end is not None:
        if request.window_end <= request.window_start:
            raise InvalidRequest("window_end", "must be after window_start")
    search = request.search
    if search.max_evals < 0 or search.max_evals > max_max_evals:
        raise InvalidRequest("search.max_evals", f"must be between 0 (default) and {max_max_evals}")
    if not 0.0 <= search.holdout_fraction < 1.0:
        raise InvalidRequest("search.holdout_fraction", "must be in (0, 1), or 0 for the default")
    if search.timeout_seconds < 0:
        raise InvalidRequest("search.timeout_seconds", "must not be negative")
    if request.backend and request.backend not in BACKENDS:
        raise InvalidRequest("backend", f"unknown backend {request.backend!r}; known: {', '.join(BACKENDS)} "
                             "(empty: the champion's)")
    if request.backend == SKLEARN and request.text_feature:
        raise InvalidRequest("text_feature", "applies to the torch-text backend only")
    if request.backend == TORCH_TEXT:
        known = {TEXT_HEAD_FAMILY}
    else:
        known = {family for families in FAMILIES.values() for family in families}
    unknown = [f for f in search.estimator_families if f not in known]
    if unknown:
        raise InvalidRequest("search.estimator_families", f"unknown {unknown}; known: {sorted(known)}")


@dataclass(frozen=True)
class TrainingPolicy:
    """Defaults and limits of training (from :class:`~gyre_trainer.settings.TrainerSettings`).

    ``retry_delay_s`` and ``trial_callback_timeout_s`` are seconds.
    """

    default_max_evals: int = 20
    max_max_evals: int = 500
    default_seed: int = 42
    default_holdout_fraction: float = 0.2
    cv_folds: int = 3
    min_training_rows: int = 20
    profile_max_values: int = 5000
    max_queued_jobs: int = 100
    experiment_prefix: str = "gyre/"
    champion_alias: str = "production"
    max_attempts: int = 3
    retry_delay_s: float = 30.0
    trial_callback_timeout_s: float = 120.0
    text: TextOptions = field(default_factory=TextOptions)
    """How the torch-text backend trains (its ``text_feature`` comes from each request)."""
