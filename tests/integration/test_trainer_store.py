"""The job store contract, run against PostgreSQL and the in-memory twin alike."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gyre_common.db import migrate
from gyre_trainer import training_events as events
from gyre_trainer.domain.jobs import JobStatus, TrainingReason, TrainingRequest, job_id_for
from gyre_trainer.store import EventClaim, InMemoryJobStore, JobStore, PendingEvent, PostgresJobStore, QueueFull

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgres", "memory"])
async def store(request: pytest.FixtureRequest, postgres_admin_url: str) -> AsyncIterator[JobStore]:
    if request.param == "memory":
        yield InMemoryJobStore()
        return
    name = f"gyre_trainer_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{postgres_admin_url.rpartition('/')[0]}/{name}"
    await migrate(url, "trainer", "gyre_trainer.migrations")
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4, server_settings={"search_path": "trainer"})
    try:
        yield PostgresJobStore(pool)
    finally:
        await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def request(request_id: str, model: str = "m") -> TrainingRequest:
    return TrainingRequest(request_id=request_id, model_name=model, feature_view="v", label="y",
                           reason=TrainingReason.MANUAL)


async def test_submit_is_idempotent_on_request_id_and_claim(store: JobStore) -> None:
    job, duplicate = await store.submit(request("r1"), claim=EventClaim("g", "e1"))
    assert not duplicate and job.job_id == job_id_for("r1") and job.status is JobStatus.QUEUED
    assert job.request.request_id == "r1" and job.created_at.tzinfo is not None
    again, duplicate = await store.submit(request("r1"), claim=EventClaim("g", "e1"))
    assert duplicate and again.job_id == job.job_id
    _, duplicate = await store.submit(request("r1"), claim=EventClaim("g", "e2"))
    assert duplicate
    _, duplicate = await store.submit(request("r1"))
    assert duplicate


async def test_concurrent_submits_make_one_job(store: JobStore) -> None:
    results = await asyncio.gather(*(store.submit(request("same")) for _ in range(8)))
    assert sum(1 for _, duplicate in results if not duplicate) == 1
    assert len({job.job_id for job, _ in results}) == 1


async def test_queue_limit_and_rejected_jobs(store: JobStore) -> None:
    await store.submit(request("a"), max_queued=2)
    await store.submit(request("b"), max_queued=2)
    with pytest.raises(QueueFull):
        await store.submit(request("c"), max_queued=2)
    placeholder, _ = await store.submit(request("a"))
    bad = request("bad")
    job, _ = await store.submit(bad, rejected=("invalid request: reason", events.failed(placeholder, "x")))
    assert job.status is JobStatus.FAILED and job.error == "invalid request: reason" and job.finished_at


async def test_claim_lease_progress_finish(store: JobStore) -> None:
    await store.submit(request("r1"))
    await store.submit(request("r2"))
    first = await store.claim_next("w1", 30)
    second = await store.claim_next("w2", 30)
    assert first is not None and second is not None
    assert (first.request_id, second.request_id) == ("r1", "r2")
    assert first.status is JobStatus.RUNNING and first.attempts == 1 and first.started_at is not None
    assert await store.claim_next("w3", 30) is None
    assert await store.renew_lease(first.job_id, "w1", 30)
    assert not await store.renew_lease(first.job_id, "w2", 30)

    first.parent_run_id, first.trials_completed = "parent", 2
    first.best_run_id, first.best_metrics = "best", {"val_roc_auc": 0.9}
    await store.save_progress(first, [PendingEvent("ev-1", events.started(first).message)])
    stored = await store.get(first.job_id)
    assert stored is not None and stored.trials_completed == 2 and stored.best_metrics == {"val_roc_auc": 0.9}

    first.status, first.model_version, first.promoted = JobStatus.SUCCEEDED, 3, True
    first.champion_version, first.champion_metrics = 2, {"roc_auc": 0.8}
    await store.finish(first, [PendingEvent("ev-2", events.failed(first, "never").message)])
    done = await store.get_by_request("r1")
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.model_version == 3 and done.promoted
    assert done.champion_metrics == {"roc_auc": 0.8} and done.finished_at is not None
    assert not await store.renew_lease(first.job_id, "w1", 30)


async def test_expired_leases_are_taken_over_and_requeue_waits(store: JobStore) -> None:
    await store.submit(request("r1"))
    job = await store.claim_next("w1", 0.05)
    assert job is not None
    await asyncio.sleep(0.1)  # let the lease expire: this is the behaviour under test, not a sync
    taken = await store.claim_next("w2", 30)
    assert taken is not None and taken.job_id == job.job_id and taken.attempts == 2
    await store.requeue(job.job_id, error="later", delay_s=3600)
    assert await store.claim_next("w3", 30) is None
    queued = await store.get(job.job_id)
    assert queued is not None and queued.status is JobStatus.QUEUED and queued.error == "later"
    await store.requeue(job.job_id, error="", delay_s=0, count_attempt=False)
    again = await store.claim_next("w3", 30)
    assert again is not None and again.attempts == 2


async def test_cancel(store: JobStore) -> None:
    queued, _ = await store.submit(request("q"))
    cancelled = await store.request_cancel(queued.job_id, events.failed(queued, "cancelled"))
    assert cancelled is not None and cancelled.status is JobStatus.FAILED and cancelled.error == "cancelled"
    await store.submit(request("r"))
    running = await store.claim_next("w", 30)
    assert running is not None
    flagged = await store.request_cancel(running.job_id, events.failed(running, "cancelled"))
    assert flagged is not None and flagged.status is JobStatus.RUNNING and flagged.cancel_requested
    assert await store.request_cancel("missing", events.failed(running, "cancelled")) is None
    assert [e.message.request_id for e in await store.pending_events(10)] == ["q"]


async def test_outbox_order_and_dedupe(store: JobStore) -> None:
    job, _ = await store.submit(request("r"))
    first, second = events.started(job), events.failed(job, "x")
    await store.add_events([first, second, first])
    pending = await store.pending_events(10)
    assert [p.event_id for p in pending] == [first.event_id, second.event_id]
    assert pending[0].key == "m" and pending[1].message.error == "x"


async def test_listing(store: JobStore) -> None:
    for i in range(4):
        await store.submit(request(f"r{i}", model="a" if i < 2 else "b"))
    jobs = await store.list_jobs(limit=10)
    assert [j.request_id for j in jobs] == ["r3", "r2", "r1", "r0"]
    assert [j.request_id for j in await store.list_jobs(model_name="a")] == ["r1", "r0"]
    after = (jobs[1].created_at, jobs[1].job_id)
    assert [j.request_id for j in await store.list_jobs(after=after)] == ["r1", "r0"]
