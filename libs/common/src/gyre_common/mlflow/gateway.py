"""The one ASGI gateway for MLflow's REST paths (tracking's and the registry's).

:class:`MlflowGateway` is middleware: a request under one of :data:`PREFIXES` is answered from a
dict keyed by ``(method, path below the prefix)`` before FastAPI routes anything. Why not FastAPI
routes: sequential ``runs/log-metric`` calls spent about a fifth of tracking's time matching ~70
routes and resolving FastAPI's per-route machinery, for endpoints that take the raw request anyway
(docs/benchmarks.md); a dict lookup is the whole routing here. These paths therefore do not appear
in the services' OpenAPI documents (tests/integration/test_mlflow_edges.py fuzzes them instead).

* A path with a ``forward`` app (tracking's registry proxy) goes to it unchanged.
* A known ``(method, path)`` calls its endpoint; an error it raises is answered through the
  service's :class:`~gyre_common.mlflow.errors.ErrorMap` (MLflow's ``error_code`` and status),
  anything the map does not know propagates (a 500 with its traceback logged).
* Anything else under the prefixes is MLflow's ``ENDPOINT_NOT_FOUND`` (404) naming the call.

Paths outside the prefixes go on to the app untouched. The app's request-body limit
(:class:`gyre_common.limits.BodyLimitMiddleware`) sits outside this middleware, so bodies read here
are bounded by it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gyre_common.mlflow.errors import DEFAULT_ERRORS, ENDPOINT_NOT_FOUND, ErrorMap, error_response

PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
"""Where MLflow's clients (REST) and its web UI (ajax) call."""

Endpoint = Callable[[Request], Awaitable[Response]]
"""One MLflow endpoint: the request in, the answer out (errors may propagate to the gateway)."""

Routes = Mapping[tuple[str, str], Endpoint]
"""Endpoints by ``(HTTP method, path below a prefix)``, e.g. ``("POST", "/runs/log-metric")``."""


class MlflowJSONResponse(JSONResponse):
    """Starlette's JSONResponse, byte for byte, without the circular-reference check: our bodies
    are trees built per request, and skipping the check is ~15% of encoding a large runs/search."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"),
                          check_circular=False).encode("utf-8")


class MlflowGateway:
    """ASGI middleware answering MLflow's REST paths (see the module docstring).

    Args:
        app: the rest of the application (every other path).
        routes: the endpoints (:data:`Routes`).
        service: the service's name, for the ENDPOINT_NOT_FOUND message.
        errors: how errors become MLflow's answers.
        forward: the app that answers a path (the whole path, prefix included) instead of ``routes``,
            or None; e.g. tracking's registry proxy for ``/registered-models/...``.
    """

    def __init__(self, app: ASGIApp, routes: Routes, *, service: str, errors: ErrorMap = DEFAULT_ERRORS,
                 forward: Callable[[str], ASGIApp | None] | None = None) -> None:
        self.app = app
        self.routes = dict(routes)
        self.service = service
        self.errors = errors
        self.forward = forward

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        for prefix in PREFIXES:
            if path.startswith(prefix + "/"):
                break
        else:
            await self.app(scope, receive, send)
            return
        if self.forward is not None:
            target = self.forward(path)
            if target is not None:
                await target(scope, receive, send)
                return
        method = scope["method"]
        endpoint = self.routes.get((method, path[len(prefix):]))
        if endpoint is None:
            answer: Response = error_response(
                ENDPOINT_NOT_FOUND, f"Gyre {self.service} does not implement {method} {path} "
                "(see docs/mlflow.md for what is supported)")
        else:
            try:
                answer = await endpoint(Request(scope, receive))
            except Exception as exc:
                mapped = self.errors.answer(exc)
                if mapped is None:
                    raise
                answer = mapped
        await answer(scope, receive, send)


def mlflow_route_class(errors: ErrorMap = DEFAULT_ERRORS) -> type[APIRoute]:
    """A FastAPI route class whose errors answer in MLflow's shape (through ``errors``) instead of
    Gyre's ``{"detail", "reason"}``: for MLflow routes that FastAPI serves (tracking's
    ``mlflow-artifacts``, which stream bodies and appear in the OpenAPI document)."""

    class MlflowRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handle = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    return await handle(request)
                except Exception as exc:
                    mapped = errors.answer(exc)
                    if mapped is None:
                        raise
                    return mapped

            return guarded

    return MlflowRoute
