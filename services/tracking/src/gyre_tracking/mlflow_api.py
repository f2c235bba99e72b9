"""MLflow REST adapter: MLflow's tracking API (``/api/2.0/mlflow/...``, and ``/ajax-api/2.0/mlflow/...``
as MLflow's UI calls it) over :class:`~gyre_tracking.handlers.TrackingHandlers`, so that the
unmodified ``mlflow`` client works with ``MLFLOW_TRACKING_URI=http://<tracking>:7100``.

Each endpoint decodes MLflow's JSON (:mod:`gyre_tracking.mlflow_json`), calls one handler and
encodes the answer; there is no business logic here. Every endpoint answers GET (query parameters)
and POST (JSON body), whichever the MLflow client uses for it.

The shared MLflow layer (:mod:`gyre_common.mlflow`) does the rest: its gateway answers these paths
from a dict before FastAPI routes anything and forwards registry paths to the registry proxy; its
error map gives MLflow's ``error_code`` and status (:data:`ERRORS`: the shared table, with a param
logged again with another value as INVALID_PARAMETER_VALUE, as MLflow answers it); an MLflow
endpoint Gyre does not implement answers 404 ``ENDPOINT_NOT_FOUND`` naming it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from starlette.types import ASGIApp

from gyre_common.mlflow.errors import INVALID_PARAMETER_VALUE, ErrorMap
from gyre_common.mlflow.gateway import Endpoint, MlflowGateway, MlflowJSONResponse
from gyre_tracking import mlflow_json as mj
from gyre_tracking.domain.errors import ParamConflict
from gyre_tracking.handlers import RunBatch, TrackingHandlers
from gyre_tracking.registry_proxy import is_registry_path

SERVER_INFO_PATH = "/api/3.0/mlflow/server-info"
"""MLflow 3 clients probe it for capabilities (multipart artifact uploads: none here)."""
MAX_RESULTS = 50_000
"""Largest page of SearchRuns / SearchExperiments, as MLflow's server allows."""
MAX_METRIC_HISTORY_RESULTS = 25_000
"""Largest page of GetMetricHistory, as MLflow's client asks for it."""

ERRORS = ErrorMap(overrides=[(ParamConflict, INVALID_PARAMETER_VALUE)])
"""Tracking's MLflow error map (:mod:`gyre_common.mlflow.errors`)."""


def registry_forward(registry: ASGIApp | None) -> Callable[[str], ASGIApp | None] | None:
    """The gateway's ``forward``: registry paths to ``registry`` (the registry proxy), when given."""
    if registry is None:
        return None
    return lambda path: registry if is_registry_path(path) else None


Work = Callable[[mj.Fields], Awaitable[dict[str, Any]]]


def routes(handlers: TrackingHandlers) -> dict[tuple[str, str], Endpoint]:
    """MLflow's tracking endpoints by ``(method, path below a prefix)``; each answers GET and POST."""
    table: dict[tuple[str, str], Endpoint] = {}

    def endpoint(path: str) -> Callable[[Work], Work]:
        def register(work: Work) -> Work:
            async def route(request: Request) -> Response:
                return MlflowJSONResponse(await work(await mj.read_fields(request)))

            table[("GET", path)] = table[("POST", path)] = route
            return work

        return register

    # -- experiments -------------------------------------------------------------------------

    @endpoint("/experiments/create")
    async def create_experiment(f: mj.Fields) -> dict[str, Any]:
        experiment = await handlers.create_experiment(
            f.string("name", required=True), f.string("artifact_location"), f.key_values("tags"))
        return {"experiment_id": experiment.experiment_id}

    @endpoint("/experiments/get")
    async def get_experiment(f: mj.Fields) -> dict[str, Any]:
        experiment = await handlers.get_experiment(f.string("experiment_id", required=True))
        return {"experiment": mj.experiment_json(experiment)}

    @endpoint("/experiments/get-by-name")
    async def get_experiment_by_name(f: mj.Fields) -> dict[str, Any]:
        experiment = await handlers.get_experiment_by_name(f.string("experiment_name", required=True))
        return {"experiment": mj.experiment_json(experiment)}

    @endpoint("/experiments/search")
    async def search_experiments(f: mj.Fields) -> dict[str, Any]:
        found, token = await handlers.search_experiments(
            view=f.view_type("view_type"), filter_text=f.string("filter"), order_by=f.strings("order_by"),
            page_size=f.integer("max_results", default=1000) or 0, page_token=f.string("page_token"),
            max_page_size=MAX_RESULTS)
        body: dict[str, Any] = {"experiments": [mj.experiment_json(e) for e in found]}
        if token:
            body["next_page_token"] = token
        return body

    @endpoint("/experiments/update")
    async def update_experiment(f: mj.Fields) -> dict[str, Any]:
        await handlers.rename_experiment(f.string("experiment_id", required=True),
                                         f.string("new_name", required=True))
        return {}

    @endpoint("/experiments/delete")
    async def delete_experiment(f: mj.Fields) -> dict[str, Any]:
        await handlers.delete_experiment(f.string("experiment_id", required=True))
        return {}

    @endpoint("/experiments/restore")
    async def restore_experiment(f: mj.Fields) -> dict[str, Any]:
        await handlers.restore_experiment(f.string("experiment_id", required=True))
        return {}

    @endpoint("/experiments/set-experiment-tag")
    async def set_experiment_tag(f: mj.Fields) -> dict[str, Any]:
        await handlers.set_experiment_tag(f.string("experiment_id", required=True), f.string("key", required=True),
                                          f.string("value"))
        return {}

    @endpoint("/experiments/delete-experiment-tag")
    async def delete_experiment_tag(f: mj.Fields) -> dict[str, Any]:
        await handlers.delete_experiment_tag(f.string("experiment_id", required=True),
                                             f.string("key", required=True))
        return {}

    # -- runs --------------------------------------------------------------------------------

    @endpoint("/runs/create")
    async def create_run(f: mj.Fields) -> dict[str, Any]:
        start = f.integer("start_time")
        run = await handlers.create_run(
            f.string("experiment_id", default=handlers.default_experiment_id), run_name=f.string("run_name"),
            start_time=None if start is None else mj.from_millis(start, "start_time"), tags=f.key_values("tags"),
            user=f.string("user_id"))
        return {"run": mj.run_json(run)}

    @endpoint("/runs/get")
    async def get_run(f: mj.Fields) -> dict[str, Any]:
        return {"run": mj.run_json(await handlers.get_run(f.run_id()))}

    @endpoint("/runs/update")
    async def update_run(f: mj.Fields) -> dict[str, Any]:
        end = f.integer("end_time")
        info = await handlers.update_run(f.run_id(), status=f.status(),
                                         end_time=None if end is None else mj.from_millis(end, "end_time"),
                                         run_name=f.string("run_name") or None)
        return {"run_info": mj.run_info_json(info)}

    @endpoint("/runs/delete")
    async def delete_run(f: mj.Fields) -> dict[str, Any]:
        await handlers.delete_run(f.run_id())
        return {}

    @endpoint("/runs/restore")
    async def restore_run(f: mj.Fields) -> dict[str, Any]:
        await handlers.restore_run(f.run_id())
        return {}

    @endpoint("/runs/log-metric")
    async def log_metric(f: mj.Fields) -> dict[str, Any]:
        stamp = f.integer("timestamp", required=True)
        assert stamp is not None
        await handlers.log_metrics(f.run_id(), [(f.string("key", required=True), f.number("value"),
                                                 f.integer("step", default=0) or 0, mj.from_millis(stamp))])
        return {}

    @endpoint("/runs/log-parameter")
    async def log_param(f: mj.Fields) -> dict[str, Any]:
        await handlers.log_params(f.run_id(), [(f.string("key", required=True), f.string("value"))])
        return {}

    @endpoint("/runs/set-tag")
    async def set_tag(f: mj.Fields) -> dict[str, Any]:
        await handlers.set_tags(f.run_id(), [(f.string("key", required=True), f.string("value"))])
        return {}

    @endpoint("/runs/delete-tag")
    async def delete_tag(f: mj.Fields) -> dict[str, Any]:
        await handlers.delete_tag(f.run_id(), f.string("key", required=True))
        return {}

    @endpoint("/runs/log-batch")
    async def log_batch(f: mj.Fields) -> dict[str, Any]:
        metrics = mj.plain_metric_points(f.data.get("metrics"))
        if metrics is None:
            metrics = []
            for point in f.objects("metrics"):
                stamp = point.integer("timestamp", required=True)
                assert stamp is not None
                metrics.append((point.string("key", required=True), point.number("value"),
                                point.integer("step", default=0) or 0, mj.from_millis(stamp)))
        await handlers.log_batch(f.run_id(), RunBatch(metrics=metrics, params=f.key_values("params"),
                                                      tags=f.key_values("tags")), limit_total=True)
        return {}

    async def search_runs(request: Request) -> Response:
        # The runs come from the store as JSON texts already (PostgreSQL renders them), so the
        # body is spliced together instead of going through dicts and json.dumps.
        f = await mj.read_fields(request)
        runs, token = await handlers.search_runs_json(
            f.strings("experiment_ids"), f.string("filter"), f.strings("order_by"),
            f.integer("max_results", default=1000) or 0, f.string("page_token"),
            max_page_size=MAX_RESULTS, view=f.view_type("run_view_type"))
        tail = f',"next_page_token":{json.dumps(token)}}}' if token else "}"
        return Response('{"runs":[' + ",".join(runs) + "]" + tail, media_type="application/json")

    table[("GET", "/runs/search")] = table[("POST", "/runs/search")] = search_runs

    @endpoint("/metrics/get-history")
    async def metric_history(f: mj.Fields) -> dict[str, Any]:
        points, token = await handlers.metric_history_page(
            f.run_id(), f.string("metric_key", required=True), f.integer("max_results", default=0) or 0,
            f.string("page_token"), max_page_size=MAX_METRIC_HISTORY_RESULTS)
        body: dict[str, Any] = {"metrics": [mj.metric_json(m) for m in points]}
        if token:
            body["next_page_token"] = token
        return body

    @endpoint("/artifacts/list")
    async def list_artifacts(f: mj.Fields) -> dict[str, Any]:
        path = f.string("path")
        root_uri, entries = await handlers.list_run_artifacts(f.run_id(), path)
        prefix = path.strip("/")
        files = []
        for entry in entries:
            item: dict[str, Any] = {"path": f"{prefix}/{entry.name}" if prefix else entry.name,
                                    "is_dir": entry.is_dir}
            if entry.size_bytes is not None:
                item["file_size"] = entry.size_bytes
            files.append(item)
        return {"root_uri": root_uri, "files": files}

    @endpoint("/logged-models/search")
    async def search_logged_models(f: mj.Fields) -> dict[str, Any]:
        # MLflow 3's LoggedModel entity is not stored here (models live in Gyre's registry), but
        # the client searches logged models whenever it lists a run's artifacts under a path:
        # "none" is the truthful answer that keeps those calls working.
        return {"models": []}

    return table


def server_info_router() -> APIRouter:
    """``GET /api/3.0/mlflow/server-info``: what MLflow 3 clients probe before artifact transfers."""
    api = APIRouter(tags=["mlflow"])

    @api.get(SERVER_INFO_PATH)
    async def server_info() -> dict[str, Any]:
        return {"store_type": "SqlStore", "workspaces_enabled": False, "multipart_uploads_enabled": False,
                "multipart_downloads_enabled": False}

    return api


def install(app: FastAPI, handlers: TrackingHandlers, registry: ASGIApp | None = None) -> None:
    """Answer MLflow's tracking API (both prefixes) on ``app``, forward registry paths to
    ``registry`` (the registry proxy) when given, and add the server-info probe."""
    app.add_middleware(MlflowGateway, routes=routes(handlers), service="tracking", errors=ERRORS,
                       forward=registry_forward(registry))
    app.include_router(server_info_router())
