"""b. Train: ``gyre train`` asks for a model; its trials land in tracking, version 1 in the registry."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from gyre_common.topics import REGISTRY_EVENTS, TRAINING_EVENTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_stack.demo.checks import LoopError, get_json
from gyre_stack.demo.data import T0, rfc3339

if TYPE_CHECKING:
    from gyre_stack.demo.loop import Loop

#: Statuses that end a training job.
ENDED = (ev.TRAINING_STATUS_SUCCEEDED, ev.TRAINING_STATUS_FAILED)


async def run(loop: Loop) -> None:
    """Train over the whole window with ``--promote-to production``; check training.events, tracking's runs,
    v1's lineage, the production alias and the registry events."""
    plan = loop.plan
    request_id = f"demo-{uuid.uuid4()}"
    start, end = T0, T0 + timedelta(days=1)
    job = await gyre_train(loop, request_id, "target", start, end)
    loop.say(f"b. `gyre train --max-evals {plan.max_evals} --promote-to production` queued job {job['job_id']} "
             f"(request {request_id})")

    def mine(m: ev.TrainingEvent) -> bool:
        return m.request_id == request_id
    await loop.topics.wait(TRAINING_EVENTS, lambda m: mine(m) and m.status == ev.TRAINING_STATUS_STARTED,
                           within_s=plan.deadline_s, what="TrainingEvent STARTED")
    loop.say("b. training.events: STARTED")
    done, trials = await wait_trained(loop, request_id)
    version = done[0].model_version
    if version != 1:
        raise LoopError(f"the first training registered version {version}, expected 1")
    loop.say(f"b. training.events: {len(trials)} TRIAL_COMPLETED, SUCCEEDED -> version {version} "
             f"(holdout {dict(sorted(done[0].metrics.items()))})")

    await _check_runs(loop, plan.max_evals)
    registered = await loop.registered_version(1)
    lineage = registered["lineage"]
    expected = {"trainingRequestId": request_id, "featureViews": [plan.feature_view],
                "windowStart": rfc3339(start), "windowEnd": rfc3339(end), "label": "target"}
    for key, value in expected.items():
        got = lineage.get(key)
        if key.startswith("window"):
            got = got and rfc3339(datetime.fromisoformat(got.replace("Z", "+00:00")))
        if got != value:
            raise LoopError(f"v1 lineage {key} is {got!r}, expected {value!r}: {lineage}")
    for key in ("datasetFingerprint", "runId", "metrics", "referenceProfile"):
        if not lineage.get(key):
            raise LoopError(f"v1 lineage lacks {key}: {lineage}")
    await loop.wait_alias("production", 1)
    await loop.topics.wait(REGISTRY_EVENTS, lambda m: m.model_name == plan.model and m.version == 1
                           and m.kind == ev.REGISTRY_EVENT_KIND_VERSION_CREATED,
                           within_s=plan.deadline_s, what="RegistryEvent VERSION_CREATED v1")
    await loop.topics.wait(REGISTRY_EVENTS, lambda m: m.model_name == plan.model and m.version == 1
                           and m.kind == ev.REGISTRY_EVENT_KIND_ALIAS_SET and m.alias == "production",
                           within_s=plan.deadline_s, what="RegistryEvent ALIAS_SET production -> 1")
    loop.summary["v1"] = {"request_id": request_id, "lineage": lineage}
    loop.say(f"b. registry: v1 with lineage (run {lineage['runId']}, fingerprint "
             f"{lineage['datasetFingerprint'][:12]}..., reference profile), production -> 1; "
             "VERSION_CREATED + ALIAS_SET on registry.events")


async def gyre_train(loop: Loop, request_id: str, label: str, start: datetime, end: datetime,
                     extra: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``gyre train`` for the plan's model and view over [start, end) with ``--promote-to production``
    and ``extra`` arguments (before the window), waiting for it to exit; the job it queued.

    Raises:
        LoopError: ``gyre train`` exited non-zero (its stderr and stdout in the message).
    """
    plan = loop.plan
    command = [*loop.gyre_cli, "--trainer", loop.endpoints["trainer"].grpc, "train",
               "--model", plan.model, "--feature-view", plan.feature_view, "--label", label, *extra,
               "--start", rfc3339(start), "--end", rfc3339(end), "--max-evals", str(plan.max_evals),
               "--promote-to", "production", "--request-id", request_id]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    if process.returncode != 0:
        raise LoopError(f"`gyre train` exited {process.returncode}: {err.decode()} {out.decode()}")
    job: dict[str, Any] = json.loads(out)["job"]
    return job


async def wait_trained(loop: Loop, request_id: str) -> tuple[list[ev.TrainingEvent], list[ev.TrainingEvent]]:
    """Wait (up to twice the plan's deadline) for the end of request ``request_id``'s job; its end event
    (as a one-element list) and its TRIAL_COMPLETED events.

    Raises:
        LoopError: the job failed, or fewer distinct trials completed than the plan's ``max_evals``.
    """
    plan = loop.plan

    def mine(m: ev.TrainingEvent) -> bool:
        return m.request_id == request_id
    done = await loop.topics.wait(TRAINING_EVENTS, lambda m: mine(m) and m.status in ENDED,
                                  within_s=plan.deadline_s * 2, what="TrainingEvent SUCCEEDED")
    if done[0].status != ev.TRAINING_STATUS_SUCCEEDED:
        raise LoopError(f"training failed: {done[0].error}")
    trials = loop.topics.of(TRAINING_EVENTS, lambda m: mine(m) and m.status == ev.TRAINING_STATUS_TRIAL_COMPLETED)
    if len({t.trial_number for t in trials}) < plan.max_evals:
        raise LoopError(f"{len(trials)} TRIAL_COMPLETED events, expected {plan.max_evals}")
    return done, trials


async def _check_runs(loop: Loop, at_least: int) -> None:
    """Tracking holds at least ``at_least`` runs with params and metrics in the model's experiment."""
    base = loop.endpoints["tracking"].http + "/api/v1"
    name = f"{loop.plan.experiment_prefix}{loop.plan.model}"
    experiment = await get_json(loop.http, f"{base}/experiments/by-name/{name}")
    if experiment is None:
        raise LoopError(f"tracking has no experiment {name!r}")
    experiment_id = experiment["experiment"]["experiment_id"]
    response = await loop.http.post(f"{base}/runs/search", json={"experiment_ids": [experiment_id],
                                                                  "page_size": 1000})
    response.raise_for_status()
    runs = response.json().get("runs", [])
    trials = [r for r in runs if r.get("data", {}).get("params") and r.get("data", {}).get("metrics")]
    if len(trials) < at_least:
        raise LoopError(f"tracking has {len(trials)} runs with params and metrics in experiment "
                        f"{experiment_id}, expected at least {at_least}")
    loop.say(f"b. tracking: {len(runs)} runs in experiment {name}, "
             f"{len(trials)} with params and metrics")
