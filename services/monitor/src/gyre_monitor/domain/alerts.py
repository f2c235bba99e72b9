"""When a drifted window raises an alert and a retraining request, and the ids they carry.

* An alert is raised for a drifted window when it starts a drift episode of its (model, version)
  (the previous evaluated window did not drift), or when the episode goes on and the version's last
  alert is at least ``cooldown_s`` old (a reminder). Windows inside an episode are still recorded.
* A retraining request follows an alert unless the model (any version) had one within
  ``cooldown_s``: one request per model per cooldown, however many windows drift.
* Times compared are event times (the window's last ``served_at``), so a replay after a crash
  decides exactly as the first run did.
* Ids are UUID5 digests of the window, so a retry re-creates the same alert and request ids and
  consumers (and the trainer) deduplicate them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:gyre:monitor")


def window_key(model_name: str, model_version: int, window_seq: int) -> str:
    """Stable text id of a window: ``<model>/v<version>/w<seq>``."""
    return f"{model_name}/v{model_version}/w{window_seq}"


def alert_id(model_name: str, model_version: int, window_seq: int) -> str:
    """Deterministic id of the drift alert raised for a window."""
    return str(uuid.uuid5(_NAMESPACE, "alert:" + window_key(model_name, model_version, window_seq)))


def training_request_id(model_name: str, model_version: int, window_seq: int) -> str:
    """Deterministic id of the retraining request raised for a window (the trainer's idempotency key)."""
    return str(uuid.uuid5(_NAMESPACE, "retrain:" + window_key(model_name, model_version, window_seq)))


@dataclass(frozen=True)
class DriftState:
    """Alerting state of one (model, version).

    Attributes:
        in_drift: whether the last evaluated window drifted.
        last_alert_at: event time of the version's last alert (None if never), UTC.
    """

    in_drift: bool = False
    last_alert_at: datetime | None = None


def _cooled(last: datetime | None, at: datetime, cooldown_s: float) -> bool:
    return last is None or (at - last).total_seconds() >= cooldown_s


def should_alert(state: DriftState, dataset_drift: bool, at: datetime, cooldown_s: float) -> bool:
    """Whether a window evaluated at event time ``at`` raises an alert (see the module docstring)."""
    if not dataset_drift:
        return False
    return not state.in_drift or _cooled(state.last_alert_at, at, cooldown_s)


def next_state(state: DriftState, dataset_drift: bool, at: datetime, alerted: bool) -> DriftState:
    """The state after a window."""
    return DriftState(in_drift=dataset_drift, last_alert_at=at if alerted else state.last_alert_at)


def should_request_retraining(last_requested_at: datetime | None, at: datetime, cooldown_s: float) -> bool:
    """Whether an alert at event time ``at`` may send a retraining request for its model."""
    return _cooled(last_requested_at, at, cooldown_s)
