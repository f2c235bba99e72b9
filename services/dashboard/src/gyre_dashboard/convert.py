"""The other services' JSON answers -> contract messages -> the dashboard's plain values.

Every answer the dashboard reads is a contract message in the proto3 JSON mapping (or, for the
feedback service's quality, a hand-made body of ``GetQualityResponse``'s shape): some services use
camelCase names (registry), some the proto names (monitor, trainer, tracking, feedback); int64
arrives as a string, enums as their full name, and a field at its default value may be left out.
:func:`parse_message` reads all of that with protobuf's own ``json_format.ParseDict``, ignoring
fields this build does not know, so a field added upstream costs nothing.

A malformed part (a value of the wrong type, a naive time, a list item that is not an object) is
left at its default instead of failing the whole answer: a blank cell, never a blank page. Enum
values at zero (``*_UNSPECIFIED``, or absent) read as "".

Which message each route answers (from each service's ``api_http.py``):

* registry ``GET /api/v1/registered-models``: ``ListRegisteredModelsResponse``;
  ``GET /api/v1/registered-models/{name}/versions``: ``ListModelVersionsResponse``;
* monitor ``GET /api/v1/models/{name}/drift``: ``DriftReport`` (plus ``window_seq``,
  ``drifted_features``, ``alert_id``); ``GET /api/v1/alerts``: ``ListAlertsResponse``'s ``alerts``
  (plus ``next_offset``);
* feedback ``GET /api/v1/models/{name}/quality``: ``GetQualityResponse``;
* trainer ``GET /v1/jobs``: ``ListTrainingJobsResponse``;
* tracking ``GET /api/v1/experiments``: ``ListExperimentsResponse``; ``POST /api/v1/runs/search``:
  ``SearchRunsResponse``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from gyre_common.timeconv import optional_time as _time
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.gyre.feedback.v1 import feedback_service_pb2 as fb
from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2 as mon
from gyre_contracts.gyre.registry.v1 import registry_service_pb2 as reg
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2 as trk
from gyre_contracts.gyre.trainer.v1 import trainer_service_pb2 as tr
from gyre_dashboard.domain.models import (
    AlertSummary,
    FeatureDriftRow,
    ModelDrift,
    ModelQuality,
    ModelSummary,
    VersionQuality,
    VersionSummary,
)
from gyre_dashboard.domain.training import RunOrigin, RunSummary, TrainingJobSummary

M = TypeVar("M", bound=Message)

KEY_METRICS = 4
"""Metrics shown per run (the page has room for a few; ``metric_count`` says how many there are)."""

_PARSE_ERRORS = (json_format.ParseError, ValueError, TypeError, OverflowError)


# -- JSON -> message -------------------------------------------------------------------------------


def parse_message(data: Mapping[str, Any], message: M) -> M:
    """``data`` (proto3 JSON, either field naming) parsed into ``message``, which is returned.

    Fields ``message`` does not have are ignored. What does not parse is left at its default: a
    field of the wrong type, a list item of a message list that is not an object, a map entry or
    a time that does not parse; the rest of the message is kept. A list of ``{"key", "value"}``
    messages (tracking's tags and metrics) may also come as a JSON object; a pair that does not
    parse whole is left out. Never raises.
    """
    _parse(data, message)
    return message


def _parse(data: Mapping[str, Any], message: Message) -> bool:
    """:func:`parse_message`; whether every known field parsed."""
    # Message fields are walked here rather than by ParseDict: with ignore_unknown_fields it
    # would read a string where an object belongs as an empty message, and one bad item would
    # cost the whole list. The other fields go to ParseDict together, one by one only on failure.
    fields: Mapping[str, Any] = message.DESCRIPTOR.fields_by_name
    by_json: Mapping[str, Any] = {field.json_name: field for field in message.DESCRIPTOR.fields}
    flat: dict[str, Any] = {}
    complete = True
    for key, value in data.items():
        field = fields.get(key) or by_json.get(key)
        if field is None:
            continue
        if not _is_object_field(field):
            flat[key] = value
        elif field.is_repeated:
            pairs = {"key", "value"} <= set(field.message_type.fields_by_name)
            items = [{"key": k, "value": v} for k, v in value.items()] if pairs and isinstance(value, Mapping) \
                else value
            if not isinstance(items, list):
                complete = False
                continue
            target = getattr(message, field.name)
            for item in items:
                parsed = message_factory.GetMessageClass(field.message_type)()
                whole = isinstance(item, Mapping) and _parse(item, parsed)
                complete = complete and whole
                if whole or (isinstance(item, Mapping) and not pairs):
                    target.add().CopyFrom(parsed)
        elif isinstance(value, Mapping):
            sub = getattr(message, field.name)
            sub.SetInParent()
            complete = _parse(value, sub) and complete
        else:
            complete = False
    if flat and not _merge(message, flat):
        complete = False
        for key, value in flat.items():
            field = fields.get(key) or by_json.get(key)
            if not _merge(message, {key: value}) and _is_map(field) and isinstance(value, Mapping):
                for entry_key, entry_value in value.items():
                    _merge(message, {key: {entry_key: entry_value}})
    return complete


def _is_map(field: Any) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and bool(field.message_type.GetOptions().map_entry)


def _is_object_field(field: Any) -> bool:
    """Whether ``field`` holds messages written as JSON objects (not maps, not well-known types
    such as Timestamp, whose JSON is a string or a number)."""
    return (field.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(field)
            and not field.message_type.full_name.startswith("google.protobuf."))


def _merge(message: Message, data: dict[str, Any]) -> bool:
    """Merge ``data`` (JSON of fields of ``message``) into ``message`` if it all parses; whether it did."""
    part = type(message)()
    try:
        json_format.ParseDict(data, part, ignore_unknown_fields=True)
    except _PARSE_ERRORS:
        return False
    message.MergeFrom(part)
    return True


# -- message -> plain values -----------------------------------------------------------------------


def _optional(message: Message, name: str) -> float | None:
    """An ``optional double`` field; None when unset."""
    return float(getattr(message, name)) if message.HasField(name) else None


def _enum(message: Message, name: str, prefix: str) -> str:
    """An enum field's name without its prefix (``TRAINING_STATUS_FAILED`` -> ``FAILED``); "" at zero."""
    number = getattr(message, name)
    if not number:
        return ""
    field: Any = message.DESCRIPTOR.fields_by_name[name]
    value = field.enum_type.values_by_number.get(number)
    return value.name.removeprefix(prefix) if value is not None else ""


def registered_model_summary(message: reg.RegisteredModel) -> ModelSummary:
    """A registry ``RegisteredModel`` without its versions."""
    return ModelSummary(
        name=message.name,
        description=message.description,
        latest_version=message.latest_version,
        aliases=dict(sorted(message.aliases.items())),
        updated_at=_time(message, "updated_at"),
    )


def model_version_summary(message: reg.ModelVersion) -> VersionSummary:
    """A registry ``ModelVersion``."""
    return VersionSummary(
        version=message.version,
        status=_enum(message, "status", "MODEL_VERSION_STATUS_"),
        aliases=tuple(sorted(message.aliases)),
        created_at=_time(message, "created_at"),
        created_by=message.created_by,
        primary_metric=message.evaluation.primary_metric,
        metrics=dict(message.lineage.metrics),
        run_id=message.lineage.run_id,
    )


def feature_drift_row(message: ev.FeatureDrift) -> FeatureDriftRow:
    """A ``FeatureDrift``."""
    return FeatureDriftRow(
        feature=message.feature,
        test_name=message.test_name,
        statistic=message.statistic,
        p_value=_optional(message, "p_value"),
        threshold=message.threshold,
        drifted=message.drifted,
    )


def drift_summary(message: mon.DriftReport, model_name: str) -> ModelDrift:
    """The monitor's latest-window ``DriftReport`` of ``model_name``."""
    return ModelDrift(
        model_name=message.model_name or model_name,
        model_version=message.model_version,
        window_start=_time(message, "window_start"),
        window_end=_time(message, "window_end"),
        current_rows=message.current_rows,
        drift_share=message.drift_share,
        dataset_drift=message.dataset_drift,
        features=tuple(feature_drift_row(f) for f in message.feature_drifts),
    )


def quality_summary(message: fb.GetQualityResponse, model_name: str) -> ModelQuality:
    """The feedback service's ``GetQualityResponse`` of ``model_name``, newest version first."""
    versions = [
        VersionQuality(
            model_version=v.model_version,
            predictions=v.predictions,
            feedback_count=v.feedback_count,
            labelled_count=v.labelled_count,
            accuracy=_optional(v, "accuracy"),
            mean_stars=_optional(v, "mean_stars"),
            thumbs_up_rate=_optional(v, "thumbs_up_rate"),
            mean_score=_optional(v, "mean_score"),
            bleu=_optional(v, "bleu"),
            rouge_l=_optional(v, "rouge_l"),
        )
        for v in message.versions
    ]
    versions.sort(key=lambda v: v.model_version, reverse=True)
    return ModelQuality(
        model_name=message.model_name or model_name,
        window_start=_time(message, "window_start"),
        window_end=_time(message, "window_end"),
        versions=tuple(versions),
    )


def training_job_summary(message: tr.TrainingJob) -> TrainingJobSummary:
    """A trainer ``TrainingJob``."""
    request = message.request
    # The TrainingJob contract: status UNSPECIFIED (left out of the JSON) means queued.
    status = _enum(message, "status", "TRAINING_STATUS_")
    return TrainingJobSummary(
        job_id=message.job_id,
        request_id=request.request_id,
        model_name=request.model_name,
        status=status or "QUEUED",
        reason=_enum(request, "reason", "TRAINING_REASON_"),
        requested_by=request.requested_by,
        created_at=_time(message, "created_at") or _time(request, "requested_at"),
        finished_at=_time(message, "finished_at"),
        trials_completed=message.trials_completed,
        model_version=message.model_version,
        promoted=message.promoted,
        error=message.error,
    )


def alert_summary(message: ev.MonitorAlert) -> AlertSummary:
    """A ``MonitorAlert``."""
    return AlertSummary(
        alert_id=message.alert_id,
        kind=_enum(message, "kind", "ALERT_KIND_"),
        model_name=message.model_name,
        model_version=message.model_version,
        detected_at=_time(message, "detected_at"),
        drift_share=message.drift_share,
        drifted_features=tuple(d.feature for d in message.feature_drifts if d.drifted),
    )


def _origin(tags: Mapping[str, str]) -> tuple[RunOrigin, str]:
    """Who logged a run, and a short "where from", told by its tags."""
    job_id = tags.get("gyre.job_id", "")
    if job_id or any(key.startswith("gyre.") for key in tags):
        trial = tags.get("gyre.trial", "")
        where = f"trial {trial}" if trial else "search"
        return RunOrigin.TRAINER, f"job {job_id[:8]}, {where}" if job_id else where
    if "mlflow.user" in tags or any(key.startswith("mlflow.source.") for key in tags):
        source = tags.get("mlflow.source.name", "")
        # A path to a script or notebook: its last part says enough in a table cell.
        return RunOrigin.MLFLOW, source.rstrip("/").rsplit("/", 1)[-1][:80]
    return RunOrigin.OTHER, ""


def _key_metrics(metrics: Mapping[str, float], objective: str) -> dict[str, float]:
    """The :data:`KEY_METRICS` most telling metrics: the objective's, holdout, validation, the rest."""
    objective_keys = {objective, f"holdout_{objective}", f"val_{objective}"} if objective else set()

    def rank(key: str) -> tuple[int, str]:
        if key in objective_keys:
            return 0, key
        if key.startswith("holdout_"):
            return 1, key
        if key.startswith("val_"):
            return 2, key
        return 3, key

    return {key: metrics[key] for key in sorted(metrics, key=rank)[:KEY_METRICS]}


def run_summary(message: trk.Run, experiment_names: Mapping[str, str] | None = None) -> RunSummary:
    """A tracking ``Run``, its experiment named from ``experiment_names`` (id -> name)."""
    info = message.info
    tags = {tag.key: tag.value for tag in message.data.tags if tag.key}
    metrics = {metric.key: metric.value for metric in message.data.metrics if metric.key}
    origin, detail = _origin(tags)
    return RunSummary(
        run_id=info.run_id,
        run_name=info.run_name or tags.get("mlflow.runName", ""),
        experiment_id=info.experiment_id,
        experiment_name=(experiment_names or {}).get(info.experiment_id, ""),
        status=_enum(info, "status", "RUN_STATUS_"),
        start_time=_time(info, "start_time"),
        end_time=_time(info, "end_time"),
        user=info.user or tags.get("mlflow.user", ""),
        origin=origin,
        origin_detail=detail,
        parent_run_id=tags.get("mlflow.parentRunId", ""),
        metrics=_key_metrics(metrics, tags.get("gyre.objective_metric", "")),
        metric_count=len(metrics),
    )


# -- JSON -> plain values, one per kind of answer (what the client and the tests call) ---------------


def parse_registered_model(data: Mapping[str, Any]) -> ModelSummary:
    """A registry ``RegisteredModel`` (JSON) without its versions."""
    return registered_model_summary(parse_message(data, reg.RegisteredModel()))


def parse_model_version(data: Mapping[str, Any]) -> VersionSummary:
    """A registry ``ModelVersion`` (JSON)."""
    return model_version_summary(parse_message(data, reg.ModelVersion()))


def parse_drift(data: Mapping[str, Any], model_name: str) -> ModelDrift:
    """The monitor's latest-window ``DriftReport`` (JSON) of ``model_name``."""
    return drift_summary(parse_message(data, mon.DriftReport()), model_name)


def parse_quality(data: Mapping[str, Any], model_name: str) -> ModelQuality:
    """The feedback service's ``GetQualityResponse`` (JSON) of ``model_name``."""
    return quality_summary(parse_message(data, fb.GetQualityResponse()), model_name)


def parse_training_job(data: Mapping[str, Any]) -> TrainingJobSummary:
    """A trainer ``TrainingJob`` (JSON)."""
    return training_job_summary(parse_message(data, tr.TrainingJob()))


def parse_alert(data: Mapping[str, Any]) -> AlertSummary:
    """A ``MonitorAlert`` (JSON)."""
    return alert_summary(parse_message(data, ev.MonitorAlert()))


def parse_run(data: Mapping[str, Any], experiment_names: Mapping[str, str] | None = None) -> RunSummary:
    """A tracking ``Run`` (JSON), its experiment named from ``experiment_names`` (id -> name)."""
    return run_summary(parse_message(data, trk.Run()), experiment_names)
