"""Tracking's registry proxy on its own: what it forwards, what it gives back, a registry that is away."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gyre_common.mlflow.gateway import MlflowGateway
from gyre_stack.ports import free_port
from gyre_tracking.mlflow_api import registry_forward
from gyre_tracking.registry_proxy import RegistryProxy

pytestmark = pytest.mark.integration


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """``app`` on a free local port (the proxy's client speaks real HTTP); its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the stand-in registry did not start"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def tracking_app(proxy: RegistryProxy) -> FastAPI:
    """Tracking's MLflow front without tracking's own endpoints: registry paths go to ``proxy``."""
    app = FastAPI()
    app.add_middleware(MlflowGateway, routes={}, service="tracking", forward=registry_forward(proxy))
    return app


def _echo_registry() -> tuple[FastAPI, list[dict[str, Any]]]:
    """A stand-in registry that records each request and answers 418 with a JSON body."""
    app = FastAPI()
    seen: list[dict[str, Any]] = []

    @app.api_route("/{path:path}", methods=["GET", "POST", "PATCH", "DELETE"])
    async def echo(path: str, request: Request) -> JSONResponse:
        body = await request.body()
        seen.append({"method": request.method, "path": "/" + path, "query": request.url.query,
                     "body": body, "authorization": request.headers.get("authorization"),
                     "actor": request.headers.get("x-gyre-actor"), "cookie": request.headers.get("cookie")})
        return JSONResponse({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"{len(body)} bytes"},
                            status_code=418)

    return app, seen


async def test_forwards_method_path_query_body_and_credentials_unchanged() -> None:
    upstream, seen = _echo_registry()
    big = {"name": "m", "description": "x" * 300_000}
    async with serving(upstream) as registry_url:
        proxy = RegistryProxy(registry_url)
        app = tracking_app(proxy)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tracking") as client:
                got = await client.get("/api/2.0/mlflow/registered-models/search",
                                       params=[("filter", "name LIKE 'a%'"), ("order_by", "name"), ("order_by", "x")],
                                       headers={"authorization": "Bearer t1", "cookie": "secret=1"})
                patched = await client.patch("/ajax-api/2.0/mlflow/model-versions/update", json=big,
                                             headers={"x-gyre-actor": "ana"})
                other = await client.get("/api/2.0/mlflow/runs/search")
                # Keep-alive: the next call reuses the connection and still gets its own answer.
                again = await client.request("DELETE", "/api/2.0/mlflow/registered-models/delete", json={"name": "m"})
        finally:
            await proxy.stop()
    assert got.status_code == 418 and got.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert seen[0]["method"] == "GET" and seen[0]["path"] == "/api/2.0/mlflow/registered-models/search"
    assert seen[0]["query"] == "filter=name+LIKE+%27a%25%27&order_by=name&order_by=x"
    assert seen[0]["authorization"] == "Bearer t1" and seen[0]["cookie"] is None
    assert patched.status_code == 418 and patched.json()["message"] == f"{len(seen[1]['body'])} bytes"
    assert seen[1]["method"] == "PATCH" and seen[1]["path"] == "/ajax-api/2.0/mlflow/model-versions/update"
    assert seen[1]["actor"] == "ana" and len(seen[1]["body"]) > 300_000
    assert other.status_code == 404 and other.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    assert again.status_code == 418 and seen[2]["method"] == "DELETE" and json.loads(seen[2]["body"]) == {"name": "m"}
    assert len(seen) == 3  # only registry paths are forwarded


async def test_registry_away_answers_temporarily_unavailable() -> None:
    proxy = RegistryProxy(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    app = tracking_app(proxy)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tracking") as client:
            answer = await client.post("/api/2.0/mlflow/registered-models/create", json={"name": "m"})
    finally:
        await proxy.stop()
    assert answer.status_code == 503
    assert answer.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
