"""Training jobs: the record of one TrainingRequest being answered, and request validation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from gyre_common import errors
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_trainer.domain.space import FAMILIES


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
    request: ev.TrainingRequest
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


def validate_request(request: ev.TrainingRequest, *, max_max_evals: int) -> None:
    """Check what can be checked before any data is read.

    Raises:
        InvalidRequest: an empty request_id, model_name, feature_view or label; an unspecified
            reason; a window whose end is not after its start; max_evals negative or above
            ``max_max_evals``; a holdout_fraction outside [0, 1); an unknown estimator family;
            a negative timeout.
    """
    for name in ("request_id", "model_name", "feature_view", "label"):
        if not getattr(request, name).strip():
            raise InvalidRequest(name, "must not be empty")
    if request.reason == ev.TRAINING_REASON_UNSPECIFIED:
        raise InvalidRequest("reason", "must be set (MANUAL, DRIFT, FEEDBACK or SCHEDULE)")
    if request.HasField("window_start") and request.HasField("window_end"):
        if request.window_end.ToDatetime() <= request.window_start.ToDatetime():
            raise InvalidRequest("window_end", "must be after window_start")
    search = request.search
    if search.max_evals < 0 or search.max_evals > max_max_evals:
        raise InvalidRequest("search.max_evals", f"must be between 0 (default) and {max_max_evals}")
    if not 0.0 <= search.holdout_fraction < 1.0:
        raise InvalidRequest("search.holdout_fraction", "must be in (0, 1), or 0 for the default")
    if search.timeout_seconds < 0:
        raise InvalidRequest("search.timeout_seconds", "must not be negative")
    known = {family for families in FAMILIES.values() for family in families}
    unknown = [f for f in search.estimator_families if f not in known]
    if unknown:
        raise InvalidRequest("search.estimator_families", f"unknown {unknown}; known: {sorted(known)}")
