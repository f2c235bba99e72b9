"""MLflow's model-registry REST API on the registry's HTTP port (and, proxied, on tracking's).

Paths and methods are MLflow's (``mlflow/protos/model_registry.proto``), under both
``/api/2.0/mlflow`` and ``/ajax-api/2.0/mlflow``: GET takes its fields as query parameters
(repeated ones such as ``order_by`` repeat the parameter), every other method a JSON body. Answers
are MLflow's JSON; errors are MLflow's ``{"error_code": ..., "message": ...}`` from the shared
error map (:mod:`gyre_common.mlflow.errors`: NotFound is RESOURCE_DOES_NOT_EXIST 404, invalid
input and a state that forbids the change INVALID_PARAMETER_VALUE 400, stages and renames
NOT_IMPLEMENTED 501, a missing token UNAUTHENTICATED 401), and the database away is
TEMPORARILY_UNAVAILABLE 503.

Writes take ``Authorization: Bearer <token>`` (what the MLflow client sends from
``MLFLOW_TRACKING_TOKEN``) when the registry has tokens; the token's subject is the audit actor.

The shared gateway (:class:`gyre_common.mlflow.gateway.MlflowGateway`) answers these paths from a
dict keyed by method and path before FastAPI routes anything (matching ~60 routes and FastAPI's
per-route machinery was a visible share of a registry call); the paths do not appear in the
OpenAPI document. Requests are read by the shared reader (:mod:`gyre_common.mlflow.fields`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from starlette.responses import Response

from gyre_common.mlflow.errors import ErrorMap
from gyre_common.mlflow.fields import Fields, read_fields
from gyre_common.mlflow.gateway import Endpoint, MlflowGateway, MlflowJSONResponse
from gyre_registry.auth import Authenticator
from gyre_registry.mlflow.handlers import Json, MlflowRegistryHandlers
from gyre_registry.store import DATABASE_ERRORS

ERRORS = ErrorMap(unavailable=DATABASE_ERRORS,
                  unavailable_message="the registry's database is unavailable; retry later")
"""The registry's MLflow error map: the shared one, with the database driver's connection errors
as TEMPORARILY_UNAVAILABLE."""

Read = Callable[[Fields], Awaitable[Json]]
Write = Callable[[Fields, str], Awaitable[Json]]


def routes(handlers: MlflowRegistryHandlers, auth: Authenticator) -> dict[tuple[str, str], Endpoint]:
    """The MLflow registry endpoints by ``(method, path below a prefix)``."""
    table: dict[tuple[str, str], Endpoint] = {}

    def read(path: str, method: str, handler: Read) -> None:
        async def endpoint(request: Request) -> Response:
            return MlflowJSONResponse(await handler(await read_fields(request, Fields)))

        table[(method, path)] = endpoint

    def write(path: str, method: str, handler: Write) -> None:
        async def endpoint(request: Request) -> Response:
            fields = await read_fields(request, Fields)
            actor = auth.actor(request.headers.get("authorization"), request.headers.get("x-gyre-actor"))
            return MlflowJSONResponse(await handler(fields, actor))

        table[(method, path)] = endpoint

    h = handlers
    write("/registered-models/create", "POST", h.create_registered_model)
    write("/registered-models/rename", "POST", h.rename_registered_model)
    write("/registered-models/update", "PATCH", h.update_registered_model)
    write("/registered-models/delete", "DELETE", h.delete_registered_model)
    read("/registered-models/get", "GET", h.get_registered_model)
    read("/registered-models/search", "GET", h.search_registered_models)
    read("/registered-models/get-latest-versions", "POST", h.get_latest_versions)
    read("/registered-models/get-latest-versions", "GET", h.get_latest_versions)
    write("/registered-models/set-tag", "POST", h.set_registered_model_tag)
    write("/registered-models/delete-tag", "DELETE", h.delete_registered_model_tag)
    write("/registered-models/alias", "POST", h.set_registered_model_alias)
    write("/registered-models/alias", "DELETE", h.delete_registered_model_alias)
    read("/registered-models/alias", "GET", h.get_model_version_by_alias)
    write("/model-versions/create", "POST", h.create_model_version)
    write("/model-versions/update", "PATCH", h.update_model_version)
    write("/model-versions/transition-stage", "POST", h.transition_model_version_stage)
    write("/model-versions/delete", "DELETE", h.delete_model_version)
    read("/model-versions/get", "GET", h.get_model_version)
    read("/model-versions/search", "GET", h.search_model_versions)
    read("/model-versions/get-download-uri", "GET", h.get_model_version_download_uri)
    write("/model-versions/set-tag", "POST", h.set_model_version_tag)
    write("/model-versions/delete-tag", "DELETE", h.delete_model_version_tag)
    return table


def install(app: FastAPI, handlers: MlflowRegistryHandlers, auth: Authenticator) -> None:
    """Answer MLflow's registry API (both prefixes) on ``app``."""
    app.add_middleware(MlflowGateway, routes=routes(handlers, auth), service="registry", errors=ERRORS)
