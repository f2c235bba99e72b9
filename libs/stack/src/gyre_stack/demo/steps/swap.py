"""f. Swap under load: the trainer answers the DRIFT request with version 2 and serving swaps it in while a
client keeps calling; no call may fail and the answers move once from version 1 to version 2."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc

from gyre_common.topics import TRAINING_EVENTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_stack.demo.checks import LoopError, poll
from gyre_stack.demo.steps.promotion import promote
from gyre_stack.demo.steps.training import ENDED

if TYPE_CHECKING:
    from gyre_stack.demo.loop import Loop

#: Calls version 2 must answer after serving reports it ready before the swap counts as done.
V2_CALLS = 20
#: Pause between two calls of the client, in seconds: back to back, without starving the event loop.
CALL_PAUSE_S = 0.02


async def run(loop: Loop) -> None:
    """Wait for the DRIFT request's job, check v2's lineage, promote it, and watch the client's answers."""
    plan = loop.plan
    request: ev.TrainingRequest = loop.summary["drift_request"]
    stop = asyncio.Event()
    versions: list[int] = []
    failures: list[str] = []

    async def client() -> None:
        # A well-behaved client: one row at a time, back to back; it must never see an error.
        rows = loop.sample(4096, seed=99)
        i = 0
        while not stop.is_set():
            try:
                version, _, _ = await loop.infer_grpc(rows[i % len(rows):i % len(rows) + 1])
                versions.append(version)
            except grpc.RpcError as exc:
                failures.append(f"{exc.code()}: {exc.details()}")  # type: ignore[attr-defined]
            i += 1
            await asyncio.sleep(CALL_PAUSE_S)

    task = asyncio.create_task(client())
    try:
        done = await loop.topics.wait(
            TRAINING_EVENTS, lambda m: m.request_id == request.request_id and m.status in ENDED,
            within_s=plan.deadline_s * 2, what=f"the end of the retraining job of request {request.request_id}")
        if done[0].status != ev.TRAINING_STATUS_SUCCEEDED:
            raise LoopError(f"retraining failed: {done[0].error}")
        v2 = await loop.registered_version(2)
        if v2["lineage"].get("trainingRequestId") != request.request_id:
            raise LoopError(f"v2 lineage trainingRequestId is {v2['lineage'].get('trainingRequestId')!r}, "
                            f"expected the DRIFT request {request.request_id!r}")
        loop.say(f"f. trainer: version 2 from request {request.request_id} "
                 f"(holdout {dict(sorted(done[0].metrics.items()))})")
        await promote(loop, v2)
        await poll(lambda: loop.model_ready(2), within_s=plan.deadline_s, what="serving to load version 2")
        served = len(versions)

        async def enough_v2() -> bool:
            return len(versions) >= served + V2_CALLS and versions[-1] == 2
        await poll(enough_v2, within_s=plan.deadline_s, what="the client loop to be answered by version 2")
    finally:
        stop.set()
        await task
    if failures:
        raise LoopError(f"{len(failures)} of {len(versions) + len(failures)} calls failed during the swap: "
                        f"{failures[:3]}")
    switch = versions.index(2) if 2 in versions else len(versions)
    if set(versions[:switch]) - {1} or set(versions[switch:]) != {2}:
        raise LoopError(f"responses did not move once from version 1 to 2: {versions}")
    loop.say(f"f. serving swapped to version 2 under load: {len(versions)} calls, 0 failed, "
             f"{switch} answered by v1 then {len(versions) - switch} by v2")
