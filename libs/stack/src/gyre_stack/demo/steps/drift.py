"""e. Drift: unshifted traffic raises nothing; traffic with a few features shifted makes the monitor name
exactly those features and ask, once, for retraining."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gyre_common.topics import MONITOR_ALERTS, TRAINING_REQUESTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_stack.demo.checks import LoopError, get_json, poll
from gyre_stack.demo.data import SHIFT_STD

if TYPE_CHECKING:
    from gyre_stack.demo.loop import Loop


async def run(loop: Loop) -> None:
    """Fill the open window with unshifted rows (no drift, no alert, no request), then send
    ``plan.drift_windows`` windows with ``plan.drifted`` shifted by SHIFT_STD standard deviations; the
    alert must name exactly those features. Leaves ``alert`` and ``drift_request`` in the summary."""
    plan, size = loop.plan, loop.plan.window_rows
    # Fill the open window (which already holds steps c and d's predictions) with unshifted rows.
    fill = size - loop.served_v1_rows % size
    await loop.infer_grpc(loop.sample(fill, seed=1))
    windows = await _wait_windows(loop, 1, 1)
    first = windows[0]
    if first.get("dataset_drift") or alerts(loop) or drift_requests(loop):
        raise LoopError(f"unshifted traffic raised drift: window {first}, alerts {alerts(loop)}")
    listed = await get_json(loop.http, f"{loop.endpoints['monitor'].http}/api/v1/alerts", model=plan.model)
    if listed and listed.get("alerts"):
        raise LoopError(f"unshifted traffic raised alerts: {listed}")
    loop.say(f"e. monitor: window 1 ({size} unshifted predictions) -> drift share "
             f"{float(first.get('drift_share', 0.0)):.2f}, no alert, no retraining request")

    std = loop.data.std(axis=0, ddof=1)
    columns = [loop.names.index(n) for n in plan.drifted]
    for w in range(plan.drift_windows):
        rows = loop.sample(size, seed=2 + w).copy()
        rows[:, columns] += SHIFT_STD * std[columns]
        await loop.infer_grpc(rows)
    loop.say(f"e. sent {plan.drift_windows} windows of traffic with {len(columns)} features shifted by "
             f"{SHIFT_STD:g} std: {', '.join(plan.drifted)}")
    alert = (await loop.topics.wait(MONITOR_ALERTS, lambda m: m.model_name == plan.model, within_s=plan.deadline_s,
                                    what="a MonitorAlert"))[0]
    named = {d.feature for d in alert.feature_drifts if d.drifted}
    if named != set(plan.drifted) or not alert.dataset_drift:
        raise LoopError(f"the alert names {sorted(named)} as drifted, expected exactly {sorted(plan.drifted)}")
    request = (await loop.topics.wait(TRAINING_REQUESTS, lambda m: m.model_name == plan.model
                                      and m.reason == ev.TRAINING_REASON_DRIFT, within_s=plan.deadline_s,
                                      what="a TrainingRequest with reason DRIFT"))[0]
    await _wait_windows(loop, 1, 1 + plan.drift_windows)
    loop.say(f"e. monitor.alerts: alert {alert.alert_id} names exactly {sorted(named)} (drift share "
             f"{alert.drift_share:.2f}); training.requests: request {request.request_id} (DRIFT, evidence "
             f"{request.evidence.get('drifted_features', '')})")
    loop.summary["alert"], loop.summary["drift_request"] = alert, request


def check_debounce(loop: Loop) -> None:
    """Exactly one DRIFT request and one alert, however many drifted windows were evaluated."""
    requests, raised = drift_requests(loop), alerts(loop)
    if len({r.request_id for r in requests}) != 1 or len({a.alert_id for a in raised}) != 1:
        raise LoopError(f"expected one alert and one DRIFT request after {loop.plan.drift_windows} drifted "
                        f"windows, got {len(raised)} alerts and requests {[r.request_id for r in requests]}")


def drift_requests(loop: Loop) -> list[ev.TrainingRequest]:
    """The DRIFT training requests of the plan's model seen on training.requests."""
    return loop.topics.of(TRAINING_REQUESTS, lambda m: m.model_name == loop.plan.model
                          and m.reason == ev.TRAINING_REASON_DRIFT)


def alerts(loop: Loop) -> list[ev.MonitorAlert]:
    """The alerts on the plan's model seen on monitor.alerts."""
    return loop.topics.of(MONITOR_ALERTS, lambda m: m.model_name == loop.plan.model)


async def _windows(loop: Loop, version: int) -> list[dict[str, Any]]:
    body = await get_json(loop.http, f"{loop.endpoints['monitor'].http}/api/v1/models/{loop.plan.model}"
                                     "/drift/windows", version=version)
    return list((body or {}).get("windows", []))


async def _wait_windows(loop: Loop, version: int, count: int) -> list[dict[str, Any]]:
    async def check() -> list[dict[str, Any]] | None:
        windows = await _windows(loop, version)
        return windows if len(windows) >= count else None
    return await poll(check, within_s=loop.plan.deadline_s, what=f"{count} evaluated drift windows of v{version}")
