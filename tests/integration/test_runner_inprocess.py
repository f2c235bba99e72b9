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
from support.services import running
from support.waiting import wait_until

from gyre_common.runner import TASK_RESTARTS, RestartPolicy, ServiceContext, ServiceRunner
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


def restarts(task: str) -> float:
    return float(TASK_RESTARTS.labels("inproc", task)._value.get())


async def test_a_background_task_that_dies_is_restarted_and_the_service_keeps_running() -> None:
    calls: list[int] = []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("consumer lost its mind")
        if len(calls) == 3:
            return  # ending on its own is a failure too
        await asyncio.Event().wait()  # the fourth run lives on

    def build(ctx: ServiceContext) -> None:
        ctx.task_policy = RestartPolicy(first_delay_s=0.01, max_delay_s=0.05, unready_after=10)
        ctx.add_task(flaky)

    before = restarts("flaky")
    async with running(SPEC, build, settings()) as runner:
        assert runner.context is not None
        await wait_until(lambda: len(calls) == 4, 10, what="three restarts")
        assert restarts("flaky") == before + 3
        await wait_until(lambda: runner.context is not None and runner.context.readiness.is_ready, 5)
        assert not runner._stop_requested.is_set() and runner.exit_code == 0


async def test_a_task_that_keeps_dying_makes_the_service_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    async def doomed() -> None:
        raise RuntimeError("consumer lost its mind")

    def build(ctx: ServiceContext) -> None:
        ctx.task_policy = RestartPolicy(first_delay_s=0.01, max_delay_s=0.02, unready_after=3)
        ctx.add_task(doomed)

    async with running(SPEC, build, settings()) as runner:
        assert runner.context is not None
        readiness = runner.context.readiness
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.http_port}") as client:
            async def failing() -> bool:
                body = (await client.get("/readyz")).json()
                return "background-tasks" in body["failing"]

            await wait_until(failing, 10, what="background-tasks failing")
            detail = (await client.get("/readyz")).json()["checks"]["background-tasks"]["detail"]
        assert "doomed failed" in detail and "RuntimeError: consumer lost its mind" in detail
        assert not readiness.is_ready and runner.exit_code == 0 and not runner._stop_requested.is_set()
    logged = [r for r in caplog.records if r.getMessage().startswith("background task doomed failed")]
    assert logged and logged[0].exc_info is not None  # with its traceback


class Component:
    """A start()/stop() component whose own task can die (``running`` turns False)."""

    def __init__(self) -> None:
        self.alive = True

    @property
    def running(self) -> bool:
        return self.alive

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


async def test_a_component_that_stops_running_makes_the_service_not_ready() -> None:
    component = Component()

    def build(ctx: ServiceContext) -> None:
        ctx.add_task(component, name="consumer")

    async with running(SPEC, build, settings()) as runner:
        assert runner.context is not None
        readiness = runner.context.readiness
        await wait_until(lambda: readiness.is_ready, 5, what="ready")
        component.alive = False
        await wait_until(lambda: not readiness.is_ready, 5, what="not ready")
        component.alive = True
        await wait_until(lambda: readiness.is_ready, 5, what="ready again")


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
