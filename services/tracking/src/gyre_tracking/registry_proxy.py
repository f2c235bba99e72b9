"""Tracking's pass-through of MLflow's model-registry REST API to the registry service.

An MLflow client talks to one address, ``MLFLOW_TRACKING_URI`` (tracking, 7100), also for the model
registry unless ``MLFLOW_REGISTRY_URI`` says otherwise. The registry is owned by the registry
service, so tracking forwards every ``/api/2.0/mlflow/registered-models/*`` and
``/api/2.0/mlflow/model-versions/*`` call (and the ``/ajax-api/`` equivalents of MLflow's web UI)
to the registry's MLflow-compatible endpoints, unchanged: method, path, query string, body,
``authorization`` / ``x-gyre-actor`` / ``content-type`` headers. The answer comes back as the
registry gave it (status, JSON body, errors included), streamed through without buffering.
One ``httpx.AsyncClient`` with keep-alive connections serves every call.

When the registry cannot be reached, the caller gets MLflow's ``TEMPORARILY_UNAVAILABLE`` (HTTP
503), which the MLflow client retries.

Wiring (tracking's bootstrap)::

    proxy = RegistryProxy(RegistryProxySettings())
    ctx.app.include_router(proxy.router)   # before any catch-all /api/2.0/mlflow route
    ctx.add_task(proxy)                   # closes the connections at shutdown

or, without the shutdown hook, ``ctx.app.include_router(make_registry_proxy_router())``.
"""

from __future__ import annotations

import logging

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

log = logging.getLogger(__name__)

PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
RESOURCES = ("registered-models", "model-versions")
METHODS = ["GET", "POST", "PATCH", "DELETE"]

_FORWARDED_REQUEST_HEADERS = ("authorization", "x-gyre-actor", "content-type", "content-length", "accept",
                               "traceparent", "tracestate")
_FORWARDED_RESPONSE_HEADERS = ("content-type",)


class RegistryProxy:
    """The proxy: an APIRouter (:attr:`router`) and a lifecycle (``start``/``stop``) for its client.

    Args:
        registry_url: HTTP address of the registry (``GYRE_TRACKING_REGISTRY_URL``).
        timeout_s: seconds to wait for the registry before answering 503.
        max_connections: keep-alive connections to the registry kept open at most.
    """

    def __init__(self, registry_url: str, *, timeout_s: float = 30.0, max_connections: int = 32) -> None:
        self.registry_url = registry_url.rstrip("/")
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._client: httpx.AsyncClient | None = None
        self.router = self._routes()

    @property
    def client(self) -> httpx.AsyncClient:
        """The shared client, created on first use (inside the serving event loop)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.registry_url,
                timeout=httpx.Timeout(self._timeout_s),
                limits=httpx.Limits(max_connections=self._max_connections,
                                    max_keepalive_connections=self._max_connections),
            )
        return self._client

    async def start(self) -> None:
        """Nothing to open ahead of time (the client connects on first use)."""

    async def stop(self) -> None:
        """Close the keep-alive connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def forward(self, request: Request) -> Response:
        """Send ``request`` to the registry and stream its answer back unchanged."""
        headers = {k: v for k in _FORWARDED_REQUEST_HEADERS if (v := request.headers.get(k)) is not None}
        outgoing = self.client.build_request(
            request.method, request.url.path, params=request.url.query.encode() or None, headers=headers,
            content=request.stream() if request.method != "GET" else None,
        )
        try:
            answer = await self.client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            log.warning("registry unreachable at %s: %s", self.registry_url, type(exc).__name__)
            return JSONResponse(
                {"error_code": "TEMPORARILY_UNAVAILABLE",
                 "message": f"the model registry at {self.registry_url} cannot be reached; retry later"},
                status_code=503,
            )
        return StreamingResponse(
            answer.aiter_raw(), status_code=answer.status_code,
            headers={k: v for k in _FORWARDED_RESPONSE_HEADERS if (v := answer.headers.get(k)) is not None},
            background=BackgroundTask(answer.aclose),
        )

    def _routes(self) -> APIRouter:
        router = APIRouter(tags=["mlflow-registry-proxy"])
        for prefix in PREFIXES:
            for resource in RESOURCES:
                router.add_api_route(f"{prefix}/{resource}/{{rest:path}}", self.forward, methods=METHODS,
                                     include_in_schema=False, name=f"registry proxy {prefix}/{resource}")
        return router
