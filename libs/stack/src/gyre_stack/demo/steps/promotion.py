"""f. Promote: production -> 2 by the registry's policy when it can compare the versions, else by SetAlias."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gyre_stack.demo.checks import LoopError

if TYPE_CHECKING:
    from gyre_stack.demo.loop import Loop


async def promote(loop: Loop, v2: dict[str, Any]) -> None:
    """Wait for the policy's promotion of ``v2`` when it is comparable and at least as good as v1; otherwise
    set ``production`` to 2 through the registry's SetAlias and say why. Leaves ``promotion`` (how) in the
    summary.

    Raises:
        LoopError: the policy should have promoted and did not in time, or SetAlias was refused.
    """
    v1 = await loop.registered_version(1)
    e1, e2 = v1.get("evaluation") or {}, v2.get("evaluation") or {}
    metric = e2.get("primaryMetric", "")
    comparable = bool(metric) and e1.get("holdoutId") and e1.get("holdoutId") == e2.get("holdoutId") \
        and metric == e1.get("primaryMetric")
    if comparable:
        new, old = v2["lineage"]["metrics"][metric], v1["lineage"]["metrics"][metric]
        at_least_as_good = "<=" if e2.get("lowerIsBetter") else ">="
        if (new <= old) if e2.get("lowerIsBetter") else (new >= old):
            await loop.wait_alias("production", 2)
            loop.summary["promotion"] = "policy"
            loop.say(f"f. registry policy promoted v2 to production (same holdout, {metric} "
                     f"{new:.4f} {at_least_as_good} {old:.4f})")
            return
    if await loop.alias_version("production") == 2:
        loop.summary["promotion"] = "policy"
        loop.say("f. registry policy promoted v2 to production")
        return
    reason = ("the versions were measured on different holdouts or metrics" if not comparable
              else f"v2 is worse on {metric}")
    url = f"{loop.endpoints['registry'].http}/api/v1/registered-models/{loop.plan.model}/aliases/production"
    comment = f"demo: promote the retrained model ({reason})"
    response = await loop.http.put(url, json={"version": 2, "comment": comment}, headers={"x-gyre-actor": "demo"})
    if response.status_code != 200:
        raise LoopError(f"SetAlias production -> 2 answered {response.status_code}: {response.text}")
    loop.summary["promotion"] = f"SetAlias ({reason})"
    loop.say(f"f. the policy kept v1 ({reason}); production set to v2 through the registry's SetAlias")
