"""The HTTP side every service shares: a FastAPI app with ``/healthz``, ``/readyz`` and ``/metrics``,
the answers of :mod:`gyre_common.errors`, and 503 while a dependency is away."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gyre_common.bus.failures import Failure, classify_failure
from gyre_common.errors import GyreError, InvalidArgument, Unavailable, error_body
from gyre_common.health import Readiness
from gyre_common.limits import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware
from gyre_common.telemetry import Telemetry

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
"""``Retry-After`` of a 503 answered while a dependency is away, in seconds. Short on purpose: the
outages seen here (a PostgreSQL restart, a broker failover) last seconds, the database pool
reconnects by itself, and a client that keeps failing backs off on its own terms."""

OUTAGE_MESSAGE = "a dependency of this service (its database or the broker) is unavailable; retry later"
"""The ``detail`` of that 503 (and of the gRPC UNAVAILABLE status, :mod:`gyre_common.grpc_errors`)."""


def describe_failure(exc: BaseException) -> str:
    """``"<Type>: <message>"`` of ``exc`` and of its causes, on one line (for a warning without a traceback)."""
    parts: list[str] = []
    link: BaseException | None = exc
    seen = 0
    while link is not None and seen < 4:
        parts.append(f"{type(link).__name__}: {link}" if str(link) else type(link).__name__)
        link, seen = link.__cause__, seen + 1
    return " <- ".join(parts)


def health_router(readiness: Readiness, telemetry: Telemetry) -> APIRouter:
    """Routes for probes and scraping (left out of the OpenAPI schema).

    * ``GET /healthz``: 200 ``{"status": "alive"}`` while the process runs.
    * ``GET /readyz``: 200 with each check's detail when all pass, else 503 with the same body,
      whose ``failing`` lists the checks that failed.
    * ``GET /metrics``: Prometheus text exposition.
    """
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        body = readiness.detail()
        body["failing"] = readiness.failing()
        return JSONResponse(body, status_code=200 if readiness.is_ready else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        payload, content_type = telemetry.metrics_payload()
        return Response(payload, media_type=content_type)

    return router


async def http_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI exception handler for :class:`~gyre_common.errors.GyreError`: its ``http_status``,
    ``http_headers`` and :func:`~gyre_common.errors.error_body`."""
    assert isinstance(exc, GyreError)
    return JSONResponse(error_body(exc), status_code=exc.http_status, headers=dict(exc.http_headers) or None)


def install_http_errors(app: FastAPI) -> None:
    """Answer every :class:`~gyre_common.errors.GyreError` a route raises with :func:`http_error_handler`
    (:func:`create_app` does it; only an app built otherwise needs it)."""
    app.add_exception_handler(GyreError, http_error_handler)


class DependencyOutageMiddleware:
    """Answers 503 ``{"detail", "reason": "unavailable"}`` with ``Retry-After`` when a route fails
    because a dependency is away: any exception :func:`~gyre_common.bus.failures.classify_failure`
    calls transient (PostgreSQL or the broker unreachable, restarting, out of connections; a
    timeout), also when wrapped (``raise StoreError(...) from exc``). Logged as one warning line,
    without a traceback: it is an outage, not a bug. Other exceptions pass on (500), and so does
    one raised after the answer started (its status is already sent).

    A :class:`~gyre_common.errors.GyreError` never gets here: the exception handler of
    :func:`install_http_errors`, inside this middleware, answers it first with its own status.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started or classify_failure(exc) is not Failure.TRANSIENT:
                raise
            log.warning("%s %s answered 503, a dependency is unavailable: %s",
                        scope.get("method"), scope.get("path"), describe_failure(exc))
            response = JSONResponse(error_body(Unavailable(OUTAGE_MESSAGE)), status_code=503,
                                    headers={"Retry-After": str(RETRY_AFTER_S)})
            await response(scope, receive, send)


class _ServiceApp(FastAPI):
    """FastAPI with the body limit as the outermost middleware of its own, whatever a service adds
    later (the MLflow gateways are middleware too, and must not read bodies past the limit)."""

    def build_middleware_stack(self) -> ASGIApp:
        self.user_middleware.sort(key=lambda middleware: middleware.cls is not BodyLimitMiddleware)
        return super().build_middleware_stack()


def _document_error_bodies(app: FastAPI) -> None:
    """The OpenAPI document says what a 422 may carry: FastAPI's list of validation errors, or the
    shared ``{"detail": "<message>", "reason": "<slug>"}`` of a domain error that maps to 422
    (features' invalid input, the trainer's ``{"detail": {"field", "message"}}``)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            error = schema.get("components", {}).get("schemas", {}).get("HTTPValidationError")
            if error is not None:
                detail = error.setdefault("properties", {}).get("detail", {})
                error["properties"]["detail"] = {"anyOf": [detail, {"type": "string"}, {"type": "object"}],
                                                 "title": "Detail"}
                error["properties"]["reason"] = {"type": "string", "title": "Reason"}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _unstorable_argument(request: Request, exc: Exception) -> Response:
    """400 when asyncpg could not encode a request value as a query argument (text with a lone
    UTF-16 surrogate, which JSON allows and UTF-8 does not; an integer beyond bigint): the input is
    wrong, not the service. Any other database data error stays a 500."""
    cause = exc.__cause__
    if not isinstance(cause, ValueError | OverflowError):
        raise exc
    problem = "text that is not valid Unicode" if isinstance(cause, UnicodeError) else "a value out of range"
    error = InvalidArgument(f"the request carries {problem}")
    return JSONResponse(error_body(error), status_code=error.http_status)


def create_app(title: str, version: str = "0.1.0", *, http_metrics: bool = False,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """An empty FastAPI app for a service; the runner adds the health routes, the service its own.

    A :class:`~gyre_common.errors.GyreError` a route raises answers with its status and the body
    ``{"detail": ..., "reason": ...}`` (see :mod:`gyre_common.errors`). A request body above
    ``max_body_bytes`` (or above the route's own :func:`~gyre_common.limits.body_limit`) answers
    413 with that body, ``reason`` ``too_large`` (:class:`~gyre_common.limits.BodyLimitMiddleware`).
    A route failing because the database or the broker is away answers 503 ``reason``
    ``unavailable`` with ``Retry-After`` (:class:`DependencyOutageMiddleware`), never 500.

    Args:
        http_metrics: FastAPI's native per-request HTTP metrics (``GYRE_TELEMETRY_HTTP_METRICS``).
            Its request spans follow the global tracer provider, which is set only when spans are
            exported (:func:`gyre_common.telemetry.setup_telemetry`).
    """
    app = _ServiceApp(title=title, version=version, telemetry={"metrics": http_metrics})
    install_http_errors(app)
    app.add_exception_handler(asyncpg.DataError, _unstorable_argument)
    _document_error_bodies(app)
    app.add_middleware(DependencyOutageMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    return app
