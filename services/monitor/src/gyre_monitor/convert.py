"""Protobuf <-> monitor domain: the events consumed and published, and the gRPC/REST messages.

Used by the transports (api_grpc, api_http, consumers) and to build the events the handlers queue
in the outbox. No I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime

from gyre_common.retraining import retraining_request as alert_retraining_request
from gyre_common.timeconv import timestamp
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2 as pb
from gyre_monitor.domain.drift import DatasetDrift, DriftReport, FeatureDrift, SkippedFeature
from gyre_monitor.domain.predictions import Prediction, Scalar
from gyre_monitor.store import WindowRecord


def scalar(value: common_pb2.FeatureValue) -> Scalar:
    """The Python value of a FeatureValue (None when unset, i.e. missing)."""
    kind = value.WhichOneof("kind")
    if kind is None:
        return None
    result: Scalar = getattr(value, kind)
    if isinstance(result, float) and not math.isfinite(result):
        return None  # NaN/inf count as missing (as Evidently drops them), and JSON cannot hold them
    return result


def prediction_from_event(event: events_pb2.InferenceEvent, fallback_time: datetime) -> Prediction:
    """A :class:`Prediction` from an InferenceEvent; ``fallback_time`` (the record's time) when
    ``served_at`` is unset."""
    served_at = event.served_at.ToDatetime(tzinfo=UTC) if event.HasField("served_at") else fallback_time
    return Prediction(
        prediction_id=event.prediction_id,
        model_name=event.model_name,
        model_version=int(event.model_version),
        served_at=served_at,
        inputs={name: scalar(value) for name, value in event.inputs.items()},
        shadow=event.shadow,
    )


def feature_drift_message(result: FeatureDrift) -> events_pb2.FeatureDrift:
    """The FeatureDrift message of one feature's result."""
    message = events_pb2.FeatureDrift(
        feature=result.feature,
        test_name=result.test.value,
        statistic=result.statistic,
        threshold=result.threshold,
        drifted=result.drifted,
        reference_rows=result.reference_rows,
        current_rows=result.current_rows,
        descriptor=result.descriptor,
    )
    if result.p_value is not None:
        message.p_value = result.p_value
    return message


def skipped_message(skipped: SkippedFeature) -> events_pb2.SkippedCheck:
    """The SkippedCheck message of a check that could not run."""
    return events_pb2.SkippedCheck(feature=skipped.feature, descriptor=skipped.descriptor, reason=skipped.reason)


def drift_alert(*, alert_id: str, model_name: str, model_version: int, window_start: datetime,
                window_end: datetime, drift: DatasetDrift, detected_at: datetime) -> events_pb2.MonitorAlert:
    """The MonitorAlert of a drifted window: every tested feature (every check of a text feature,
    named by ``descriptor``), ``drifted`` marking the drifted ones, and the checks skipped."""
    return events_pb2.MonitorAlert(
        alert_id=alert_id,
        kind=events_pb2.ALERT_KIND_DRIFT,
        model_name=model_name,
        model_version=model_version,
        window_start=timestamp(window_start),
        window_end=timestamp(window_end),
        feature_drifts=[feature_drift_message(result) for result in drift.features],
        dataset_drift=drift.dataset_drift,
        drift_share=drift.drift_share,
        drift_share_threshold=drift.drift_share_threshold,
        detected_at=timestamp(detected_at),
        skipped=[skipped_message(item) for item in drift.skipped],
    )


def retraining_request(*, request_id: str, alert: events_pb2.MonitorAlert, window_seq: int,
                       feature_view: str, label: str, promote_to_alias: str,
                       requested_at: datetime) -> events_pb2.TrainingRequest:
    """The DRIFT TrainingRequest that follows an alert, with the alert as evidence."""
    drifted = list(dict.fromkeys(f.feature for f in alert.feature_drifts if f.drifted))
    # Which checks drifted: "review:embedding" for a text feature's embeddings, "x1" for a plain feature.
    checks = [f"{f.feature}:{f.descriptor}" if f.descriptor else f.feature for f in alert.feature_drifts if f.drifted]
    evidence = {
        "window_seq": str(window_seq),
        "window_start": alert.window_start.ToJsonString(),
        "window_end": alert.window_end.ToJsonString(),
        "drift_share": f"{alert.drift_share:.6g}",
        "drifted_features": ",".join(drifted),
        "drifted_checks": ",".join(checks),
    }
    return alert_retraining_request(
        request_id=request_id, alert=alert, reason=events_pb2.TRAINING_REASON_DRIFT, evidence=evidence,
        feature_view=feature_view, label=label, promote_to_alias=promote_to_alias, requested_by="monitor",
        requested_at=requested_at,
    )


def _drift_report(model_name: str, model_version: int, start: datetime, end: datetime, rows: int,
                  features: Iterable[FeatureDrift], drift_share: float, dataset_drift: bool,
                  threshold: float, skipped: Iterable[SkippedFeature]) -> pb.DriftReport:
    return pb.DriftReport(
        model_name=model_name,
        model_version=model_version,
        window_start=timestamp(start),
        window_end=timestamp(end),
        current_rows=rows,
        feature_drifts=[feature_drift_message(f) for f in features],
        drift_share=drift_share,
        dataset_drift=dataset_drift,
        drift_share_threshold=threshold,
        skipped=[skipped_message(item) for item in skipped],
    )


def window_report(record: WindowRecord) -> pb.DriftReport:
    """A DriftReport message of an evaluated window."""
    return _drift_report(record.model_name, record.model_version, record.window_start, record.window_end,
                         record.rows, record.features, record.drift_share or 0.0, bool(record.dataset_drift),
                         record.drift_share_threshold or 0.0, record.skipped)


def range_report(report: DriftReport) -> pb.DriftReport:
    """A DriftReport message of an on-demand report."""
    drift = report.drift
    return _drift_report(report.model_name, report.model_version, report.window_start, report.window_end,
                         drift.current_rows, drift.features, drift.drift_share, drift.dataset_drift,
                         drift.drift_share_threshold, drift.skipped)


def monitor_alerts(payloads: Iterable[bytes]) -> list[events_pb2.MonitorAlert]:
    """The stored MonitorAlerts of ``payloads`` (serialized protobuf), in order."""
    return [events_pb2.MonitorAlert.FromString(payload) for payload in payloads]
