"""Persistence of training jobs and of the outbox of training.events.

:class:`JobStore` is the interface; :class:`PostgresJobStore` keeps jobs in the ``trainer`` schema
and :class:`InMemoryJobStore` is its single-process twin for unit tests. Both pass the same
contract suite (tests/integration/test_trainer_store.py), so the fake cannot drift.

Events are never published from a handler directly: each one is written to the outbox in the same
transaction as the job change it reports (the shared :mod:`gyre_common.outbox` table), and the
outbox relay (:class:`gyre_common.outbox.OutboxRelay`) publishes it afterwards. A crash between the
two publishes the event late, never loses it (at-least-once; event ids are stable so consumers
dedupe).
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gyre_common import errors
from gyre_common.bus.idempotency import claim_event
from gyre_common.outbox import OutboxEvent as OutboxRow
from gyre_common.outbox import add_events
from gyre_common.topics import TRAINING_EVENTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_trainer.convert import request_from_proto, request_to_proto
from gyre_trainer.domain.jobs import Job, JobStatus, TrainingRequest, job_id_for


class QueueFull(errors.ResourceExhausted, RuntimeError):
    """Too many jobs are queued; retry later with the same request id."""


@dataclass(frozen=True)
class OutboxEvent:
    """A training event waiting to be published. ``seq`` orders them; ``event_id`` is the ce_id."""

    seq: int
    event_id: str
    key: str
    message: ev.TrainingEvent


@dataclass(frozen=True)
class PendingEvent:
    """An event to write to the outbox: its ce_id (stable across retries) and the message."""

    event_id: str
    message: ev.TrainingEvent


@dataclass(frozen=True)
class EventClaim:
    """The bus event a submission comes from: (consumer group, ce_id), claimed atomically."""

    consumer: str
    event_id: str


class JobStore(ABC):
    """Jobs and their outbox. Times are aware UTC; every method is safe to call concurrently."""

    @abstractmethod
    async def submit(self, request: TrainingRequest, *, max_queued: int | None = None,
                     claim: EventClaim | None = None,
                     rejected: tuple[str, PendingEvent] | None = None) -> tuple[Job, bool]:
        """Queue a job for ``request`` unless its request id is known.

        Args:
            max_queued: refuse with :class:`QueueFull` when this many jobs already wait (None: no limit).
            claim: also record the bus event as processed, in the same transaction.
            rejected: ``(error, event)``: record the job as FAILED at once with this error and
                outbox this event (for requests that are invalid as given).

        Returns:
            The job, and True when the request id (or the claimed event) was already known, in
            which case nothing was written.
        """

    @abstractmethod
    async def get(self, job_id: str) -> Job | None:
        """The job, or None."""

    @abstractmethod
    async def get_by_request(self, request_id: str) -> Job | None:
        """The job of a request id, or None."""

    @abstractmethod
    async def list_jobs(self, *, model_name: str = "", limit: int = 100,
                        after: tuple[datetime, str] | None = None) -> list[Job]:
        """Jobs newest first (by created_at, then job_id), of one model if given, after a cursor."""

    @abstractmethod
    async def claim_next(self, worker: str, lease_s: float) -> Job | None:
        """Take the oldest runnable job: QUEUED and due, or RUNNING with an expired lease.

        The job becomes RUNNING under ``worker`` for ``lease_s`` seconds and its attempts grow by one.
        """

    @abstractmethod
    async def renew_lease(self, job_id: str, worker: str, lease_s: float) -> bool:
        """Extend the lease; False when ``worker`` no longer holds the job."""

    @abstractmethod
    async def save_progress(self, job: Job, events: Sequence[PendingEvent] = ()) -> None:
        """Store the progress fields of a RUNNING job (runs, trials, best so far) and outbox ``events``."""

    @abstractmethod
    async def finish(self, job: Job, events: Sequence[PendingEvent] = ()) -> None:
        """Store ``job`` as ended (status, version, promotion, champion, error) and outbox ``events``."""

    @abstractmethod
    async def requeue(self, job_id: str, *, error: str, delay_s: float, count_attempt: bool = True) -> None:
        """Put a RUNNING job back in the queue, due after ``delay_s`` seconds; keep ``error`` as a note.

        ``count_attempt=False`` gives the attempt back (a shutdown, not a failure).
        """

    @abstractmethod
    async def request_cancel(self, job_id: str, queued_event: PendingEvent) -> Job | None:
        """Cancel a job: a QUEUED one fails at once ("cancelled", ``queued_event`` outboxed); a
        RUNNING one gets ``cancel_requested``; an ended one is returned unchanged. None if unknown."""

    @abstractmethod
    async def add_events(self, events: Sequence[PendingEvent]) -> None:
        """Outbox events on their own (e.g. STARTED)."""

    @abstractmethod
    async def pending_events(self, limit: int) -> list[OutboxEvent]:
        """The oldest ``limit`` unpublished events, in seq order (for inspection and tests; the
        relay reads the table itself)."""


def _now() -> datetime:
    return datetime.now(UTC)


class InMemoryJobStore(JobStore):
    """A :class:`JobStore` in a dict, for unit tests and single-process experiments."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self._not_before: dict[str, datetime] = {}
        self._leases: dict[str, tuple[str, datetime]] = {}
        self._claims: set[tuple[str, str]] = set()
        self._outbox: dict[int, OutboxEvent] = {}
        self._event_ids: set[str] = set()
        self._seq = 0
        self._lock = asyncio.Lock()

    def _outbox_add(self, events: Sequence[PendingEvent]) -> None:
        for event in events:
            if event.event_id in self._event_ids:
                continue
            self._event_ids.add(event.event_id)
            self._seq += 1
            message = ev.TrainingEvent()
            message.CopyFrom(event.message)
            self._outbox[self._seq] = OutboxEvent(self._seq, event.event_id, message.model_name, message)

    @staticmethod
    def _copy(job: Job) -> Job:
        # The request is frozen; its evidence is copied so no caller shares a dict with the store.
        request = replace(job.request, evidence=dict(job.request.evidence))
        return replace(job, request=request, best_metrics=dict(job.best_metrics),
                       champion_metrics=dict(job.champion_metrics))

    async def submit(self, request: TrainingRequest, *, max_queued: int | None = None,
                     claim: EventClaim | None = None,
                     rejected: tuple[str, PendingEvent] | None = None) -> tuple[Job, bool]:
        async with self._lock:
            job_id = job_id_for(request.request_id)
            existing = self.jobs.get(job_id)
            if claim is not None and (claim.consumer, claim.event_id) in self._claims and existing is not None:
                return self._copy(existing), True
            if existing is not None:
                if claim is not None:
                    self._claims.add((claim.consumer, claim.event_id))
                return self._copy(existing), True
            if max_queued is not None and rejected is None:
                queued = sum(1 for job in self.jobs.values() if job.status is JobStatus.QUEUED)
                if queued >= max_queued:
                    raise QueueFull(f"{queued} jobs are queued (limit {max_queued})")
            copy = replace(request, evidence=dict(request.evidence))
            now = _now()
            job = Job(job_id, copy, JobStatus.QUEUED, now)
            if rejected is not None:
                job.status, job.error, job.finished_at = JobStatus.FAILED, rejected[0], now
                self._outbox_add([rejected[1]])
            self.jobs[job_id] = job
            self._not_before[job_id] = now
            if claim is not None:
                self._claims.add((claim.consumer, claim.event_id))
            return self._copy(job), False

    async def get(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        return None if job is None else self._copy(job)

    async def get_by_request(self, request_id: str) -> Job | None:
        return await self.get(job_id_for(request_id))

    async def list_jobs(self, *, model_name: str = "", limit: int = 100,
                        after: tuple[datetime, str] | None = None) -> list[Job]:
        jobs = sorted(self.jobs.values(), key=lambda j: (j.created_at, j.job_id), reverse=True)
        if model_name:
            jobs = [j for j in jobs if j.model_name == model_name]
        if after is not None:
            jobs = [j for j in jobs if (j.created_at, j.job_id) < after]
        return [self._copy(j) for j in jobs[:limit]]

    async def claim_next(self, worker: str, lease_s: float) -> Job | None:
        async with self._lock:
            now = _now()
            for job in sorted(self.jobs.values(), key=lambda j: j.created_at):
                due = job.status is JobStatus.QUEUED and self._not_before[job.job_id] <= now
                lease = self._leases.get(job.job_id)
                expired = job.status is JobStatus.RUNNING and (lease is None or lease[1] < now)
                if due or expired:
                    job.status = JobStatus.RUNNING
                    job.attempts += 1
                    job.started_at = job.started_at or now
                    self._leases[job.job_id] = (worker, now + timedelta(seconds=lease_s))
                    return self._copy(job)
            return None

    async def renew_lease(self, job_id: str, worker: str, lease_s: float) -> bool:
        lease = self._leases.get(job_id)
        job = self.jobs.get(job_id)
        if lease is None or lease[0] != worker or job is None or job.status is not JobStatus.RUNNING:
            return False
        self._leases[job_id] = (worker, _now() + timedelta(seconds=lease_s))
        return True

    async def save_progress(self, job: Job, events: Sequence[PendingEvent] = ()) -> None:
        async with self._lock:
            stored = self.jobs[job.job_id]
            stored.parent_run_id = job.parent_run_id
            stored.trials_completed = job.trials_completed
            stored.best_run_id = job.best_run_id
            stored.best_metrics = dict(job.best_metrics)
            self._outbox_add(events)

    async def finish(self, job: Job, events: Sequence[PendingEvent] = ()) -> None:
        async with self._lock:
            stored = self.jobs[job.job_id]
            for name in ("status", "parent_run_id", "trials_completed", "best_run_id", "model_version",
                         "promoted", "champion_version", "error"):
                setattr(stored, name, getattr(job, name))
            stored.best_metrics = dict(job.best_metrics)
            stored.champion_metrics = dict(job.champion_metrics)
            stored.finished_at = _now()
            self._leases.pop(job.job_id, None)
            self._outbox_add(events)

    async def requeue(self, job_id: str, *, error: str, delay_s: float, count_attempt: bool = True) -> None:
        async with self._lock:
            stored = self.jobs[job_id]
            stored.status = JobStatus.QUEUED
            stored.error = error
            if not count_attempt:
                stored.attempts = max(stored.attempts - 1, 0)
            self._not_before[job_id] = _now() + timedelta(seconds=delay_s)
            self._leases.pop(job_id, None)

    async def request_cancel(self, job_id: str, queued_event: PendingEvent) -> Job | None:
        async with self._lock:
            stored = self.jobs.get(job_id)
            if stored is None:
                return None
            if stored.status is JobStatus.QUEUED:
                stored.status, stored.error, stored.finished_at = JobStatus.FAILED, "cancelled", _now()
                stored.cancel_requested = True
                self._outbox_add([queued_event])
            elif stored.status is JobStatus.RUNNING:
                stored.cancel_requested = True
            return self._copy(stored)

    async def add_events(self, events: Sequence[PendingEvent]) -> None:
        async with self._lock:
            self._outbox_add(events)

    async def pending_events(self, limit: int) -> list[OutboxEvent]:
        return [self._outbox[seq] for seq in sorted(self._outbox)[:limit]]


_JOB_COLUMNS = """job_id, request, status, created_at, started_at, finished_at, parent_run_id,
    trials_completed, best_run_id, best_metrics, model_version, promoted, champion_version,
    champion_metrics, error, attempts, cancel_requested"""


def _job_from_row(row: asyncpg.Record) -> Job:
    # Requests are stored as serialised gyre.events.v1.TrainingRequest messages (BYTEA).
    request = ev.TrainingRequest()
    request.ParseFromString(bytes(row["request"]))
    return Job(
        job_id=row["job_id"],
        request=request_from_proto(request),
        status=JobStatus(row["status"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        parent_run_id=row["parent_run_id"],
        trials_completed=row["trials_completed"],
        best_run_id=row["best_run_id"],
        best_metrics=_metrics(row["best_metrics"]),
        model_version=row["model_version"],
        promoted=row["promoted"],
        champion_version=row["champion_version"],
        champion_metrics=_metrics(row["champion_metrics"]),
        error=row["error"],
        attempts=row["attempts"],
        cancel_requested=row["cancel_requested"],
    )


def _metrics(value: Any) -> dict[str, float]:
    data = json.loads(value) if isinstance(value, str) else (value or {})
    return {str(k): float(v) for k, v in data.items()}


class PostgresJobStore(JobStore):
    """Jobs in the ``trainer`` schema (the pool's search_path points there)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @staticmethod
    async def _outbox_add(conn: asyncpg.Connection, events: Sequence[PendingEvent]) -> None:
        occurred = _now()
        await add_events(conn, [
            OutboxRow(TRAINING_EVENTS, e.message, e.message.model_name, e.event_id,
                      e.message.occurred_at.ToDatetime(UTC) if e.message.HasField("occurred_at") else occurred)
            for e in events
        ])

    async def submit(self, request: TrainingRequest, *, max_queued: int | None = None,
                     claim: EventClaim | None = None,
                     rejected: tuple[str, PendingEvent] | None = None) -> tuple[Job, bool]:
        job_id = job_id_for(request.request_id)
        async with self.pool.acquire() as conn, conn.transaction():
            if claim is not None and not await claim_event(conn, claim.consumer, claim.event_id):
                row = await conn.fetchrow(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = $1", job_id)
                if row is not None:
                    return _job_from_row(row), True
            if max_queued is not None and rejected is None:
                queued = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'queued'")
                if queued >= max_queued:
                    raise QueueFull(f"{queued} jobs are queued (limit {max_queued})")
            status, error = ("failed", rejected[0]) if rejected is not None else ("queued", "")
            # No conflict target: job_id is derived from request_id, and two concurrent submits may
            # collide on either unique index first (the primary key raised UniqueViolation once).
            row = await conn.fetchrow(
                f"INSERT INTO jobs (job_id, request_id, model_name, request, status, error, finished_at) "
                f"VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $5 = 'failed' THEN now() END) "
                f"ON CONFLICT DO NOTHING RETURNING {_JOB_COLUMNS}",
                job_id, request.request_id, request.model_name, request_to_proto(request).SerializeToString(),
                status, error,
            )
            if row is None:
                existing = await conn.fetchrow(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = $1", job_id)
                return _job_from_row(existing), True
            if rejected is not None:
                await self._outbox_add(conn, [rejected[1]])
            return _job_from_row(row), False

    async def get(self, job_id: str) -> Job | None:
        row = await self.pool.fetchrow(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = $1", job_id)
        return None if row is None else _job_from_row(row)

    async def get_by_request(self, request_id: str) -> Job | None:
        row = await self.pool.fetchrow(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE request_id = $1", request_id)
        return None if row is None else _job_from_row(row)

    async def list_jobs(self, *, model_name: str = "", limit: int = 100,
                        after: tuple[datetime, str] | None = None) -> list[Job]:
        created, job_id = after if after is not None else (None, None)
        rows = await self.pool.fetch(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE ($1 = '' OR model_name = $1) "
            "AND ($2::timestamptz IS NULL OR (created_at, job_id) < ($2, $3)) "
            "ORDER BY created_at DESC, job_id DESC LIMIT $4",
            model_name, created, job_id, limit,
        )
        return [_job_from_row(row) for row in rows]

    async def claim_next(self, worker: str, lease_s: float) -> Job | None:
        row = await self.pool.fetchrow(
            f"""UPDATE jobs SET status = 'running', attempts = attempts + 1,
                    started_at = coalesce(started_at, now()), lease_owner = $1,
                    lease_expires_at = now() + make_interval(secs => $2)
                WHERE job_id = (
                    SELECT job_id FROM jobs
                    WHERE (status = 'queued' AND not_before <= now())
                       OR (status = 'running' AND lease_expires_at < now())
                    ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
                RETURNING {_JOB_COLUMNS}""",
            worker, lease_s,
        )
        return None if row is None else _job_from_row(row)

    async def renew_lease(self, job_id: str, worker: str, lease_s: float) -> bool:
        status = await self.pool.execute(
            "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3) "
            "WHERE job_id = $1 AND lease_owner = $2 AND status = 'running'",
            job_id, worker, lease_s,
        )
        return status.endswith(" 1")

    async def save_progress(self, job: Job, events: Sequence[PendingEvent] = ()) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE jobs SET parent_run_id = $2, trials_completed = $3, best_run_id = $4, "
                "best_metrics = $5::jsonb WHERE job_id = $1",
                job.job_id, job.parent_run_id, job.trials_completed, job.best_run_id,
                json.dumps(job.best_metrics),
            )
            await self._outbox_add(conn, events)

    async def finish(self, job: Job, events: Sequence[PendingEvent] = ()) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """UPDATE jobs SET status = $2, finished_at = now(), parent_run_id = $3,
                       trials_completed = $4, best_run_id = $5, best_metrics = $6::jsonb,
                       model_version = $7, promoted = $8, champion_version = $9,
                       champion_metrics = $10::jsonb, error = $11, lease_owner = NULL,
                       lease_expires_at = NULL
                   WHERE job_id = $1""",
                job.job_id, job.status.value, job.parent_run_id, job.trials_completed, job.best_run_id,
                json.dumps(job.best_metrics), job.model_version, job.promoted, job.champion_version,
                json.dumps(job.champion_metrics), job.error,
            )
            await self._outbox_add(conn, events)

    async def requeue(self, job_id: str, *, error: str, delay_s: float, count_attempt: bool = True) -> None:
        await self.pool.execute(
            "UPDATE jobs SET status = 'queued', error = $2, not_before = now() + make_interval(secs => $3), "
            "attempts = CASE WHEN $4 THEN attempts ELSE greatest(attempts - 1, 0) END, "
            "lease_owner = NULL, lease_expires_at = NULL WHERE job_id = $1",
            job_id, error, delay_s, count_attempt,
        )

    async def request_cancel(self, job_id: str, queued_event: PendingEvent) -> Job | None:
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.fetchval("SELECT status FROM jobs WHERE job_id = $1 FOR UPDATE", job_id)
            if status is None:
                return None
            if status == "queued":
                await conn.execute(
                    "UPDATE jobs SET status = 'failed', error = 'cancelled', cancel_requested = true, "
                    "finished_at = now() WHERE job_id = $1", job_id)
                await self._outbox_add(conn, [queued_event])
            elif status == "running":
                await conn.execute("UPDATE jobs SET cancel_requested = true WHERE job_id = $1", job_id)
            row = await conn.fetchrow(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = $1", job_id)
            return _job_from_row(row)

    async def add_events(self, events: Sequence[PendingEvent]) -> None:
        async with self.pool.acquire() as conn:
            await self._outbox_add(conn, events)

    async def pending_events(self, limit: int) -> list[OutboxEvent]:
        rows = await self.pool.fetch(
            "SELECT seq, event_id, message_key, payload FROM outbox "
            "WHERE published_at IS NULL AND failed_at IS NULL ORDER BY seq LIMIT $1", limit)
        out = []
        for row in rows:
            message = ev.TrainingEvent()
            message.ParseFromString(bytes(row["payload"]))
            out.append(OutboxEvent(row["seq"], row["event_id"], row["message_key"], message))
        return out
