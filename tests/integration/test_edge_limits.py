"""Limits at every edge (docs/runtime.md, "Limits"): HTTP bodies over the limit get 413 whether declared
or chunked, a route's own limit wins, gRPC messages over the limit get RESOURCE_EXHAUSTED, a slow SQL
statement is cancelled, and an invalid reference profile leaves the stored one untouched."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import grpc
import httpx
import pytest
from fastapi import APIRouter, Request
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.kafka import fast_kafka
from support.services import fast_settings, running

from gyre_common.db import create_pool
from gyre_common.limits import body_limit
from gyre_common.runner import ServiceContext
from gyre_common.service import ServiceSpec
from gyre_common.settings import DatabaseSettings, ServiceSettings

pytestmark = pytest.mark.integration

SPEC = ServiceSpec(name="limits", settings=ServiceSettings, module="unused")
LIMIT = 64 * 1024


def build(ctx: ServiceContext) -> None:
    router = APIRouter()

    @router.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @router.post("/upload", openapi_extra=body_limit(None))
    async def upload(request: Request) -> dict[str, int]:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        return {"bytes": total}

    @router.post("/small", openapi_extra=body_limit(16))
    async def small(body: dict[str, int]) -> dict[str, int]:
        return body

    ctx.app.include_router(router)


async def chunks(total: int, size: int = 8192) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        part = min(size, total - sent)
        sent += part
        yield b"x" * part


async def test_http_bodies_over_the_limit_get_413_declared_or_chunked() -> None:
    settings = fast_settings(ServiceSettings, http_max_body_bytes=LIMIT)
    async with running(SPEC, build, settings) as runner, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.http_port}", timeout=30) as http:
        assert (await http.post("/echo", content=b"x" * LIMIT)).json() == {"bytes": LIMIT}

        declared = await http.post("/echo", content=b"x" * (LIMIT + 1))
        assert declared.status_code == 413
        assert declared.json()["reason"] == "too_large"

        # An async iterator: httpx sends it chunked, without Content-Length.
        chunked = await http.post("/echo", content=chunks(LIMIT * 4))
        assert chunked.status_code == 413 and chunked.json()["reason"] == "too_large"
        assert (await http.post("/echo", content=chunks(LIMIT))).json() == {"bytes": LIMIT}

        # A route's own limit, larger (unbounded) or smaller, wins over the service's.
        assert (await http.post("/upload", content=chunks(LIMIT * 4))).json() == {"bytes": LIMIT * 4}
        assert (await http.post("/small", json={"a": 1})).status_code == 200
        assert (await http.post("/small", json={"a": 1, "bb": 2, "ccc": 3})).status_code == 413

        schema = (await http.get("/openapi.json")).json()
        assert schema["paths"]["/small"]["post"]["x-max-body-bytes"] == 16


async def test_grpc_messages_over_the_limit_are_resource_exhausted() -> None:
    settings = fast_settings(ServiceSettings, grpc_max_receive_message_bytes=LIMIT)
    async with running(SPEC, build, settings) as runner, \
            grpc.aio.insecure_channel(f"127.0.0.1:{runner.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Check(health_pb2.HealthCheckRequest(service="x" * (LIMIT + 1)))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.aio.AioRpcError) as raised:  # a small one reaches the servicer
            await stub.Check(health_pb2.HealthCheckRequest(service="unknown"))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_statement_over_the_timeout_is_cancelled(database_url: str) -> None:
    pool = await create_pool(DatabaseSettings(url=database_url, statement_timeout_s=0.2))
    try:
        with pytest.raises(asyncpg.QueryCanceledError):
            await pool.fetchval("SELECT pg_sleep(5)")
        assert await pool.fetchval("SHOW statement_timeout") == "200ms"
    finally:
        await pool.close()


PROFILE = {"rows": 3, "dataset_fingerprint": "abc", "features": [
    {"feature": "x1", "kind": "FEATURE_KIND_NUMERICAL", "values": [1.0, 2.0, 3.0]},
    {"feature": "colour", "kind": "FEATURE_KIND_CATEGORICAL", "category_counts": {"red": 2, "blue": 1}},
]}


async def test_an_invalid_reference_profile_is_422_and_keeps_the_stored_one(
        bootstrap_servers: str, database_url: str, unique: str) -> None:
    from gyre_monitor.bootstrap import bootstrap
    from gyre_monitor.service import SPEC as MONITOR
    from gyre_monitor.settings import MonitorSettings

    kafka = fast_kafka(bootstrap_servers, f"l{unique}.")
    async with running(MONITOR, bootstrap, fast_settings(MonitorSettings), kafka=kafka,
                       database_url=database_url) as runner, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.http_port}/api/v1", timeout=30) as http:
        path = "/models/churn/versions/1/reference-profile"
        stored = await http.put(path, json=PROFILE)
        assert stored.status_code == 200, stored.text
        before = (await http.get(path)).json()
        assert [f["feature"] for f in before["features"]] == ["x1", "colour"]

        for bad in ({}, {"rows": 3, "features": []}, {"rows": "many", "features": PROFILE["features"]},
                    {"rows": 3, "features": [{"feature": "x1", "kind": "FEATURE_KIND_NUMERICAL"}]},
                    {"rows": 3, "features": [{"feature": "x1", "kind": "FEATURE_KIND_NUMERICAL", "values": [1]}] * 2}):
            answer = await http.put(path, json=bad)
            assert answer.status_code == 422, (bad, answer.text)
            assert isinstance(answer.json()["detail"], list) and answer.json()["detail"]
        assert (await http.put(path, content=b"not json", headers={"content-type": "application/json"})
                ).status_code == 422
        assert (await http.put("/models/churn/versions/0/reference-profile", json=PROFILE)).status_code == 422
        assert (await http.get(path)).json() == before
