"""g. Dashboard: the overview shows the text model's versions, production -> 2, the retraining job and the
alert naming the text feature."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_stack.demo.checks import LoopError, poll
from gyre_stack.demo.text.plan import TEXT_FEATURE

if TYPE_CHECKING:
    from gyre_stack.demo.text.loop import TextLoop


async def run(loop: TextLoop) -> dict[str, Any]:
    """Wait until ``/api/v1/overview`` shows every service ready, production -> 2 and the retraining job;
    check the versions, the job and the alert. Returns the overview."""
    plan = loop.plan
    request: ev.TrainingRequest = loop.summary["drift_request"]
    url = f"{loop.endpoints['dashboard'].http}/api/v1/overview"

    async def complete() -> dict[str, Any] | None:
        body: dict[str, Any] = (await loop.http.get(url)).json()
        models = {m["name"]: m for m in body["models"]["items"]}
        jobs = [j for j in body["training_jobs"]["items"] if j.get("request_id") == request.request_id]
        model = models.get(plan.model)
        if not (all(s["health"] == "ready" for s in body["services"]) and model
                and model["aliases"].get("production") == 2 and jobs and jobs[0]["status"] == "SUCCEEDED"):
            return None
        return body
    body = await poll(complete, within_s=plan.deadline_s, every_s=0.5,
                      what="the dashboard to show every service ready, production -> 2 and the retraining job")
    model = next(m for m in body["models"]["items"] if m["name"] == plan.model)
    if {int(v["version"]) for v in model["versions"]} < {1, 2}:
        raise LoopError(f"the dashboard lists versions {model['versions']}")
    job = next(j for j in body["training_jobs"]["items"] if j.get("request_id") == request.request_id)
    if job["reason"] != "DRIFT" or job["requested_by"] != "monitor" or job["model_version"] != 2:
        raise LoopError(f"the dashboard's retraining job is {job}")
    alerts = [a for a in body["alerts"]["items"] if a["model_name"] == plan.model]
    if not alerts or TEXT_FEATURE not in alerts[0]["drifted_features"]:
        raise LoopError(f"the dashboard's alerts are {alerts}")
    loop.say(f"g. dashboard: {len(body['services'])} services ready; {plan.model} versions "
             f"{sorted(int(v['version']) for v in model['versions'])}, aliases {model['aliases']}; alert naming "
             f"{sorted(set(alerts[0]['drifted_features']))}; retraining {job['request_id']} ({job['reason']} by "
             f"{job['requested_by']}) -> v{job['model_version']}")
    return body
