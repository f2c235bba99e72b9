"""The service runner end to end: the sample service as a real process against Tansu and PostgreSQL.

The broker and database here are private to this module (not the session ones) because the tests
stop and restart them to watch readiness follow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.process import ServiceProcess

from gyre_stack.broker import Broker, start_broker, start_broker_on_free_port
from gyre_stack.ports import free_port
from gyre_stack.postgres import Postgres, start_postgres_on_free_port

pytestmark = pytest.mark.integration

MODULE = "tests.support.sample_service"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = start_postgres_on_free_port(tmp_path_factory.mktemp("runner-pg") / "data")
    yield server
    server.destroy()


class BrokerHandle:
    """A Tansu that tests may stop and start again on the same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.broker: Broker | None = start_broker_on_free_port(folder / "tansu.log")
        self.port = self.broker.port

    def start(self) -> None:
        self.broker = start_broker(self.port, self.folder / "tansu.log")

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerHandle]:
    handle = BrokerHandle(tmp_path_factory.mktemp("runner-tansu"))
    yield handle
    handle.stop()


@pytest.fixture
def sample_env(private_postgres: Postgres, private_broker: BrokerHandle) -> dict[str, str]:
    return {
        "GYRE_SAMPLE_GREETING": "hello",
        "GYRE_SAMPLE_READINESS_INTERVAL_S": "0.2",
        "GYRE_SAMPLE_READINESS_TIMEOUT_S": "1.0",
        "GYRE_SAMPLE_SHUTDOWN_GRACE_S": "5",
        "GYRE_DATABASE_URL": private_postgres.url("postgres"),
        "GYRE_DATABASE_CONNECT_TIMEOUT_S": "2",
        "GYRE_KAFKA_BOOTSTRAP_SERVERS": private_broker.bootstrap_servers,
    }


class Sample:
    """A started sample service and its endpoints."""

    def __init__(self, process: ServiceProcess) -> None:
        self.process = process
        ready = process.wait_ready_line()
        self.http = f"http://127.0.0.1:{ready['http_port']}"
        self.grpc = f"127.0.0.1:{ready['grpc_port']}"

    def get(self, path: str, timeout: float = 5.0) -> httpx.Response:
        return httpx.get(self.http + path, timeout=timeout)

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what} within {timeout}s; service log:\n{self.process.log()[-4000:]}")

    def ready(self) -> bool:
        return self.get("/readyz").status_code == 200

    def grpc_status(self, service: str = "") -> int:
        async def check() -> int:
            async with grpc.aio.insecure_channel(self.grpc) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                return int(reply.status)

        return asyncio.run(check())


@pytest.fixture
def sample(sample_env: dict[str, str]) -> Iterator[Sample]:
    process = ServiceProcess(MODULE, sample_env)
    try:
        yield Sample(process)
    finally:
        process.kill()


def test_serves_health_readiness_metrics_and_its_own_routes(sample: Sample) -> None:
    assert sample.get("/healthz").json() == {"status": "alive"}
    sample.wait_until(sample.ready, 15, "/readyz did not turn 200")
    body = sample.get("/readyz").json()
    assert body["ready"] is True and body["failing"] == []
    assert {"database", "broker", "sample"} <= set(body["checks"])
    assert sample.grpc_status("") == SERVING
    assert sample.grpc_status("sample") == SERVING

    # The migration ran at start: the route's table exists in the service's schema.
    assert httpx.post(sample.http + "/greetings").status_code == 200
    assert sample.get("/greetings").json() == {"greeting": "hello", "stored": ["hello"]}

    assert sample.get("/slow").status_code == 200
    metrics = sample.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE sample_requests_total counter" in metrics.text
    assert "process_cpu_seconds_total" in metrics.text


def test_readiness_follows_the_database(sample: Sample, private_postgres: Postgres) -> None:
    sample.wait_until(sample.ready, 15, "/readyz did not turn 200")
    private_postgres.stop()
    assert not private_postgres.running(), private_postgres.log_path.read_text()[-2000:]
    try:
        sample.wait_until(lambda: "database" in sample.get("/readyz").json()["failing"], 15,
                          "/readyz did not report the database failing")
        assert sample.get("/readyz").status_code == 503
        assert sample.grpc_status("") == NOT_SERVING
        assert sample.get("/healthz").status_code == 200  # alive all the same
    finally:
        private_postgres.start()
    sample.wait_until(sample.ready, 15, "/readyz did not recover after the database came back")
    assert sample.grpc_status("sample") == SERVING


def test_readiness_follows_the_broker(sample: Sample, private_broker: BrokerHandle) -> None:
    sample.wait_until(sample.ready, 15, "/readyz did not turn 200")
    private_broker.stop()
    try:
        sample.wait_until(lambda: sample.get("/readyz").json()["failing"] == ["broker"], 15,
                          "/readyz did not report the broker failing")
        assert sample.grpc_status("") == NOT_SERVING
    finally:
        private_broker.start()
    sample.wait_until(sample.ready, 15, "/readyz did not recover after the broker came back")
    assert sample.grpc_status("") == SERVING


def test_sigterm_finishes_the_in_flight_request_and_exits_zero(sample: Sample) -> None:
    sample.wait_until(sample.ready, 15, "/readyz did not turn 200")
    outcome: dict[str, object] = {}

    async def slow_call_then_sigterm() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            call = asyncio.create_task(client.get(sample.http + "/slow"))
            # Signal only once the server is inside the handler, so the request really is in flight.
            await asyncio.to_thread(sample.process.wait_for_record,
                                    lambda r: r.get("msg") == "slow request started", 10)
            sample.process.terminate()
            signalled = time.monotonic()
            response = await call
            outcome["status"] = response.status_code
            outcome["body"] = response.json()
            outcome["signalled"] = signalled

    asyncio.run(slow_call_then_sigterm())
    assert outcome["status"] == 200 and outcome["body"] == {"slept_s": 0.8}
    assert sample.process.wait(timeout=5) == 0
    assert time.monotonic() - float(outcome["signalled"]) < 5  # type: ignore[arg-type]
    messages = [record.get("msg") for record in sample.process.records()]
    assert "ticker stopped" in messages, sample.process.log()
    assert messages.index("shutting down") < messages.index("ticker stopped") < messages.index("stopped")


def test_missing_required_setting_exits_naming_the_variable(sample_env: dict[str, str]) -> None:
    env = {key: value for key, value in sample_env.items() if key != "GYRE_SAMPLE_GREETING"}
    process = ServiceProcess(MODULE, env)
    try:
        assert process.wait(timeout=30) != 0
        assert "GYRE_SAMPLE_GREETING" in process.log()
    finally:
        process.kill()


def test_unreachable_database_exits_naming_the_variable_without_the_password(
        sample_env: dict[str, str]) -> None:
    env = {**sample_env, "GYRE_DATABASE_URL": f"postgresql://gyre:pw-9f3a@127.0.0.1:{free_port()}/gyre"}
    process = ServiceProcess(MODULE, env)
    try:
        assert process.wait(timeout=30) == 1
        log = process.log()
        assert "GYRE_DATABASE_URL" in log
        assert "pw-9f3a" not in log
    finally:
        process.kill()
