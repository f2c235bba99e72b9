"""REST adapter (FastAPI): decode, call a handler, encode. JSON bodies use proto3 JSON field names.

Errors: 400 for invalid input (InvalidArgumentError, ProfileError, bad JSON), 404 NotFoundError,
409 FailedPreconditionError, 413 a profile too large; the body is ``{"detail": "<message>", "reason":
"<slug>"}`` (gyre_common.errors).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from google.protobuf import json_format

from gyre_common.errors import TooLarge
from gyre_common.profile import profile_from_proto, profile_to_proto
from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2 as pb
from gyre_monitor.api_grpc import range_report, window_report
from gyre_monitor.handlers import InvalidArgumentError, MonitorHandlers

MAX_PROFILE_BYTES = 16 * 1024 * 1024
"""Largest accepted reference-profile request body."""


def _json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def make_router(handlers: MonitorHandlers) -> APIRouter:
    """The monitor's REST routes under ``/api/v1``."""
    router = APIRouter(prefix="/api/v1", tags=["monitor"])

    @router.get("/models/{model_name}/drift")
    async def latest_drift(model_name: str, version: int | None = Query(None, ge=1)) -> dict[str, Any]:
        """Drift of the latest evaluated window of a model (of one version with ``version``), per feature."""
        record = await handlers.latest_drift(model_name, version)
        body = _json(window_report(record))
        body["window_seq"] = record.window_seq
        body["drifted_features"] = list(record.drifted_features)
        body["alert_id"] = record.alert_id or ""
        return body

    @router.get("/models/{model_name}/drift/windows")
    async def drift_windows(model_name: str, version: int | None = Query(None, ge=1),
                            since: datetime | None = None, limit: int = Query(100, ge=1, le=1000),
                            offset: int = Query(0, ge=0)) -> dict[str, Any]:
        """Evaluated windows of a model, oldest first (drift over time)."""
        records = await handlers.list_windows(model_name, version, since, limit, offset)
        return {"windows": [{**_json(window_report(r)), "window_seq": r.window_seq} for r in records],
                "next_offset": offset + limit if len(records) == limit else None}

    @router.get("/models/{model_name}/versions/{version}/drift-report", response_model=None)
    async def drift_report(model_name: str, version: int, start: datetime | None = None,
                           end: datetime | None = None,
                           format: str = Query("json", pattern="^(json|html)$")) -> dict[str, Any] | HTMLResponse:
        """On-demand drift of the predictions served in [start, end) (default: the last hour);
        ``format=html`` returns Evidently's HTML report."""
        report = await handlers.drift_report(model_name, version, start, end, include_html=format == "html")
        if format == "html":
            return HTMLResponse(report.html)
        return _json(range_report(report))

    @router.get("/alerts")
    async def alerts(model: str | None = None, since: datetime | None = None,
                     limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> dict[str, Any]:
        """Alerts, newest first."""
        payloads = await handlers.list_alerts(model, since, limit, offset)
        return {"alerts": [_json(events_pb2.MonitorAlert.FromString(p)) for p in payloads],
                "next_offset": offset + limit if len(payloads) == limit else None}

    @router.get("/models/{model_name}/versions/{version}/reference-profile")
    async def get_profile(model_name: str, version: int) -> dict[str, Any]:
        """A version's reference profile (gyre.monitor.v1.ReferenceProfile as JSON)."""
        stored = await handlers.get_reference_profile(model_name, version)
        return _json(profile_to_proto(stored.profile))

    @router.put("/models/{model_name}/versions/{version}/reference-profile")
    async def put_profile(model_name: str, version: int, request: Request) -> JSONResponse:
        """Store a version's reference profile (JSON of gyre.monitor.v1.ReferenceProfile; the path
        names the model and version)."""
        body = await request.body()
        if len(body) > MAX_PROFILE_BYTES:
            raise TooLarge(f"profile larger than {MAX_PROFILE_BYTES} bytes")
        message = pb.ReferenceProfile()
        try:
            json_format.Parse(body or b"{}", message)
        except json_format.ParseError as exc:
            raise InvalidArgumentError(str(exc)) from None
        message.model_name, message.model_version = model_name, version
        stored, _ = await handlers.set_reference_profile(profile_from_proto(message), source="api")
        return JSONResponse(_json(profile_to_proto(stored.profile)), status_code=200)

    return router
