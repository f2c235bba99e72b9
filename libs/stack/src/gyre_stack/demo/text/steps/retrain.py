"""f. Retrain and swap: the trainer answers the DRIFT request with version 2, trained on the corrected labels;
serving swaps it in while a client keeps sending texts; no call may fail and the answers move once from
version 1 to version 2."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_stack.demo.checks import LoopError
from gyre_stack.demo.steps.swap import swap_under_load
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
    texts = loop.data.sample(4096, seed=99)

    async def call(i: int) -> int:
        return (await loop.infer_grpc([texts[i % len(texts)]])).version

    async def accept(done: ev.TrainingEvent, v2: dict[str, Any]) -> None:
        lineage = v2["lineage"]
        await _check_corrected_data(loop, v2)
        loop.summary["v2"] = {"lineage": lineage, "metrics": dict(done.metrics)}
        loop.say(f"f. trainer: version 2 from request {done.request_id}, trained on the corrected labels "
                 f"(fingerprint {lineage['datasetFingerprint'][:12]}...; holdout "
                 f"{ {k: round(v, 4) for k, v in sorted(done.metrics.items())} })")

    calls, switch = await swap_under_load(loop.base, call, CALL_PAUSE_S, lambda: check_version(loop, 2), accept)
    loop.summary["swap"] = {"calls": calls, "v1": switch, "v2": calls - switch, "failed": 0}
    loop.say(f"f. serving swapped to version 2 under load: {calls} BYTES calls, 0 failed, "
             f"{switch} answered by v1 then {calls - switch} by v2")


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

