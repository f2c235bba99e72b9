"""MLflow REST adapter: MLflow's tracking API (``/api/2.0/mlflow/...``, and ``/ajax-api/2.0/mlflow/...``
as MLflow's UI calls it) over :class:`~gyre_tracking.handlers.TrackingHandlers`, so that the
unmodified ``mlflow`` client works with ``MLFLOW_TRACKING_URI=http://<tracking>:7100``.

Each route decodes MLflow's JSON (:mod:`gyre_tracking.mlflow_json`), calls one handler and encodes
the answer; there is no business logic here. Every route answers GET (query parameters) and POST
(JSON body), whichever the MLflow client uses for it.

Errors are MLflow's: ``{"error_code": "...", "message": "..."}`` with the HTTP status that MLflow's
client maps back to the same code (``mlflow/exceptions.py``):

| domain error | error_code | HTTP |
|---|---|---|
| InvalidArgument, ParamConflict, FailedPrecondition (deleted run) | INVALID_PARAMETER_VALUE | 400 |
| NotFound | RESOURCE_DOES_NOT_EXIST | 404 |
| AlreadyExists | RESOURCE_ALREADY_EXISTS | 400 |
| Unavailable | TEMPORARILY_UNAVAILABLE | 503 |
| anything else | INTERNAL_ERROR | 500 |

An MLflow endpoint Gyre does not implement answers 404 ``ENDPOINT_NOT_FOUND`` naming it.

:class:`MlflowGateway`, an ASGI middleware, answers every path under :data:`PREFIXES` from a
dict of endpoints (registry paths go to the registry proxy) before FastAPI routes anything:
sequential ``runs/log-metric`` calls spent about a fifth of the service's time matching ~70
routes and resolving FastAPI's per-route machinery for endpoints that take the raw request
anyway. The answers are the same; these paths just do not appear in the OpenAPI document.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from gyre_common import errors
from gyre_tracking import mlflow_json as mj
from gyre_tracking.domain.errors import ParamConflict
from gyre_tracking.handlers import RunBatch, TrackingHandlers
from gyre_tracking.registry_proxy import is_registry_path

PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
"""Where MLflow's clients (REST) and UI (ajax) call the tracking API."""
SERVER_INFO_PATH = "/api/3.0/mlflow/server-info"
"""MLflow 3 clients probe it for capabilities (multipart artifact uploads: none here)."""
MAX_RESULTS = 50_000
"""Largest page of SearchRuns / SearchExperiments, as MLflow's server allows."""
MAX_METRIC_HISTORY_RESULTS = 25_000
"""Largest page of GetMetricHistory, as MLflow's client asks for it."""


def mlflow_error(exc: errors.GyreError) -> tuple[str, int]:
    """MLflow's ``(error_code, HTTP status)`` of a domain error."""
    if isinstance(exc, ParamConflict):
        return "INVALID_PARAMETER_VALUE", 400
    if isinstance(exc, errors.NotFound):
        return "RESOURCE_DOES_NOT_EXIST", 404
    if isinstance(exc, errors.AlreadyExists):
        return "RESOURCE_ALREADY_EXISTS", 400
    if isinstance(exc, errors.InvalidArgument | errors.FailedPrecondition):
        return "INVALID_PARAMETER_VALUE", 400
    if isinstance(exc, errors.Unavailable):
        return "TEMPORARILY_UNAVAILABLE", 503
    return "INTERNAL_ERROR", 500


def error_response(error_code: str, message: str, status: int) -> JSONResponse:
    """An error answer in MLflow's shape."""
    return JSONResponse({"error_code": error_code, "message": message}, status_code=status)


class MlflowRoute(APIRoute):
    """A FastAPI route whose domain errors answer in MLflow's shape instead of Gyre's
    ``{"detail", "reason"}`` (the ``mlflow-artifacts`` routes)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handle(request)
            except errors.GyreError as exc:
                code, status = mlflow_error(exc)
                return error_response(code, str(exc), status)

        return guarded


Route = Callable[[Request], Awaitable[Response]]
"""One MLflow endpoint: the request in, the answer out (domain errors may propagate)."""


class MlflowGateway:
    """ASGI middleware answering MLflow's REST paths (see the module docstring).

    Args:
        app: the rest of the application (every other path).
        routes: endpoints by path below a prefix, e.g. ``/runs/log-metric``; each answers GET and POST.
        registry: the ASGI app registry paths are forwarded to (the registry proxy), or None.
    """

    def __init__(self, app: ASGIApp, routes: dict[str, Route], registry: ASGIApp | None = None) -> None:
        self.app = app
        self.routes = routes
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        for prefix in PREFIXES:
            if path.startswith(prefix + "/"):
                break
        else:
            await self.app(scope, receive, send)
            return
        if self.registry is not None and is_registry_path(path):
            await self.registry(scope, receive, send)
            return
        request = Request(scope, receive)
        route = self.routes.get(path[len(prefix):]) if scope["method"] in ("GET", "POST") else None
        if route is None:
            answer: Response = error_response(
                "ENDPOINT_NOT_FOUND", f"Gyre tracking does not implement {scope['method']} {path} "
                "(see docs/mlflow.md for what is supported)", 404)
        else:
            try:
                answer = await route(request)
            except errors.GyreError as exc:
                code, status = mlflow_error(exc)
                answer = error_response(code, str(exc), status)
        await answer(scope, receive, send)


Endpoint = Callable[[mj.Fields], Awaitable[dict[str, Any]]]


class MlflowJSONResponse(JSONResponse):
    """Starlette's JSONResponse, byte for byte, without the circular-reference check: our bodies
    are trees built per request, and skipping the check is ~15% of encoding a large runs/search."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"),
                          check_circular=False).encode("utf-8")


def routes(handlers: TrackingHandlers) -> dict[str, Route]:
    """MLflow's tracking endpoints by path below a prefix (one of :data:`PREFIXES`)."""
    table: dict[str, Route] = {}

    def endpoint(path: str) -> Callable[[Endpoint], Endpoint]:
        def register(work: Endpoint) -> Endpoint:
            async def route(request: Request) -> Response:
                return MlflowJSONResponse(await work(await mj.read_fields(request)))

            table[path] = route
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

    table["/runs/search"] = search_runs

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
    app.add_middleware(MlflowGateway, routes=routes(handlers), registry=registry)
    app.include_router(server_info_router())
