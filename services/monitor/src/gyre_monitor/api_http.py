"""REST adapter (FastAPI): decode, call a handler, encode. JSON bodies use proto3 JSON field names.

Errors: 400 for invalid input (InvalidArgumentError), 422 for a request that does not fit its schema
(FastAPI's ``{"detail": [{"loc", "msg", "type"}]}``, also an invalid reference profile), 404
NotFoundError, 409 FailedPreconditionError, 413 a body over the limit (16 MiB for a reference profile,
the service's ``http_max_body_bytes`` otherwise); other bodies are ``{"detail": "<message>",
"reason": "<slug>"}`` (gyre_common.errors).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from google.protobuf import json_format
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from gyre_common.limits import INT64_MAX, Text, body_limit
from gyre_common.profile import MAX_SAMPLE_VALUES, ProfileError
from gyre_common.profile_wire import profile_from_proto, profile_to_proto
from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2 as pb
from gyre_monitor.convert import monitor_alerts, range_report, window_report
from gyre_monitor.domain.profiles import MAX_PROFILE_FEATURES, MAX_PROFILE_TEXT_CHARS
from gyre_monitor.handlers import MonitorHandlers

MAX_PROFILE_BYTES = 16 * 1024 * 1024
"""Largest accepted reference-profile request body (the other routes keep the service's 4 MiB)."""

Version = Annotated[int, Path(ge=1, le=INT64_MAX, description="Model version (1, 2, ...).")]
ReadVersion = Annotated[int, Path(ge=-INT64_MAX, le=INT64_MAX, description="Model version (1, 2, ...); "
                                  "one below 1 is a 400 from the handler, as it always was.")]
VersionFilter = Annotated[int | None, Query(ge=1, le=INT64_MAX, description="Only this model version.")]
Offset = Annotated[int, Query(ge=0, le=INT64_MAX, description="Items to skip (the previous page's next_offset).")]


def _alias(snake: str, camel: str) -> Any:
    # proto3 JSON: GET answers with the proto field names; clients using protobuf's default JSON
    # printer send lowerCamelCase. Both are accepted, as json_format.Parse did.
    return Field(default=None, validation_alias=AliasChoices(snake, camel))


class FeatureProfileBody(BaseModel):
    """One monitored feature (gyre.monitor.v1.FeatureProfile as proto3 JSON)."""

    model_config = ConfigDict(extra="forbid")

    feature: Text = Field(min_length=1, max_length=MAX_PROFILE_TEXT_CHARS)
    kind: Literal["FEATURE_KIND_NUMERICAL", "FEATURE_KIND_CATEGORICAL", 1, 2]
    values: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(default_factory=list,
                                                                       max_length=MAX_SAMPLE_VALUES)
    category_counts: dict[Text, Annotated[int, Field(ge=0, le=INT64_MAX)]] = Field(
        default_factory=dict, validation_alias=AliasChoices("category_counts", "categoryCounts"))
    missing_count: int = Field(default=0, ge=0, le=INT64_MAX,
                               validation_alias=AliasChoices("missing_count", "missingCount"))


class ReferenceProfileBody(BaseModel):
    """A reference profile to store (gyre.monitor.v1.ReferenceProfile as proto3 JSON). The path names
    the model and version: ``model_name`` and ``model_version`` in the body, if any, are ignored, as
    is ``created_at`` (output only)."""

    model_config = ConfigDict(extra="forbid")

    features: list[FeatureProfileBody] = Field(min_length=1, max_length=MAX_PROFILE_FEATURES)
    rows: int = Field(ge=1, le=INT64_MAX, description="Rows of the training set the profile was taken from.")
    dataset_fingerprint: Text = Field(default="", max_length=MAX_PROFILE_TEXT_CHARS,
                                     validation_alias=AliasChoices("dataset_fingerprint", "datasetFingerprint"))
    model_name: str | None = _alias("model_name", "modelName")
    model_version: int | str | None = _alias("model_version", "modelVersion")
    created_at: str | None = _alias("created_at", "createdAt")

    def to_proto(self, model_name: str, version: int) -> pb.ReferenceProfile:
        """The protobuf profile of ``model_name`` version ``version``."""
        message = pb.ReferenceProfile(model_name=model_name, model_version=version, rows=self.rows,
                                      dataset_fingerprint=self.dataset_fingerprint)
        for item in self.features:
            kind = item.kind if isinstance(item.kind, int) else pb.FeatureKind.Value(item.kind)
            message.features.add(feature=item.feature, kind=kind, values=item.values,
                                 category_counts=item.category_counts, missing_count=item.missing_count)
        return message


def _json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def router(handlers: MonitorHandlers) -> APIRouter:
    """The monitor's REST routes under ``/api/v1``."""
    api = APIRouter(prefix="/api/v1", tags=["monitor"])

    @api.get("/models/{model_name}/drift")
    async def latest_drift(model_name: str, version: VersionFilter = None) -> dict[str, Any]:
        """Drift of the latest evaluated window of a model (of one version with ``version``), per feature."""
        record = await handlers.latest_drift(model_name, version)
        body = _json(window_report(record))
        body["window_seq"] = record.window_seq
        body["drifted_features"] = list(record.drifted_features)
        body["alert_id"] = record.alert_id or ""
        return body

    @api.get("/models/{model_name}/drift/windows")
    async def drift_windows(model_name: str, version: VersionFilter = None,
                            since: datetime | None = None, limit: int = Query(100, ge=1, le=1000),
                            offset: Offset = 0) -> dict[str, Any]:
        """Evaluated windows of a model, oldest first (drift over time)."""
        records = await handlers.list_windows(model_name, version, since, limit, offset)
        return {"windows": [{**_json(window_report(r)), "window_seq": r.window_seq} for r in records],
                "next_offset": offset + limit if len(records) == limit else None}

    @api.get("/models/{model_name}/versions/{version}/drift-report", response_model=None)
    async def drift_report(model_name: str, version: ReadVersion, start: datetime | None = None,
                           end: datetime | None = None,
                           format: str = Query("json", pattern="^(json|html)$")) -> dict[str, Any] | HTMLResponse:
        """On-demand drift of the predictions served in [start, end) (default: the last hour);
        ``format=html`` returns Evidently's HTML report."""
        report = await handlers.drift_report(model_name, version, start, end, include_html=format == "html")
        if format == "html":
            return HTMLResponse(report.html)
        return _json(range_report(report))

    @api.get("/alerts")
    async def alerts(model: str | None = None, since: datetime | None = None,
                     limit: int = Query(100, ge=1, le=1000), offset: Offset = 0) -> dict[str, Any]:
        """Alerts, newest first."""
        payloads = await handlers.list_alerts(model, since, limit, offset)
        return {"alerts": [_json(alert) for alert in monitor_alerts(payloads)],
                "next_offset": offset + limit if len(payloads) == limit else None}

    @api.get("/models/{model_name}/versions/{version}/reference-profile")
    async def get_profile(model_name: str, version: ReadVersion) -> dict[str, Any]:
        """A version's reference profile (gyre.monitor.v1.ReferenceProfile as JSON)."""
        stored = await handlers.get_reference_profile(model_name, version)
        return _json(profile_to_proto(stored.profile))

    @api.put("/models/{model_name}/versions/{version}/reference-profile",
                openapi_extra=body_limit(MAX_PROFILE_BYTES))
    async def put_profile(model_name: str, version: Version, body: ReferenceProfileBody) -> JSONResponse:
        """Store (replace) a version's reference profile. An invalid profile (no features, wrong
        types, a numerical feature without values, a duplicate name, ...) answers 422 with details
        and leaves the stored profile as it was."""
        try:
            profile = profile_from_proto(body.to_proto(model_name, version))
            # The handler checks what the monitor needs of a profile for every transport (gRPC
            # answers INVALID_ARGUMENT); here an invalid profile stays a 422 like the schema's.
            stored, _ = await handlers.set_reference_profile(profile, source="api")
        except ProfileError as exc:
            raise RequestValidationError([{"type": "value_error", "loc": ("body",), "msg": str(exc),
                                           "input": None}]) from None
        return JSONResponse(_json(profile_to_proto(stored.profile)), status_code=200)

    return api
