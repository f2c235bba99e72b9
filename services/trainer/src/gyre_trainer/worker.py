"""The job worker: claims queued jobs from the store and runs them, a few at a time.

Jobs are claimed from PostgreSQL with ``FOR UPDATE SKIP LOCKED`` under a lease, so any number of
trainer replicas share one queue and a job whose replica died is taken over once its lease
expires. The CPU-bound search runs in a worker thread, so the event loop (gRPC, HTTP, the Kafka
consumer's heartbeats, the lease renewals) keeps running while a job trains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

from gyre_trainer.domain.jobs import Job
from gyre_trainer.runner import CancelToken, JobRunner
from gyre_trainer.store import JobStore

log = logging.getLogger(__name__)


class JobWorker:
    """Runs queued jobs (a runner background task: ``start``/``stop``).

    Args:
        store: the job queue.
        runner: runs one job.
        concurrency: jobs run at once by this replica.
        poll_interval_s: seconds between looks at the queue when nothing woke the worker.
        lease_s: lease of a running job in seconds; renewed every third of it.
    """

    def __init__(self, store: JobStore, runner: JobRunner, *, concurrency: int = 1, poll_interval_s: float = 2.0,
                 lease_s: float = 60.0) -> None:
        self.store = store
        self.runner = runner
        self.concurrency = concurrency
        self.poll_interval_s = poll_interval_s
        self.lease_s = lease_s
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.running: dict[str, CancelToken] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Look at the queue now (called after a local submit)."""
        self._wake.set()

    def cancel_local(self, job_id: str) -> bool:
        """Stop a job this replica runs at its next trial; False when it runs elsewhere (the runner
        then sees ``cancel_requested`` in the store after its next trial)."""
        token = self.running.get(job_id)
        if token is None:
            return False
        token.cancel("cancelled")
        return True

    async def start(self) -> None:
        """Start claiming jobs."""
        self._loop_task = asyncio.create_task(self._loop(), name="trainer-job-worker")

    async def stop(self) -> None:
        """Stop claiming; ask running jobs to stop at their next trial (they go back to the queue)
        and wait for them."""
        self._stopping = True
        self._wake.set()
        for token in self.running.values():
            token.cancel("shutdown")
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._jobs:
            await asyncio.gather(*self._jobs, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._stopping:
            claimed = False
            if len(self._jobs) < self.concurrency:
                try:
                    job = await self.store.claim_next(self.worker_id, self.lease_s)
                except Exception as exc:  # the database may be away for a while; readiness reports it
                    log.warning("cannot claim training jobs: %r", exc)
                    job = None
                if job is not None:
                    claimed = True
                    task = asyncio.create_task(self._run(job), name=f"trainer-job-{job.job_id}")
                    self._jobs.add(task)
                    task.add_done_callback(self._job_done)
            if claimed and len(self._jobs) < self.concurrency:
                continue  # maybe more work is waiting
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        self._wake.set()  # a slot is free

    async def _run(self, job: Job) -> None:
        token = CancelToken()
        self.running[job.job_id] = token
        renewer = asyncio.create_task(self._renew(job.job_id, token))
        try:
            await self.runner.run(job, token)
        except Exception:
            log.exception("training job %s crashed the worker slot", job.job_id)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            self.running.pop(job.job_id, None)

    async def _renew(self, job_id: str, token: CancelToken) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if not await self.store.renew_lease(job_id, self.worker_id, self.lease_s):
                    token.cancel("lease lost")
                    return
            except Exception as exc:  # keep trying: the lease has two more thirds to go
                log.warning("renewing the lease of job %s failed: %r", job_id, exc)
