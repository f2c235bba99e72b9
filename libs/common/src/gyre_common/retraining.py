"""The retraining request that follows an alert, built in one place for every service that asks for
one (the monitor on drift, feedback on a quality drop).

The request names the alert's model, says why (``reason``) and carries the evidence: the alert's id
and model version always, then what the caller adds. The trainer dedupes on ``request_id``, so a
caller derives it from the alert to make a retry idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from gyre_common.timeconv import timestamp
from gyre_contracts.gyre.events.v1 import events_pb2


def retraining_request(*, request_id: str, alert: events_pb2.MonitorAlert, reason: events_pb2.TrainingReason.ValueType,
                       evidence: Mapping[str, str], feature_view: str, label: str, promote_to_alias: str,
                       requested_by: str, requested_at: datetime) -> events_pb2.TrainingRequest:
    """The TrainingRequest following ``alert``.

    Args:
        request_id: the request's id (idempotency key at the trainer).
        alert: the alert that asks for retraining (its model, id and version go into the request).
        reason: e.g. ``TRAINING_REASON_DRIFT``.
        evidence: what the caller adds to ``alert_id`` and ``model_version`` (strings).
        feature_view, label: what to train on.
        promote_to_alias: the alias the new version competes for.
        requested_by: the asking service's name.
        requested_at: aware datetime (UTC in the message).
    """
    return events_pb2.TrainingRequest(
        request_id=request_id,
        model_name=alert.model_name,
        feature_view=feature_view,
        label=label,
        reason=reason,
        evidence={"alert_id": alert.alert_id, "model_version": str(alert.model_version), **evidence},
        requested_by=requested_by,
        requested_at=timestamp(requested_at),
        promote_to_alias=promote_to_alias,
    )
