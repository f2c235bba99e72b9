"""e. Text drift: traffic from the training texts raises nothing; French traffic makes the monitor raise one
alert naming the text feature (and its drifted checks: the embeddings' domain classifier, descriptors)
and ask, once, for retraining."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gyre_common.topics import MONITOR_ALERTS, TRAINING_REQUESTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_stack.demo.checks import LoopError, get_json, poll
from gyre_stack.demo.steps.drift import alerts, drift_requests
from gyre_stack.demo.text.data import french_texts
from gyre_stack.demo.text.plan import TEXT_FEATURE

if TYPE_CHECKING:
    from gyre_stack.demo.text.loop import TextLoop

#: The check of a text feature the French traffic must move: its embeddings (Evidently's domain classifier).
EMBEDDING = "embedding"


async def run(loop: TextLoop) -> None:
    """Fill the open window with dataset texts: it must be evaluated with the text feature's checks, no
    drift, no alert, no request. Then ``plan.drift_windows`` windows of French texts: the alert names
    the text feature, its embedding check among the drifted ones. Leaves ``alert`` and ``drift_request``
    in the summary."""
    plan, size = loop.plan, loop.plan.window_rows
    fill = size - loop.served_v1_rows % size
    await loop.infer_chunks(loop.data.sample(fill, seed=1))
    first = (await wait_windows(loop, 1, 1))[0]
    checks = text_checks(first)
    if not checks:
        raise LoopError(f"the monitor did not test the text feature {TEXT_FEATURE!r} in window 1 (it tested "
                        f"{[f.get('feature') for f in first.get('feature_drifts', [])]}, skipped "
                        f"{first.get('skipped', [])}): the monitor's text drift is missing")
    if first.get("dataset_drift") or alerts(loop.base) or drift_requests(loop.base):
        raise LoopError(f"traffic from the training texts raised drift: window {first}, alerts {alerts(loop.base)}")
    loop.say(f"e. monitor: window 1 ({size} texts from the training data) -> {TEXT_FEATURE!r} checked by "
             f"{describe(checks)}; no drift, no alert, no retraining request")

    for w in range(plan.drift_windows):
        await loop.infer_chunks(french_texts(size, seed=100 + w))
    loop.say(f"e. sent {plan.drift_windows} windows of French texts on the same topics ({size} each)")
    alert: ev.MonitorAlert = (await loop.topics.wait(MONITOR_ALERTS, lambda m: m.model_name == plan.model,
                                                     within_s=plan.deadline_s, what="a MonitorAlert"))[0]
    drifted = [d for d in alert.feature_drifts if d.drifted]
    named = {d.feature for d in drifted}
    methods = {d.descriptor or "values": d for d in drifted if d.feature == TEXT_FEATURE}
    if named != {TEXT_FEATURE} or not alert.dataset_drift or EMBEDDING not in methods:
        raise LoopError(f"the alert names {sorted(named)} as drifted with checks {sorted(methods)}, expected "
                        f"exactly {TEXT_FEATURE!r} with its {EMBEDDING} check: {alert}")
    request: ev.TrainingRequest = (await loop.topics.wait(
        TRAINING_REQUESTS, lambda m: m.model_name == plan.model and m.reason == ev.TRAINING_REASON_DRIFT,
        within_s=plan.deadline_s, what="a TrainingRequest with reason DRIFT"))[0]
    await wait_windows(loop, 1, 1 + plan.drift_windows)
    embedding = methods[EMBEDDING]
    loop.say(f"e. monitor.alerts: alert {alert.alert_id} names {TEXT_FEATURE!r}, drifted by "
             + ", ".join(f"{name} ({outcome(d)})" for name, d in sorted(methods.items()) if name != EMBEDDING)
             + f" and its embeddings (a domain classifier's ROC AUC {embedding.statistic:.3f} >= "
             f"{embedding.threshold:.3f}); training.requests: request {request.request_id} (DRIFT)")
    loop.summary["alert"], loop.summary["drift_request"] = alert, request


def outcome(result: ev.FeatureDrift) -> str:
    """``ks p=1.2e-30 < 0.05`` for a hypothesis test, ``wasserstein 0.31 >= 0.1`` for a distance."""
    if result.HasField("p_value"):
        return f"{result.test_name} p={result.p_value:.2g} < {result.threshold:g}"
    return f"{result.test_name} {result.statistic:.3g} >= {result.threshold:g}"


def text_checks(window: dict[str, Any]) -> list[dict[str, Any]]:
    """The text feature's results in a window (one per check: ``embedding``, ``length``, ...)."""
    return [f for f in window.get("feature_drifts", []) if f.get("feature") == TEXT_FEATURE]


def describe(checks: list[dict[str, Any]]) -> str:
    """``embedding (model), length (ks), ...``: what was tested, and how."""
    return ", ".join(f"{c.get('descriptor') or 'values'} ({c.get('test_name', '?')})" for c in checks)


async def wait_windows(loop: TextLoop, version: int, count: int) -> list[dict[str, Any]]:
    """The evaluated windows of ``version``, once there are at least ``count``."""
    url = f"{loop.endpoints['monitor'].http}/api/v1/models/{loop.plan.model}/drift/windows"

    async def check() -> list[dict[str, Any]] | None:
        windows = list((await get_json(loop.http, url, version=version) or {}).get("windows", []))
        return windows if len(windows) >= count else None
    return await poll(check, within_s=loop.plan.deadline_s, what=f"{count} evaluated drift windows of v{version}")
