"""The trainer's use cases, free of transport: queue, inspect and cancel training jobs.

:class:`TrainerHandlers` answers the APIs and the bus (submit, get, list, cancel) with domain
types (:mod:`gyre_trainer.domain.jobs`); running a job is :class:`gyre_trainer.runner.JobRunner`'s.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from gyre_trainer import training_events as events
from gyre_trainer.domain.jobs import (
    InvalidQuery,
    InvalidRequest,
    Job,
    JobAlreadyEnded,
    JobNotFound,
    JobStatus,
    TrainingPolicy,
    TrainingRequest,
    job_id_for,
    validate_request,
)
from gyre_trainer.store import EventClaim, JobStore

__all__ = ["JobAlreadyEnded", "JobNotFound", "TrainerHandlers"]

log = logging.getLogger(__name__)


class TrainerHandlers:
    """Queue, read and cancel jobs. ``wake`` is called after a new job is queued (to start a local
    worker at once instead of at its next poll)."""

    def __init__(self, store: JobStore, policy: TrainingPolicy, wake: Callable[[], None] | None = None) -> None:
        self.store = store
        self.policy = policy
        self._wake = wake or (lambda: None)

    async def submit(self, request: TrainingRequest, *, claim: EventClaim | None = None) -> tuple[Job, bool]:
        """Queue a job for ``request``; idempotent on request_id.

        From the API (``claim`` is None) an invalid request raises :class:`InvalidRequest` and a
        full queue raises :class:`~gyre_trainer.store.QueueFull`. From the bus (``claim`` given)
        nothing is refused: an invalid request is recorded as a FAILED job with a FAILED event, so
        its producer can see why, and the queue limit does not apply (the topic is the buffer).

        Returns:
            The job and whether the request id was already known (then nothing new happened).
        """
        if request.requested_at is None:
            request = replace(request, requested_at=datetime.now(UTC))
        try:
            validate_request(request, max_max_evals=self.policy.max_max_evals)
        except InvalidRequest as exc:
            if claim is None:
                raise
            if not request.request_id.strip():
                # Still answerable: key it by the bus event, so a redelivery maps to the same job.
                request = replace(request, request_id=f"ce:{claim.event_id}")
            error = f"invalid request: {exc}"
            placeholder = Job(job_id_for(request.request_id), request, JobStatus.FAILED, datetime.now(UTC))
            job, duplicate = await self.store.submit(request, claim=claim,
                                                     rejected=(error, events.failed(placeholder, error)))
            log.warning("rejected training request %s: %s", request.request_id, exc)
            return job, duplicate
        limit = None if claim is not None else self.policy.max_queued_jobs
        job, duplicate = await self.store.submit(request, max_queued=limit, claim=claim)
        if not duplicate:
            log.info("queued training job %s for model %s (request %s)", job.job_id, job.model_name,
                     job.request_id)
            self._wake()
        return job, duplicate

    async def get_job(self, *, job_id: str = "", request_id: str = "") -> Job:
        """The job by id or by request id. Raises :class:`JobNotFound`, or :class:`InvalidQuery` if
        neither is given."""
        if not job_id and not request_id:
            raise InvalidQuery("give job_id or request_id")
        job = await (self.store.get(job_id) if job_id else self.store.get_by_request(request_id))
        if job is None:
            raise JobNotFound(f"no training job {'with id ' + job_id if job_id else 'for request ' + request_id}")
        return job

    async def list_jobs(self, *, model_name: str = "", page_size: int = 0,
                        page_token: str = "") -> tuple[list[Job], str]:
        """One page of jobs, newest first, and the token of the next page ("" on the last).

        Raises:
            InvalidQuery: page_size outside 0..1000 or a page_token this service did not issue.
        """
        if not 0 <= page_size <= 1000:
            raise InvalidQuery("page_size must be between 1 and 1000 (0 means 100)")
        size = page_size or 100
        after = _decode_token(page_token) if page_token else None
        jobs = await self.store.list_jobs(model_name=model_name, limit=size + 1, after=after)
        if len(jobs) > size:
            last = jobs[size - 1]
            return jobs[:size], _encode_token(last.created_at, last.job_id)
        return jobs, ""

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once, or ask the running one to stop at its next trial.

        Raises:
            JobNotFound: unknown job.
            JobAlreadyEnded: the job already succeeded or failed.
        """
        job = await self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no training job with id {job_id}")
        if job.status.ended:
            raise JobAlreadyEnded(f"training job {job_id} already {job.status.value}")
        cancelled = await self.store.request_cancel(job_id, events.failed(job, "cancelled"))
        if cancelled is None:
            raise JobNotFound(f"no training job with id {job_id}")
        return cancelled


def _encode_token(created_at: datetime, job_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str) -> tuple[datetime, str]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        return datetime.fromisoformat(created), str(job_id)
    except (ValueError, TypeError) as exc:  # binascii.Error and bad JSON are ValueErrors
        raise InvalidQuery(f"invalid page_token: {exc}") from None
