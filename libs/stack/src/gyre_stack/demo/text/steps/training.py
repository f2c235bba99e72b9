"""b. Fine-tune: ``gyre train --backend torch-text`` asks for a text classifier; its trials land in tracking
with per-epoch curves, version 1 (safetensors-text, BYTES in) in the registry and production -> 1."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from gyre_common.topics import REGISTRY_EVENTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_stack.demo.checks import LoopError, get_json
from gyre_stack.demo.steps.training import gyre_train, wait_trained
from gyre_stack.demo.text.plan import LABEL, TEXT_FEATURE
from gyre_stack.demo.text.steps.features import WINDOW

if TYPE_CHECKING:
    from gyre_stack.demo.text.loop import TextLoop

#: Registry model format of a Gyre text model (gyre_ml.text_model.MODEL_FORMAT; not imported: torch).
MODEL_FORMAT = "safetensors-text"
#: Version tag where the trainer records the features service's fingerprint of the training set.
FEATURES_FINGERPRINT_TAG = "gyre.features.fingerprint"
#: Metrics every trial logs once per epoch (its learning curves).
CURVES = ("train_loss", "val_accuracy")


async def run(loop: TextLoop) -> None:
    """Train over the corpus's window with the torch-text backend; check training.events, the trials'
    metric history in tracking, v1's format, signature and lineage, and production -> 1."""
    plan = loop.plan
    request_id = f"demo-text-{uuid.uuid4()}"
    job = await gyre_train(loop.base, request_id, LABEL, WINDOW[0], WINDOW[1],
                           ["--backend", "torch-text", "--text-feature", TEXT_FEATURE])
    loop.say(f"b. `gyre train --backend torch-text --text-feature {TEXT_FEATURE} --max-evals {plan.max_evals}` "
             f"queued job {job['job_id']} (request {request_id})")

    done, trials = await wait_trained(loop.base, request_id)
    if done[0].model_version != 1:
        raise LoopError(f"the first training registered version {done[0].model_version}, expected 1")
    loop.say(f"b. training.events: {len(trials)} TRIAL_COMPLETED, SUCCEEDED -> version 1 "
             f"(holdout {_rounded(done[0].metrics)}; best trial {dict(sorted(done[0].params.items()))})")

    curves = await check_curves(loop, trials)
    loop.say(f"b. tracking: every trial's run has per-epoch metric history ({', '.join(CURVES)}): "
             f"{curves} points in all")
    registered = await check_version(loop, 1)
    lineage = registered["lineage"]
    if lineage.get("trainingRequestId") != request_id or lineage.get("label") != LABEL \
            or lineage.get("featureViews") != [plan.feature_view]:
        raise LoopError(f"v1 lineage does not name request {request_id}, view {plan.feature_view}, label {LABEL}: "
                        f"{lineage}")
    recorded = version_tags(registered).get(FEATURES_FINGERPRINT_TAG)
    if recorded != loop.summary["fingerprint_before"]:
        raise LoopError(f"v1 records the features' training set fingerprint {recorded!r}, expected the one step a "
                        f"saw: {loop.summary['fingerprint_before']!r}")
    await loop.base.wait_alias("production", 1)
    await loop.topics.wait(REGISTRY_EVENTS, lambda m: m.model_name == plan.model and m.version == 1
                           and m.kind == ev.REGISTRY_EVENT_KIND_ALIAS_SET and m.alias == "production",
                           within_s=plan.deadline_s, what="RegistryEvent ALIAS_SET production -> 1")
    loop.summary["v1"] = {"request_id": request_id, "lineage": lineage, "trials": len(trials)}
    loop.say(f"b. registry: v1 ({MODEL_FORMAT}, BYTES input {TEXT_FEATURE!r}) with lineage (fingerprint "
             f"{lineage['datasetFingerprint'][:12]}..., text reference profile), production -> 1")


async def check_curves(loop: TextLoop, trials: list[ev.TrainingEvent]) -> int:
    """Each trial's run in tracking has one point per epoch (steps 1..epochs) of every CURVES metric;
    returns the number of points checked.

    Raises:
        LoopError: a trial has no run, or a curve misses an epoch.
    """
    base = loop.endpoints["tracking"].http + "/api/v1"
    points = 0
    for trial in trials:
        epochs = int(float(trial.params.get("epochs", "0")))
        if not trial.run_id or epochs < 1:
            raise LoopError(f"trial {trial.trial_number} has run {trial.run_id!r} and params {dict(trial.params)}")
        for key in CURVES:
            body = await get_json(loop.http, f"{base}/runs/{trial.run_id}/metric-history", key=key)
            steps = sorted(int(m.get("step", 0)) for m in (body or {}).get("metrics", []))
            if steps != list(range(1, epochs + 1)):
                raise LoopError(f"trial {trial.trial_number} (run {trial.run_id}, {epochs} epochs) has {key} at "
                                f"steps {steps}, expected one point per epoch")
            points += len(steps)
    return points


async def check_version(loop: TextLoop, version: int) -> dict[str, Any]:
    """Version ``version`` as the registry shows it, once it is a safetensors-text model whose signature
    takes the text as BYTES and whose lineage has a fingerprint and a reference profile.

    Raises:
        LoopError: it is not.
    """
    registered = await loop.base.registered_version(version)
    fmt = (registered.get("artifact") or {}).get("format")
    inputs = [(t.get("name"), t.get("datatype")) for t in (registered.get("signature") or {}).get("inputs", [])]
    if fmt != MODEL_FORMAT or inputs != [(TEXT_FEATURE, "BYTES")]:
        raise LoopError(f"v{version} has format {fmt!r} and inputs {inputs}, expected {MODEL_FORMAT} with "
                        f"[({TEXT_FEATURE!r}, 'BYTES')]: {registered}")
    lineage = registered.get("lineage") or {}
    for key in ("datasetFingerprint", "runId", "metrics", "referenceProfile"):
        if not lineage.get(key):
            raise LoopError(f"v{version} lineage lacks {key}: {lineage}")
    return registered


def _rounded(metrics: Any) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in sorted(metrics.items())}


def version_tags(version: dict[str, Any]) -> dict[str, str]:
    """A registry version's tags as a dict, whether the JSON holds a map or a list of key/value pairs."""
    tags = version.get("tags") or {}
    if isinstance(tags, dict):
        return {str(k): str(v) for k, v in tags.items()}
    return {str(t.get("key")): str(t.get("value")) for t in tags}
