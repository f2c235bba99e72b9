"""Job handling: idempotent submission from the API and the bus, validation, queue limit, listing,
cancellation (in-memory store, no I/O)."""

from __future__ import annotations

import pytest

from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_trainer.auth import TokenAuth, Unauthenticated
from gyre_trainer.convert import request_from_proto
from gyre_trainer.domain.jobs import InvalidRequest, JobStatus, TrainingPolicy, TrainingRequest, job_id_for
from gyre_trainer.handlers import JobAlreadyEnded, JobNotFound, TrainerHandlers
from gyre_trainer.store import EventClaim, InMemoryJobStore, QueueFull


def message(request_id: str = "r1", **changes: object) -> ev.TrainingRequest:
    built = ev.TrainingRequest(request_id=request_id, model_name="m", feature_view="v", label="y",
                               reason=ev.TRAINING_REASON_DRIFT)
    for key, value in changes.items():
        setattr(built, key, value)
    return built


def request(request_id: str = "r1", **changes: object) -> TrainingRequest:
    return request_from_proto(message(request_id, **changes))


@pytest.fixture
def service() -> TrainerHandlers:
    return TrainerHandlers(InMemoryJobStore(), TrainingPolicy(max_queued_jobs=3))


async def test_a_request_id_makes_one_job(service: TrainerHandlers) -> None:
    woken: list[int] = []
    service._wake = lambda: woken.append(1)
    job, duplicate = await service.submit(request())
    assert not duplicate and job.status is JobStatus.QUEUED and job.job_id == job_id_for("r1")
    again, duplicate = await service.submit(request())
    assert duplicate and again.job_id == job.job_id and woken == [1]
    assert job.request.requested_at is not None


async def test_a_redelivered_event_after_success_does_not_train_again(service: TrainerHandlers) -> None:
    claim = EventClaim("trainer", "ce-1")
    await service.submit(request(), claim=claim)
    finished = await service.store.claim_next("w", 60)
    assert finished is not None
    finished.status = JobStatus.SUCCEEDED
    await service.store.finish(finished)
    again, duplicate = await service.submit(request(), claim=claim)
    assert duplicate and again.status is JobStatus.SUCCEEDED
    # A new event (another ce_id) carrying the same request id is a duplicate too.
    _, duplicate = await service.submit(request(), claim=EventClaim("trainer", "ce-2"))
    assert duplicate
    assert await service.store.claim_next("w", 60) is None


@pytest.mark.parametrize(("changes", "field"), [
    ({"model_name": ""}, "model_name"),
    ({"label": " "}, "label"),
    ({"reason": ev.TRAINING_REASON_UNSPECIFIED}, "reason"),
])
async def test_invalid_requests_are_refused_by_the_api(service: TrainerHandlers, changes: dict[str, object],
                                                       field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        await service.submit(request(**changes))
    assert info.value.field == field


async def test_window_and_search_are_checked(service: TrainerHandlers) -> None:
    bad = message()
    bad.window_start.FromJsonString("2026-02-01T00:00:00Z")
    bad.window_end.FromJsonString("2026-01-01T00:00:00Z")
    with pytest.raises(InvalidRequest, match="window_end"):
        await service.submit(request_from_proto(bad))
    bad = message()
    bad.search.estimator_families.append("deep_magic")
    with pytest.raises(InvalidRequest, match="deep_magic"):
        await service.submit(request_from_proto(bad))
    bad = message()
    bad.search.max_evals = 10_000
    with pytest.raises(InvalidRequest, match="max_evals"):
        await service.submit(request_from_proto(bad))


async def test_an_invalid_request_from_the_bus_becomes_a_failed_job_with_an_event(service: TrainerHandlers) -> None:
    job, duplicate = await service.submit(request(request_id="", reason=0), claim=EventClaim("trainer", "ce-9"))
    assert not duplicate and job.status is JobStatus.FAILED and "request_id" in job.error
    assert job.request_id == "ce:ce-9"
    events = await service.store.pending_events(10)
    assert [e.message.status for e in events] == [ev.TRAINING_STATUS_FAILED]
    _, duplicate = await service.submit(request(request_id="", reason=0), claim=EventClaim("trainer", "ce-9"))
    assert duplicate


async def test_the_queue_limit_applies_to_the_api_only(service: TrainerHandlers) -> None:
    for i in range(3):
        await service.submit(request(f"r{i}"))
    with pytest.raises(QueueFull):
        await service.submit(request("r3"))
    _, duplicate = await service.submit(request("r3"), claim=EventClaim("trainer", "ce"))
    assert not duplicate


async def test_listing_pages_newest_first(service: TrainerHandlers) -> None:
    service.policy = TrainingPolicy(max_queued_jobs=100)
    for i in range(5):
        await service.submit(request(f"r{i}", model_name="a" if i % 2 else "b"))
    page, token = await service.list_jobs(page_size=2)
    assert [j.request_id for j in page] == ["r4", "r3"] and token
    rest, token2 = await service.list_jobs(page_size=10, page_token=token)
    assert [j.request_id for j in rest] == ["r2", "r1", "r0"] and token2 == ""
    only_a, _ = await service.list_jobs(model_name="a")
    assert [j.request_id for j in only_a] == ["r3", "r1"]
    with pytest.raises(ValueError, match="page_token"):
        await service.list_jobs(page_token="garbage!")


async def test_cancel(service: TrainerHandlers) -> None:
    job, _ = await service.submit(request())
    cancelled = await service.cancel(job.job_id)
    assert cancelled.status is JobStatus.FAILED and cancelled.error == "cancelled"
    assert (await service.store.pending_events(10))[-1].message.error == "cancelled"
    with pytest.raises(JobAlreadyEnded):
        await service.cancel(job.job_id)
    with pytest.raises(JobNotFound):
        await service.cancel("nope")
    running, _ = await service.submit(request("r2"))
    await service.store.claim_next("w", 60)
    flagged = await service.cancel(running.job_id)
    assert flagged.status is JobStatus.RUNNING and flagged.cancel_requested


async def test_get_job(service: TrainerHandlers) -> None:
    job, _ = await service.submit(request())
    assert (await service.get_job(request_id="r1")).job_id == job.job_id
    with pytest.raises(JobNotFound):
        await service.get_job(job_id="missing")
    with pytest.raises(ValueError):
        await service.get_job()


def test_token_auth() -> None:
    from pydantic import SecretStr

    assert TokenAuth(None).subject(None) == "anonymous"
    auth = TokenAuth(SecretStr("alice:s3cret, trainer:t0k"))
    assert auth.subject("Bearer s3cret") == "alice" and auth.subject("bearer t0k") == "trainer"
    for bad in (None, "Bearer nope", "Basic s3cret"):
        with pytest.raises(Unauthenticated):
            auth.subject(bad)
