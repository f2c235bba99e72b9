"""The HTTP side every service shares: a FastAPI app with ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse

from gyre_common.errors import install_http_errors
from gyre_common.health import Readiness
from gyre_common.telemetry import Telemetry


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


def create_app(title: str, version: str = "0.1.0", *, http_metrics: bool = False) -> FastAPI:
    """An empty FastAPI app for a service; the runner adds the health routes, the service its own.

    A :class:`~gyre_common.errors.GyreError` a route raises answers with its status and the body
    ``{"detail": ..., "reason": ...}`` (see :mod:`gyre_common.errors`).

    Args:
        http_metrics: FastAPI's native per-request HTTP metrics (``GYRE_TELEMETRY_HTTP_METRICS``).
            Its request spans follow the global tracer provider, which is set only when spans are
            exported (:func:`gyre_common.telemetry.setup_telemetry`).
    """
    app = FastAPI(title=title, version=version, telemetry={"metrics": http_metrics})
    install_http_errors(app)
    return app
