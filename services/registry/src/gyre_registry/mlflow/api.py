"""MLflow's model-registry REST API on the registry's HTTP port (and, proxied, on tracking's).

Paths and methods are MLflow's (``mlflow/protos/model_registry.proto``), under both
``/api/2.0/mlflow`` and ``/ajax-api/2.0/mlflow``: GET takes its fields as query parameters
(repeated ones such as ``order_by`` repeat the parameter), every other method a JSON body. Answers
are MLflow's JSON; errors are MLflow's ``{"error_code": ..., "message": ...}`` with the HTTP status
the MLflow client maps back to the same code:

| registry error | ``error_code`` | HTTP |
|---|---|---|
| NotFound | ``RESOURCE_DOES_NOT_EXIST`` | 404 |
| AlreadyExists | ``RESOURCE_ALREADY_EXISTS`` | 400 |
| InvalidArgument | ``INVALID_PARAMETER_VALUE`` | 400 |
| FailedPrecondition | ``RESOURCE_CONFLICT`` | 409 |
| Unauthenticated | ``UNAUTHENTICATED`` | 401 |
| not supported (stages, rename) | ``NOT_IMPLEMENTED`` | 501 |
| database unreachable | ``TEMPORARILY_UNAVAILABLE`` | 503 |

Writes take ``Authorization: Bearer <token>`` (what the MLflow client sends from
``MLFLOW_TRACKING_TOKEN``) when the registry has tokens; the token's subject is the audit actor.

:class:`MlflowGateway`, an ASGI middleware, answers these paths from a dict keyed by method and
path before FastAPI routes anything (matching ~60 routes and FastAPI's per-route machinery was a
visible share of a registry call); other methods and paths go on to the app as before. The paths
do not appear in the OpenAPI document.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gyre_common import errors
from gyre_registry.auth import Authenticator
from gyre_registry.mlflow.handlers import Json, MlflowRegistryHandlers, NotImplementedInGyre
from gyre_registry.store import DATABASE_ERRORS

log = logging.getLogger(__name__)

PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
"""Where MLflow clients (``/api``) and MLflow's web UI (``/ajax-api``) call."""

MAX_BODY_BYTES = 4 * 1024 * 1024

_REPEATED = {"order_by", "stages"}

_CODES: tuple[tuple[type[Exception], str, int], ...] = (
    (NotImplementedInGyre, "NOT_IMPLEMENTED", 501),
    (errors.NotFound, "RESOURCE_DOES_NOT_EXIST", 404),
    (errors.AlreadyExists, "RESOURCE_ALREADY_EXISTS", 400),
    (errors.TooLarge, "INVALID_PARAMETER_VALUE", 413),
    (errors.InvalidArgument, "INVALID_PARAMETER_VALUE", 400),
    (errors.FailedPrecondition, "RESOURCE_CONFLICT", 409),
    (errors.Unauthenticated, "UNAUTHENTICATED", 401),
    (errors.Unavailable, "TEMPORARILY_UNAVAILABLE", 503),
)


def error_response(exc: errors.GyreError) -> JSONResponse:
    """MLflow's error JSON for a registry error."""
    for cls, code, status in _CODES:
        if isinstance(exc, cls):
            return JSONResponse({"error_code": code, "message": str(exc)}, status_code=status)
    return JSONResponse({"error_code": "INTERNAL_ERROR", "message": str(exc)}, status_code=500)


_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
"""A JSON escape of NUL or of a UTF-16 surrogate (a simple pattern: no nested quantifiers)."""
_UNSTORABLE = "NUL characters and unpaired surrogates cannot be stored in text"


def _check_storable_text(value: object) -> None:
    """Refuse any string in ``value`` (keys included) that PostgreSQL text cannot hold: one with a
    NUL character or an unpaired UTF-16 surrogate (walked with a stack: depth does not matter).
    The same check as tracking's ``mlflow_json.check_storable_text`` (services share no code)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise errors.InvalidArgument(f"body: {_UNSTORABLE}") from None
            if "\x00" in item:
                raise errors.InvalidArgument(f"body: {_UNSTORABLE}")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


async def _request_fields(request: Request) -> Json:
    if b"%00" in request.scope.get("query_string", b""):
        raise errors.InvalidArgument(f"query: {_UNSTORABLE} (%00)")
    if request.method == "GET":
        fields: Json = {}
        for key, value in request.query_params.multi_items():
            if key in _REPEATED:
                fields.setdefault(key, []).append(value)
            else:
                fields[key] = value
        return fields
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise errors.TooLarge(f"the body has {len(raw)} bytes; at most {MAX_BODY_BYTES}")
    if not raw.strip():
        return dict(request.query_params)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise errors.InvalidArgument(f"body: not JSON: {exc}") from None
    except RecursionError:
        # Arrays or objects nested deeper than the decoder recurses: refused, not a 500.
        raise errors.InvalidArgument("body: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise errors.InvalidArgument("body: must be a JSON object")
    if b"\x00" in raw or _SUSPECT_ESCAPE.search(raw):
        _check_storable_text(data)
    return data


Read = Callable[[Json], Awaitable[Json]]
Write = Callable[[Json, str], Awaitable[Json]]


Endpoint = Callable[[Request], Awaitable[JSONResponse]]


def routes(handlers: MlflowRegistryHandlers, auth: Authenticator) -> dict[tuple[str, str], Endpoint]:
    """The MLflow registry endpoints by ``(method, path below a prefix)``."""
    table: dict[tuple[str, str], Endpoint] = {}

    async def run(request: Request, call: Callable[[Json], Awaitable[Json]]) -> JSONResponse:
        try:
            return JSONResponse(await call(await _request_fields(request)))
        except errors.GyreError as exc:
            return error_response(exc)
        except DATABASE_ERRORS as exc:
            log.warning("registry database unavailable: %s", type(exc).__name__)
            return error_response(errors.Unavailable("the registry's database is unavailable; retry later"))

    def read(path: str, method: str, handler: Read) -> None:
        async def endpoint(request: Request) -> JSONResponse:
            return await run(request, handler)

        table[(method, path)] = endpoint

    def write(path: str, method: str, handler: Write) -> None:
        async def endpoint(request: Request) -> JSONResponse:
            async def call(body: Json) -> Json:
                actor = auth.actor(request.headers.get("authorization"), request.headers.get("x-gyre-actor"))
                return await handler(body, actor)
            return await run(request, call)

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


class MlflowGateway:
    """ASGI middleware answering MLflow's registry paths (see the module docstring).

    Args:
        app: the rest of the application.
        routes: :func:`routes`.
    """

    def __init__(self, app: ASGIApp, routes: dict[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            for prefix in PREFIXES:
                if path.startswith(prefix + "/"):
                    endpoint = self.routes.get((scope["method"], path[len(prefix):]))
                    if endpoint is not None:
                        answer = await endpoint(Request(scope, receive))
                        await answer(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


def install(app: FastAPI, handlers: MlflowRegistryHandlers, auth: Authenticator) -> None:
    """Answer MLflow's registry API (both prefixes) on ``app``."""
    app.add_middleware(MlflowGateway, routes=routes(handlers, auth))
