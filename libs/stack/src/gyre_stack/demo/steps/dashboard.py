"""g. Dashboard: the operators' overview shows every service, both versions, drift, quality, the job, the alert."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_stack.demo.checks import LoopError, get_json, poll
from gyre_stack.demo.data import FEEDBACK_ROWS

if TYPE_CHECKING:
    from gyre_stack.demo.loop import Loop


async def run(loop: Loop) -> dict[str, Any]:
    """Wait until ``/api/v1/overview`` shows every service ready, production -> 2 and the retraining job;
    then check its versions, drift (the monitor's own latest window), v1's quality and the alert.
    Returns the overview."""
    plan = loop.plan
    request: ev.TrainingRequest = loop.summary["drift_request"]
    url = f"{loop.endpoints['dashboard'].http}/api/v1/overview"

    async def complete() -> dict[str, Any] | None:
        body: dict[str, Any] = (await loop.http.get(url)).json()
        models = {m["name"]: m for m in body["models"]["items"]}
        jobs = [j for j in body["training_jobs"]["items"] if j.get("request_id") == request.request_id]
        ready = all(s["health"] == "ready" for s in body["services"])
        model = models.get(plan.model)
        if not (ready and model and model["aliases"].get("production") == 2 and jobs
                and jobs[0]["status"] == "SUCCEEDED"):
            return None
        return body
    body = await poll(complete, within_s=plan.deadline_s, every_s=0.5,
                      what="the dashboard to show every service ready, production -> 2 and the retraining job")
    model = next(m for m in body["models"]["items"] if m["name"] == plan.model)
    if {int(v["version"]) for v in model["versions"]} < {1, 2}:
        raise LoopError(f"the dashboard lists versions {model['versions']}")
    drift = [d for d in body["drift"]["items"] if d["model_name"] == plan.model]
    monitor_latest = await get_json(loop.http, f"{loop.endpoints['monitor'].http}/api/v1/models/{plan.model}/drift")
    if not drift or len(drift[0]["features"]) != len(loop.names) or monitor_latest is None \
            or set(drift[0]["drifted_features"]) != set(monitor_latest["drifted_features"]):
        raise LoopError(f"the dashboard's drift {drift} is not the monitor's latest window {monitor_latest}")
    quality = [q for q in body["quality"]["items"] if q["model_name"] == plan.model]
    v1_quality = [v for v in quality[0]["versions"] if v["model_version"] == 1] if quality else []
    if not v1_quality or v1_quality[0]["labelled_count"] != FEEDBACK_ROWS:
        raise LoopError(f"the dashboard's feedback quality is {quality}")
    job = next(j for j in body["training_jobs"]["items"] if j.get("request_id") == request.request_id)
    if job["reason"] != "DRIFT" or job["requested_by"] != "monitor" or job["model_version"] != 2:
        raise LoopError(f"the dashboard's retraining job is {job}")
    alerts = [a for a in body["alerts"]["items"] if a["model_name"] == plan.model]
    if not alerts or set(alerts[0]["drifted_features"]) != set(plan.drifted):
        raise LoopError(f"the dashboard's alerts are {alerts}")
    loop.say(f"g. dashboard: {len(body['services'])} services ready; {plan.model} versions "
             f"{sorted(int(v['version']) for v in model['versions'])}, aliases {model['aliases']}; "
             "drift per feature "
             f"({len(drift[0]['features'])} features, latest window drifted: {drift[0]['drifted_features']}); "
             f"v1 accuracy {v1_quality[0]['accuracy']:.2f} on {FEEDBACK_ROWS} labels; retraining request "
             f"{job['request_id']} ({job['reason']} by {job['requested_by']}) -> v{job['model_version']}")
    return body
