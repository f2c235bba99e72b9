"""REST adapter (FastAPI): the read API the dashboard uses, mirroring the gRPC messages.

Bodies are the gyre.tracking.v1 response messages in proto3 JSON with snake_case field names
(every field present, timestamps as RFC 3339 UTC strings, int64 values such as ``step`` as
strings, statuses as enum names like ``RUN_STATUS_FINISHED``, NaN as ``"NaN"``).

Routes (prefix ``/api/v1``):

* ``GET  /experiments?page_size=&page_token=`` — active experiments by id;
* ``GET  /experiments/{experiment_id}`` and ``GET /experiments/by-name/{name}``;
* ``GET  /runs/{run_id}`` — a run with latest metrics, params, tags, artifacts;
* ``GET  /runs/{run_id}/metric-history?key=`` — every point of one metric;
* ``POST /runs/search`` — body: SearchRunsRequest as JSON (``experiment_ids``, ``filter``,
  ``order_by``, ``page_size``, ``page_token``); ``GET /runs/search`` takes the same as query
  parameters (repeat ``experiment_ids`` / ``order_by``).

Errors: 400 invalid input (a malformed page token too), 404 unknown experiment or run, 409 conflict;
the body is ``{"detail": "...", "reason": "..."}`` (gyre_common.errors). 422 (FastAPI's validation
list) for a query parameter out of its documented range (``page_size`` above 1000).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from google.protobuf.message import Message

from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2 as pb
from gyre_tracking.convert import experiment_to_proto, metric_to_proto, run_to_proto
from gyre_tracking.domain.errors import InvalidArgument
from gyre_tracking.handlers import MAX_SEARCH_RESULTS, TrackingHandlers

PREFIX = "/api/v1"

PageSize = Annotated[int, Query(ge=0, le=MAX_SEARCH_RESULTS, description="Items per page; 0 for the default (100).")]


def to_json(message: Message) -> dict[str, Any]:
    """A message as proto3 JSON (snake_case, every field present)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def _reply(message: Message) -> JSONResponse:
    return JSONResponse(to_json(message))


def router(handlers: TrackingHandlers) -> APIRouter:
    """The ``/api/v1`` routes over ``handlers``."""
    api = APIRouter(prefix=PREFIX, tags=["tracking"])

    @api.get("/experiments")
    async def list_experiments(page_size: PageSize = 0, page_token: str = "") -> JSONResponse:
        experiments, token = await handlers.list_experiments(page_size, page_token)
        return _reply(pb.ListExperimentsResponse(experiments=[experiment_to_proto(e) for e in experiments],
                                                 next_page_token=token))

    @api.get("/experiments/by-name/{name:path}")
    async def get_experiment_by_name(name: str) -> JSONResponse:
        experiment = await handlers.get_experiment_by_name(name)
        return _reply(pb.GetExperimentResponse(experiment=experiment_to_proto(experiment)))

    @api.get("/experiments/{experiment_id}")
    async def get_experiment(experiment_id: str) -> JSONResponse:
        experiment = await handlers.get_experiment(experiment_id)
        return _reply(pb.GetExperimentResponse(experiment=experiment_to_proto(experiment)))

    async def search(request: pb.SearchRunsRequest) -> JSONResponse:
        runs, token = await handlers.search_runs(
            list(request.experiment_ids), request.filter, list(request.order_by), request.page_size,
            request.page_token)
        return _reply(pb.SearchRunsResponse(runs=[run_to_proto(r) for r in runs], next_page_token=token))

    @api.post("/runs/search")
    async def search_runs_post(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            message = json_format.ParseDict(body, pb.SearchRunsRequest())
        except (ValueError, json_format.ParseError) as exc:
            raise InvalidArgument(f"invalid SearchRunsRequest JSON: {exc}") from None
        return await search(message)

    @api.get("/runs/search")
    async def search_runs_get(experiment_ids: Annotated[list[str], Query()],
                              order_by: Annotated[list[str] | None, Query()] = None,
                              filter: str = "", page_size: PageSize = 0, page_token: str = "") -> JSONResponse:
        return await search(pb.SearchRunsRequest(experiment_ids=experiment_ids, filter=filter,
                                                 order_by=order_by or [], page_size=page_size,
                                                 page_token=page_token))

    @api.get("/runs/{run_id}")
    async def get_run(run_id: str) -> JSONResponse:
        run = await handlers.get_run(run_id)
        return _reply(pb.GetRunResponse(run=run_to_proto(run)))

    @api.get("/runs/{run_id}/metric-history")
    async def metric_history(run_id: str, key: str) -> JSONResponse:
        points = await handlers.metric_history(run_id, key)
        return _reply(pb.GetMetricHistoryResponse(metrics=[metric_to_proto(m) for m in points]))

    return api

