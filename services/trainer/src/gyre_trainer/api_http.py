"""The trainer's REST API (FastAPI): the same use cases as gRPC, bodies in proto3 JSON.

* ``POST /v1/jobs`` — body: a ``gyre.events.v1.TrainingRequest`` in proto3 JSON; 201 with
  ``{"job": ..., "duplicate": false}``, 200 with ``duplicate: true`` for a known request id;
  422 for an invalid request, 429 when the queue is full, 401 without a valid token.
* ``GET /v1/jobs?model_name=&page_size=&page_token=`` — jobs, newest first; 400 for a page token
  this API did not issue, 422 for a page size outside 0..1000.
* ``GET /v1/jobs/{job_id}`` and ``GET /v1/requests/{request_id}/job`` — one job; 404 if unknown.
* ``POST /v1/jobs/{job_id}/cancel`` — 404 if unknown, 409 if it already ended.

Errors other than an invalid request (whose 422 ``detail`` is ``{"field", "message"}``) answer
``{"detail": "...", "reason": "..."}`` (gyre_common.errors).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Body, Header, HTTPException, Query
from fastapi.responses import JSONResponse
from google.protobuf import json_format

from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_trainer.auth import TokenAuth
from gyre_trainer.convert import job_to_proto, request_from_proto
from gyre_trainer.domain.jobs import InvalidRequest, Job
from gyre_trainer.handlers import TrainerHandlers

MAX_BODY_KEYS = 64


def job_json(job: Job) -> dict[str, Any]:
    """A job as proto3 JSON (field names as in the proto)."""
    return json_format.MessageToDict(job_to_proto(job), preserving_proto_field_name=True)


def router(handlers: TrainerHandlers, auth: TokenAuth, cancel_local: Callable[[str], bool] | None = None) -> APIRouter:
    """Routes under ``/v1`` (see the module docstring); ``cancel_local`` stops a job running in this
    replica at once."""
    routes = APIRouter(prefix="/v1", tags=["trainer"])
    stop_local = cancel_local or (lambda job_id: False)

    @routes.post("/jobs")
    async def submit(body: dict[str, Any] = Body(...),  # noqa: B008 - FastAPI's idiom
                     authorization: str | None = Header(default=None)) -> JSONResponse:
        who = auth.subject(authorization)  # Unauthenticated: 401 with WWW-Authenticate (gyre_common.errors)
        if len(body) > MAX_BODY_KEYS:
            raise HTTPException(422, "too many fields")
        message = ev.TrainingRequest()
        try:
            json_format.ParseDict(body, message)
        except json_format.ParseError as exc:
            raise HTTPException(422, f"not a TrainingRequest: {exc}") from None
        request = request_from_proto(message)
        if not request.requested_by:
            request = replace(request, requested_by=who)
        try:
            job, duplicate = await handlers.submit(request)
        except InvalidRequest as exc:
            raise HTTPException(422, {"field": exc.field, "message": str(exc)}) from None
        return JSONResponse({"job": job_json(job), "duplicate": duplicate}, status_code=200 if duplicate else 201)

    @routes.get("/jobs")
    async def list_jobs(model_name: str = "", page_size: int = Query(0, ge=0, le=1000),
                        page_token: str = "") -> dict[str, Any]:
        # A page token this API did not issue: InvalidQuery, 400 (the shared error handler).
        jobs, token = await handlers.list_jobs(model_name=model_name, page_size=page_size, page_token=page_token)
        return {"jobs": [job_json(j) for j in jobs], "next_page_token": token}

    @routes.get("/jobs/{job_id}")
    async def get_job(job_id: str) -> dict[str, Any]:
        return job_json(await handlers.get_job(job_id=job_id))

    @routes.get("/requests/{request_id}/job")
    async def get_job_by_request(request_id: str) -> dict[str, Any]:
        return job_json(await handlers.get_job(request_id=request_id))

    @routes.post("/jobs/{job_id}/cancel")
    async def cancel(job_id: str, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        auth.subject(authorization)
        job = await handlers.cancel(job_id)
        stop_local(job_id)
        return job_json(job)

    return routes
