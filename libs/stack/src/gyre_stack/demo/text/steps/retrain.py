"""f. Retrain and swap: the trainer answers the DRIFT request with version 2, trained on the corrected labels;
serving swaps it in while a client keeps sending texts; no call may fail and the answers move once from
version 1 to version 2."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc

from gyre_common.topics import TRAINING_EVENTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_stack.demo.checks import LoopError, poll
from gyre_stack.demo.steps.promotion import promote
from gyre_stack.demo.steps.swap import V2_CALLS
from gyre_stack.demo.steps.training import ENDED
from gyre_stack.demo.text.steps.features import training_set
from gyre_stack.demo.text.steps.training import FEATURES_FINGERPRINT_TAG, check_version, version_tags

if TYPE_CHECKING:
    from gyre_stack.demo.text.loop import TextLoop

#: Pause between two calls of the client, in seconds. A text prediction costs serving milliseconds of
#: torch on the cores the trainer fine-tunes on: back to back (the tabular story's 0.02 s), version 2
#: took 196 s instead of 75 s on two cores; ten calls a second is still continuous traffic.
CALL_PAUSE_S = 0.1



async def run(loop: TextLoop) -> None:
    """Wait for the DRIFT request's job under client load; check v2 (format, lineage naming the request,
    trained on the corrected training set); promote it; watch the client's answers."""
    plan = loop.plan
    request: ev.TrainingRequest = loop.summary["drift_request"]
    stop = asyncio.Event()
    versions: list[int] = []
    failures: list[str] = []

    async def client() -> None:
        # A well-behaved client: one text at a time, back to back; it must never see an error.
        texts = loop.data.sample(4096, seed=99)
        i = 0
        while not stop.is_set():
            try:
                versions.append((await loop.infer_grpc([texts[i % len(texts)]])).version)
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
        v2 = await check_version(loop, 2)
        lineage = v2["lineage"]
        if lineage.get("trainingRequestId") != request.request_id:
            raise LoopError(f"v2 lineage trainingRequestId is {lineage.get('trainingRequestId')!r}, "
                            f"expected the DRIFT request {request.request_id!r}")
        await _check_corrected_data(loop, v2)
        loop.summary["v2"] = {"lineage": lineage, "metrics": dict(done[0].metrics)}
        loop.say(f"f. trainer: version 2 from request {request.request_id}, trained on the corrected labels "
                 f"(fingerprint {lineage['datasetFingerprint'][:12]}...; holdout "
                 f"{ {k: round(v, 4) for k, v in sorted(done[0].metrics.items())} })")
        await promote(loop.base, v2)
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
    loop.summary["swap"] = {"calls": len(versions), "v1": switch, "v2": len(versions) - switch, "failed": 0}
    loop.say(f"f. serving swapped to version 2 under load: {len(versions)} BYTES calls, 0 failed, "
             f"{switch} answered by v1 then {len(versions) - switch} by v2")


async def _check_corrected_data(loop: TextLoop, v2: dict[str, Any]) -> None:
    """v2's dataset is the view's whole training set as it is now, with the corrections, and not v1's: the
    trainer's dataset fingerprint differs from v1's (the rows are the same, only labels changed), and the
    features service's fingerprint the trainer recorded (tag ``gyre.features.fingerprint``) is the
    corrected training set's.

    Raises:
        LoopError: v2's fingerprint is v1's, or not that of the corrected training set.
    """
    fingerprint = v2["lineage"]["datasetFingerprint"]
    v1 = loop.summary["v1"]["lineage"]["datasetFingerprint"]
    if fingerprint == v1:
        raise LoopError(f"v2 was trained on v1's dataset (fingerprint {v1}): the corrections are not in it")
    now = await training_set(loop, whole=True)
    recorded = version_tags(v2).get(FEATURES_FINGERPRINT_TAG)
    if recorded != now["fingerprint"] or now["fingerprint"] != loop.summary["fingerprint_after"]:
        raise LoopError(f"v2 records the features' training set fingerprint {recorded!r}; the corrected training "
                        f"set's is {now['fingerprint']!r} (over the first window: "
                        f"{loop.summary['fingerprint_after']!r})")

