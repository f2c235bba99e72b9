"""The closed loop end to end: every service as a real process on a real Tansu and PostgreSQL.

Features <- a plain aiokafka JSON producer; ``gyre train`` -> trainer -> tracking + registry ->
serving (OIP gRPC and REST) -> inference.events -> feedback and monitor; drifted traffic -> alert
and one DRIFT retraining request -> version 2 -> serving swaps under load -> dashboard.

The story and its assertions live in ``scripts/demo.py`` (``make demo`` plays the same story against
the stack of ``make up``); this test gives it a private stack: its own database, topic prefix,
artifact folder and free ports, with small monitor windows and few trials so it stays fast.
Run it alone with ``.venv/bin/pytest -m e2e``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from support.process import REPO_ROOT, ServiceProcess

from gyre_common.service import discover_services
from gyre_common.settings import KafkaSettings
from gyre_stack.prepare import create_topics

pytestmark = pytest.mark.e2e

#: Predictions per drift window: small for speed, large enough that unshifted windows of the same
#: data never drift by chance (K-S p-values stay far above 0.05 for 400 of the 569 rows).
WINDOW_ROWS = 400
#: 3 of 30 features shifted is a drift share of 0.1; 0.09 makes exactly that count as dataset drift.
DRIFT_SHARE = 0.09
MAX_EVALS = 5
READY_DEADLINE_S = 120.0
LOG_TAIL = 40


def load_demo() -> ModuleType:
    """scripts/demo.py as a module (scripts/ is not a package)."""
    path = REPO_ROOT / "scripts" / "demo.py"
    spec = importlib.util.spec_from_file_location("gyre_demo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


demo = load_demo()


#: Start order: each service binds port 0 and reports the ports it got in its ``ready`` log line;
#: a service starts once every service it calls has reported (trainer and serving call registry,
#: features and tracking; tracking proxies to registry; the dashboard reads them all).
WAVES = (("registry", "features", "feedback", "monitor"), ("tracking", "serving"), ("trainer",), ("dashboard",))


class Stack:
    """The services of one test as subprocesses, with their endpoints."""

    def __init__(self, bootstrap_servers: str, prefix: str, database_url: str, artifacts: Path) -> None:
        assert sorted(name for wave in WAVES for name in wave) == sorted(demo.SERVICES)
        self.bootstrap_servers, self.prefix = bootstrap_servers, prefix
        self.services: dict[str, demo.Service] = {}
        self.common = {
            "GYRE_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "GYRE_KAFKA_TOPIC_PREFIX": prefix,
            "GYRE_KAFKA_DEFAULT_PARTITIONS": "2",
            "GYRE_KAFKA_LINGER_MS": "1",
            # Tansu waits about half the session timeout for members when a group (re)joins.
            "GYRE_KAFKA_SESSION_TIMEOUT_MS": "3000",
            "GYRE_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "GYRE_DATABASE_URL": database_url,
            "GYRE_DATABASE_POOL_MAX_SIZE": "4",
            "GYRE_ARTIFACTS_ROOT": str(artifacts),
            "PYTHONUNBUFFERED": "1",
        }
        self.processes: dict[str, ServiceProcess] = {}

    @property
    def endpoints(self) -> demo.Endpoints:
        """Every service's address, as reported by the service itself once it bound its ports."""
        return demo.Endpoints(self.bootstrap_servers, self.prefix, dict(self.services))

    def env(self, name: str) -> dict[str, str]:
        # Port 0: the service binds a port the OS gives it, so no two services can race for one.
        own = {"HTTP_PORT": "0", "GRPC_PORT": "0"}
        grpc_of = {other: service.grpc for other, service in self.services.items()}
        if name == "trainer":
            own |= {"FEATURES_ADDRESS": grpc_of["features"], "TRACKING_ADDRESS": grpc_of["tracking"],
                    "REGISTRY_ADDRESS": grpc_of["registry"], "DEFAULT_MAX_EVALS": str(MAX_EVALS),
                    "JOB_POLL_INTERVAL_S": "0.5", "RETRY_DELAY_S": "2"}
        elif name == "serving":
            own |= {"REGISTRY_ADDRESS": grpc_of["registry"]}
        elif name == "tracking":
            own |= {"REGISTRY_URL": self.services["registry"].http}
        elif name == "monitor":
            own |= {"WINDOW_SIZE": str(WINDOW_ROWS), "DRIFT_SHARE": str(DRIFT_SHARE)}
        elif name == "registry":
            own |= {"OUTBOX_POLL_INTERVAL_S": "0.2"}
        elif name == "dashboard":
            own |= {f"{other.upper()}_URL": self.services[other].http for other in demo.SERVICES
                    if other != "dashboard"}
            own |= {"CACHE_TTL_S": "0"}
        return {**self.common, **{f"GYRE_{name.upper()}_{key}": value for key, value in own.items()}}

    def start(self) -> None:
        """Start the services wave by wave, learning each one's ports from its ``ready`` line."""
        modules = {spec.name: spec.module for spec in discover_services()}
        for wave in WAVES:
            for name in wave:
                self.processes[name] = ServiceProcess(modules[name], self.env(name))
            for name in wave:
                ready = self.processes[name].wait_ready_line(timeout=READY_DEADLINE_S)
                self.services[name] = demo.Service(name, f"http://127.0.0.1:{ready['http_port']}",
                                                   f"127.0.0.1:{ready['grpc_port']}")

    async def wait_ready(self) -> None:
        """Every service answers /readyz 200; fails at once when one exits, or at the deadline."""
        waiting = set(self.processes)
        deadline = time.monotonic() + READY_DEADLINE_S
        last: dict[str, str] = {}
        async with httpx.AsyncClient(timeout=2) as http:
            while waiting:
                for name in sorted(waiting):
                    code = self.processes[name].process.poll()
                    if code is not None:
                        raise AssertionError(f"{name} exited with code {code} before it was ready")
                    try:
                        response = await http.get(f"{self.endpoints[name].http}/readyz")
                    except httpx.HTTPError as exc:
                        last[name] = repr(exc)
                        continue
                    last[name] = f"{response.status_code} {response.text[:300]}"
                    if response.status_code == 200:
                        waiting.discard(name)
                if waiting and time.monotonic() > deadline:
                    raise AssertionError(f"not ready within {READY_DEADLINE_S:.0f}s: "
                                         + "; ".join(f"{n}: {last.get(n)}" for n in sorted(waiting)))
                await asyncio.sleep(0.25)

    def tails(self) -> str:
        parts = []
        for name, process in self.processes.items():
            lines = process.lines[-LOG_TAIL:]
            parts.append(f"----- {name} (exit code {process.process.poll()}), last {len(lines)} lines -----")
            parts.extend(lines)
        return "\n".join(parts)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except Exception:  # still running after the grace period
                process.kill()


@pytest.fixture
def stack(broker: object, bootstrap_servers: str, database_url: str, unique: str,
          tmp_path: Path) -> Iterator[Stack]:
    started = Stack(bootstrap_servers, f"e2e{unique}.", database_url, tmp_path / "artifacts")
    try:
        yield started
    finally:
        started.stop()


async def test_closed_loop(stack: Stack) -> None:
    kafka = KafkaSettings(bootstrap_servers=stack.endpoints.bootstrap_servers,
                          topic_prefix=stack.endpoints.topic_prefix, default_partitions=2)
    # What `make up` does before starting services: every topic, and the dead-letter topics.
    await create_topics(kafka, discover_services())
    plan = demo.Plan(model="cancer", feature_view="breast_cancer", window_rows=WINDOW_ROWS,
                     drifted=demo.drifted_features(DRIFT_SHARE, demo.feature_names()), max_evals=MAX_EVALS,
                     deadline_s=90.0)
    assert len(plan.drifted) == 3
    clock = demo.Clock()
    try:
        stack.start()
        await stack.wait_ready()
        clock(f"all {len(demo.SERVICES)} services ready")
        summary = await demo.run_loop(stack.endpoints, plan, clock)
    except BaseException:
        print(stack.tails())
        raise
    clock(f"v2 promoted by {summary['promotion']}")
    alert = summary["alert"]
    assert sorted(d.feature for d in alert.feature_drifts if d.drifted) == sorted(plan.drifted)
    assert summary["promotion"] == "policy" or summary["promotion"].startswith("SetAlias")
