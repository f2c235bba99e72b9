"""The runner in-process (no database, no broker): ports, checks, task failures, telemetry reuse."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.waiting import wait_until

from gyre_common.runner import ServiceContext, ServiceRunner
from gyre_common.service import ServiceSpec
from gyre_common.settings import ServiceSettings, TelemetrySettings
from gyre_common.telemetry import setup_telemetry

pytestmark = pytest.mark.integration

SPEC = ServiceSpec(name="inproc", settings=ServiceSettings, module="unused")


def settings() -> ServiceSettings:
    return ServiceSettings(readiness_interval_s=0.05, readiness_timeout_s=0.5, shutdown_grace_s=2)


async def test_service_checks_drive_readyz_and_grpc_health() -> None:
    healthy = {"value": True}

    async def flaky() -> bool:
        return healthy["value"]

    def build(ctx: ServiceContext) -> None:
        ctx.add_check("flaky", flaky)

    runner = ServiceRunner(SPEC, build, settings=settings(), telemetry_settings=TelemetrySettings())
    await runner.start()
    try:
        assert runner.http_port and runner.grpc_port
        base = f"http://127.0.0.1:{runner.http_port}"
        async with httpx.AsyncClient() as client, \
                grpc.aio.insecure_channel(f"127.0.0.1:{runner.grpc_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def grpc_status() -> int:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service="inproc"), timeout=2)
                return int(reply.status)

            assert runner.context is not None
            readiness = runner.context.readiness
            await wait_until(lambda: readiness.is_ready, 5)
            assert (await client.get(base + "/readyz")).status_code == 200
            assert await grpc_status() == health_pb2.HealthCheckResponse.SERVING

            healthy["value"] = False
            await wait_until(lambda: not readiness.is_ready, 5)
            response = await client.get(base + "/readyz")
            assert response.status_code == 503
            assert response.json()["failing"] == ["flaky"]
            assert response.json()["checks"]["flaky"]["detail"] == "check returned false"
            assert await grpc_status() == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await runner.stop()


async def test_a_background_task_that_dies_stops_the_service_with_exit_code_1() -> None:
    async def doomed() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("consumer lost its mind")

    def build(ctx: ServiceContext) -> None:
        ctx.add_task(doomed)

    runner = ServiceRunner(SPEC, build, settings=settings(), telemetry_settings=TelemetrySettings())
    await runner.start()
    try:
        await asyncio.wait_for(runner.wait_stop_requested(), 5)
        assert runner.exit_code == 1
    finally:
        await runner.stop()


def test_add_task_refuses_what_it_cannot_run() -> None:
    runner_ctx = ServiceContext.__new__(ServiceContext)
    runner_ctx.tasks = []
    with pytest.raises(TypeError, match="start\\(\\)/stop\\(\\)"):
        runner_ctx.add_task(42)  # type: ignore[arg-type]


def test_setup_telemetry_is_idempotent_until_shut_down() -> None:
    first = setup_telemetry("gyre-idem", TelemetrySettings())
    try:
        assert setup_telemetry("gyre-idem", TelemetrySettings()) is first
    finally:
        first.shutdown()
    second = setup_telemetry("gyre-idem", TelemetrySettings())
    try:
        assert second is not first
        assert b"python_info" in second.metrics_payload()[0]
    finally:
        second.shutdown()


async def metrics_after_requests(http_metrics: bool) -> str:
    runner = ServiceRunner(SPEC, lambda ctx: None, settings=settings(),
                           telemetry_settings=TelemetrySettings(http_metrics=http_metrics))
    await runner.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.http_port}") as client:
            for _ in range(3):
                assert (await client.get("/healthz")).status_code == 200
            return (await client.get("/metrics")).text
    finally:
        await runner.stop()


async def test_fastapis_own_http_metrics_are_off_unless_asked() -> None:
    assert "http_server_request_duration" not in await metrics_after_requests(False)
    # On: in a process of its own, since OpenTelemetry's global meter provider is set once per
    # process and the runner above shut its provider down.
    script = ("import asyncio, test_runner_inprocess as t; "
              "print('http_server_request_duration' in asyncio.run(t.metrics_after_requests(True)))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script], capture_output=True, text=True,
                                   timeout=60, cwd=Path(__file__).parent, env=env)
    assert done.stdout.strip().splitlines()[-1:] == ["True"], done.stderr[-2000:]
