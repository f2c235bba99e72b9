"""`gyre-stack up/status/down` as a user runs them: the real CLI in a subprocess, real processes.

Every test uses its own state folder and free ports (never 9092/7432, which belong to a real
`make up`), and runs `down` at the end even when it fails, so no process outlives the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from gyre_common.topics import FEATURES_EVENTS, TOPICS, dead_letter_topic, full_name
from gyre_stack.broker import Broker
from gyre_stack.ports import free_port, port_open

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    """One isolated stack: its state folder, ports and environment."""

    home: Path
    broker_port: int
    postgres_port: int
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gyre_stack.cli", *args], cwd=REPO_ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def state(self) -> dict[str, dict[str, object]]:
        """Process records of state.json by name ({} when there is no state file)."""
        path = self.home / "state.json"
        if not path.exists():
            return {}
        return {item["name"]: item for item in json.loads(path.read_text())["processes"]}

    def pids(self) -> dict[str, int]:
        return {name: int(str(record["pid"])) for name, record in self.state().items()}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    # Only the variables a process needs: a developer's own GYRE_* settings must not leak in.
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    started = Stack(tmp_path / "gyre-home", free_port(), free_port(), env)
    env.update({
        "GYRE_HOME": str(started.home),
        "GYRE_STACK_BROKER_PORT": str(started.broker_port),
        "GYRE_STACK_POSTGRES_PORT": str(started.postgres_port),
        "GYRE_STACK_START_TIMEOUT_S": "60",
        # Whatever services happen to be installed are not under test here.
        "GYRE_STACK_SERVICES": "none",
    })
    yield started
    started.run("down")


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def write_module(folder: Path, name: str, body: str, consumes: tuple[str, ...] = ()) -> None:
    """A fake service module: a ServiceSpec named ``name`` whose ``__main__`` runs ``body``."""
    (folder / f"{name}.py").write_text(textwrap.dedent(f'''
        import sys, time
        from pydantic_settings import SettingsConfigDict
        from gyre_common.service import ServiceSpec
        from gyre_common.settings import ServiceSettings

        class Settings(ServiceSettings):
            model_config = SettingsConfigDict(env_prefix="GYRE_{name.upper()}_")

        SPEC = ServiceSpec(name="{name}", settings=Settings, module="{name}", consumes={consumes!r})

        if __name__ == "__main__":
        ''') + textwrap.indent(textwrap.dedent(body), "    "))


async def topics_on(bootstrap_servers: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_up_status_down_with_embedded_postgres(stack: Stack, broker: Broker) -> None:
    result = stack.run("up")
    assert result.returncode == 0, result.stderr
    bootstrap = f"127.0.0.1:{stack.broker_port}"
    database = f"postgresql://postgres@127.0.0.1:{stack.postgres_port}/gyre"
    assert bootstrap in result.stdout and database in result.stdout
    pids = stack.pids()
    assert set(pids) == {"broker", "postgres"}
    assert all((stack.home / "pids" / f"{name}.pid").read_text().strip() == str(pid)
               for name, pid in pids.items())

    assert {full_name(base, "gyre.") for base in TOPICS} <= await topics_on(bootstrap)
    connection = await asyncpg.connect(database)
    try:
        assert await connection.fetchval("SELECT current_database()") == "gyre"
    finally:
        await connection.close()

    status = stack.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "is up" in status.stdout and status.stdout.count(" ready ") == 2

    again = stack.run("up")
    assert again.returncode == 0 and "already up" in again.stdout
    assert stack.pids() == pids

    # A component that died leaves a stale record: status says so, `up` cleans it and restarts it.
    os.kill(pids["broker"], signal.SIGKILL)
    wait_until(lambda: gone(pids["broker"]), "the killed broker to exit")
    dead = stack.run("status")
    assert dead.returncode == 1 and "exited" in dead.stdout
    healed = stack.run("up")
    assert healed.returncode == 0, healed.stderr
    assert "stale pid file of broker" in healed.stdout
    assert stack.pids()["postgres"] == pids["postgres"] and stack.pids()["broker"] != pids["broker"]
    assert {full_name(base, "gyre.") for base in TOPICS} <= await topics_on(bootstrap)

    pids = stack.pids()
    stopped = stack.run("down")
    assert stopped.returncode == 0, stopped.stderr
    assert all(gone(pid) for pid in pids.values())
    assert not port_open("127.0.0.1", stack.broker_port)
    assert not port_open("127.0.0.1", stack.postgres_port)
    assert not (stack.home / "state.json").exists() and not list((stack.home / "pids").iterdir())
    assert (stack.home / "logs" / "broker.log").exists()
    # Nothing else was stopped: the test session's own broker still serves.
    assert port_open(broker.host, broker.port)
    assert stack.run("down").stdout.strip() == "Nothing to stop."


async def test_external_database_starts_no_postgres(stack: Stack, database_url: str) -> None:
    stack.env["GYRE_DATABASE_URL"] = database_url
    result = stack.run("up")
    assert result.returncode == 0, result.stderr
    assert "external database" in result.stdout
    assert set(stack.pids()) == {"broker"}
    assert not (stack.home / "postgres").exists()
    assert not port_open("127.0.0.1", stack.postgres_port)
    status = stack.run("status")
    assert status.returncode == 0 and "external, ready" in status.stdout

    assert stack.run("down").returncode == 0
    # The external server is not ours to stop.
    connection = await asyncpg.connect(database_url)
    await connection.close()


def test_broker_port_taken_is_a_clear_error(stack: Stack) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stack.broker_port))
        squatter.listen()
        result = stack.run("up")
    assert result.returncode == 1
    assert f"broker port {stack.broker_port}" in result.stderr and "already in use" in result.stderr
    assert "GYRE_STACK_BROKER_PORT" in result.stderr
    assert stack.pids() == {}
    assert not port_open("127.0.0.1", stack.postgres_port)


def test_sample_service_up_ready_down(stack: Stack, database_url: str) -> None:
    stack.env.update({
        "GYRE_DATABASE_URL": database_url,
        "GYRE_STACK_EXTRA_SERVICES": "tests.support.sample_service:SPEC",
        "GYRE_SAMPLE_GREETING": "hello",
    })
    result = stack.run("up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "migrations of sample: applied 0001_create_greetings.sql" in result.stdout
    record = stack.state()["sample"]
    assert httpx.get(str(record["ready_url"]), timeout=5).status_code == 200
    endpoints = record["endpoints"]
    assert isinstance(endpoints, dict) and endpoints["http"] in result.stdout
    pid = int(str(record["pid"]))

    stopped = stack.run("down")
    assert stopped.returncode == 0
    assert f"stopped sample (pid {pid})" in stopped.stdout  # SIGTERM was enough, no SIGKILL
    assert gone(pid)
    assert "ticker stopped" in (stack.home / "logs" / "sample.log").read_text()


def test_service_that_exits_is_reported_and_rolled_back(stack: Stack, database_url: str,
                                                         tmp_path: Path) -> None:
    write_module(tmp_path, "crashy", 'print("boom: cannot start", flush=True)\nsys.exit(3)\n')
    stack.env.update({"GYRE_DATABASE_URL": database_url, "PYTHONPATH": str(tmp_path),
                      "GYRE_STACK_EXTRA_SERVICES": "crashy:SPEC"})
    result = stack.run("up")
    assert result.returncode == 1
    assert "service crashy exited with code 3" in result.stderr
    assert "boom: cannot start" in result.stderr  # the log tail
    assert "Stopped what this run had started: broker, crashy" in result.stderr
    assert stack.pids() == {}
    assert not port_open("127.0.0.1", stack.broker_port)


async def test_service_never_ready_times_out(stack: Stack, database_url: str, tmp_path: Path) -> None:
    write_module(tmp_path, "sleepy", 'print("sleeping", flush=True)\ntime.sleep(600)\n',
                 consumes=(FEATURES_EVENTS,))
    stack.env.update({"GYRE_DATABASE_URL": database_url, "PYTHONPATH": str(tmp_path),
                      "GYRE_STACK_EXTRA_SERVICES": "sleepy:SPEC", "GYRE_STACK_READY_TIMEOUT_S": "2"})
    result = stack.run("up", "--keep-on-failure")
    assert result.returncode == 1
    assert "service sleepy was not ready within 2s" in result.stderr and "sleeping" in result.stderr
    assert "Left running as asked" in result.stderr
    pids = stack.pids()
    assert set(pids) == {"broker", "sleepy"} and not any(gone(pid) for pid in pids.values())
    # A consuming service gets its dead-letter topic.
    assert dead_letter_topic("sleepy", "gyre.") in await topics_on(f"127.0.0.1:{stack.broker_port}")

    assert stack.run("status").returncode == 1
    assert stack.run("down").returncode == 0
    assert all(gone(pid) for pid in pids.values())
