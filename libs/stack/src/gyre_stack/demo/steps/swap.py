"""f. Swap under load: the trainer answers the DRIFT request with version 2 and serving swaps it in while a
client keeps calling; no call may fail and the answers move once from version 1 to version 2."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

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
    rows = loop.sample(4096, seed=99)

    async def call(i: int) -> int:
        version, _, _ = await loop.infer_grpc(rows[i % len(rows):i % len(rows) + 1])
        return version

    async def accept(done: ev.TrainingEvent, v2: dict[str, Any]) -> None:
        loop.say(f"f. trainer: version 2 from request {done.request_id} "
                 f"(holdout {dict(sorted(done.metrics.items()))})")

    calls, switch = await swap_under_load(loop, call, CALL_PAUSE_S, lambda: loop.registered_version(2), accept)
    loop.say(f"f. serving swapped to version 2 under load: {calls} calls, 0 failed, "
             f"{switch} answered by v1 then {calls - switch} by v2")


async def swap_under_load(loop: Loop, call: Callable[[int], Awaitable[int]], pause_s: float,
                          fetch_v2: Callable[[], Awaitable[dict[str, Any]]],
                          accept: Callable[[ev.TrainingEvent, dict[str, Any]], Awaitable[None]]) -> tuple[int, int]:
    """While a client awaits ``call(i)`` (the model version answering its i-th request) every ``pause_s``
    seconds: wait for the end of the DRIFT request's job (``loop.summary["drift_request"]``), get v2 with
    ``fetch_v2``, check its lineage names the request, let ``accept(done event, v2)`` check and tell more,
    promote v2 and wait until serving has answered :data:`V2_CALLS` calls with it. Returns the number of
    calls and how many version 1 answered before the switch.

    Raises:
        LoopError: the job failed, v2 is not the request's, a call failed, or the answers did not move
            once from version 1 to version 2 (or whatever ``fetch_v2``/``accept`` raise).
    """
    plan = loop.plan
    request: ev.TrainingRequest = loop.summary["drift_request"]
    stop = asyncio.Event()
    versions: list[int] = []
    failures: list[str] = []

    async def client() -> None:
        # A well-behaved client: one row at a time, back to back; it must never see an error.
        i = 0
        while not stop.is_set():
            try:
                versions.append(await call(i))
            except grpc.RpcError as exc:
                failures.append(f"{exc.code()}: {exc.details()}")  # type: ignore[attr-defined]
            i += 1
            await asyncio.sleep(pause_s)

    task = asyncio.create_task(client())
    try:
        done = await loop.topics.wait(
            TRAINING_EVENTS, lambda m: m.request_id == request.request_id and m.status in ENDED,
            within_s=plan.deadline_s * 2, what=f"the end of the retraining job of request {request.request_id}")
        if done[0].status != ev.TRAINING_STATUS_SUCCEEDED:
            raise LoopError(f"retraining failed: {done[0].error}")
        v2 = await fetch_v2()
        if v2["lineage"].get("trainingRequestId") != request.request_id:
            raise LoopError(f"v2 lineage trainingRequestId is {v2['lineage'].get('trainingRequestId')!r}, "
                            f"expected the DRIFT request {request.request_id!r}")
        await accept(done[0], v2)
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
    return len(versions), switch
