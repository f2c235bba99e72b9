"""The shared retraining-request builder (gyre_common.retraining) and Timestamp conversions
(gyre_common.timeconv) that every service's convert.py uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from gyre_common.retraining import retraining_request
from gyre_common.timeconv import optional_time, timestamp, to_datetime
from gyre_contracts.gyre.events.v1 import events_pb2


def test_a_retraining_request_names_the_alerts_model_and_carries_its_evidence() -> None:
    alert = events_pb2.MonitorAlert(alert_id="a-1", model_name="churn", model_version=3)
    at = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    request = retraining_request(
        request_id="r-1", alert=alert, reason=events_pb2.TRAINING_REASON_DRIFT, evidence={"drift_share": "0.6"},
        feature_view="churn_features", label="churned", promote_to_alias="production", requested_by="monitor",
        requested_at=at,
    )
    assert request.request_id == "r-1" and request.model_name == "churn"
    assert request.reason == events_pb2.TRAINING_REASON_DRIFT
    assert dict(request.evidence) == {"alert_id": "a-1", "model_version": "3", "drift_share": "0.6"}
    assert (request.feature_view, request.label) == ("churn_features", "churned")
    assert request.promote_to_alias == "production"
    assert request.requested_by == "monitor" and request.requested_at.ToDatetime(tzinfo=UTC) == at


def test_timestamps_round_trip_in_utc_whatever_the_zone() -> None:
    moment = datetime(2025, 3, 1, 14, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    stamp = timestamp(moment)
    assert stamp.ToJsonString() == "2025-03-01T12:30:00.123456Z"
    assert to_datetime(stamp) == moment and to_datetime(stamp).tzinfo is UTC


def test_an_unset_timestamp_field_is_none() -> None:
    alert = events_pb2.MonitorAlert()
    assert optional_time(alert, "window_start") is None
    alert.window_start.CopyFrom(Timestamp(seconds=86400))
    assert optional_time(alert, "window_start") == datetime(1970, 1, 2, tzinfo=UTC)
