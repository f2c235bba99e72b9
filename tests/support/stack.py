"""Every Gyre service as a real subprocess on one broker and one database (end-to-end and chaos tests).

Services bind port 0 and report their ports in their ``ready`` log line; they start in WAVES so that
each one learns the addresses of the services it calls. A service can be killed and started again
on the ports it reported before (:meth:`Stack.kill`, :meth:`Stack.restart`), so its callers, which
were given those addresses once, still reach it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from gyre_common.service import discover_services
from gyre_stack import demo
from support.process import ServiceProcess

#: Predictions per drift window: small for speed, large enough that unshifted windows of the same
#: data never drift by chance (K-S p-values stay far above 0.05 for 400 of the 569 rows).
WINDOW_ROWS = 400
#: 3 of 30 features shifted is a drift share of 0.1; 0.09 makes exactly that count as dataset drift.
DRIFT_SHARE = 0.09
MAX_EVALS = 5
READY_DEADLINE_S = 120.0
LOG_TAIL = 40

#: Start order: each service binds port 0 and reports the ports it got in its ``ready`` log line;
#: a service starts once every service it calls has reported (trainer and serving call registry,
#: features and tracking; tracking proxies to registry; the dashboard reads them all).
WAVES = (("registry", "features", "feedback", "monitor"), ("tracking", "serving"), ("trainer",), ("dashboard",))


class Stack:
    """The services of one test as subprocesses, with their endpoints.

    Args:
        bootstrap_servers, prefix: the broker and the topic prefix every service uses.
        database_url: the database every service migrates its own schema in.
        artifacts: artifact store folder; serving's disk spool goes to ``<artifacts>/../serving-spool``
            so a test never shares one with the stack of ``make up`` (whose default is relative to
            the checkout) and a restarted serving drains what its predecessor left.
        overrides: extra settings per service name, without the ``GYRE_<NAME>_`` prefix.
    """

    def __init__(self, bootstrap_servers: str, prefix: str, database_url: str, artifacts: Path,
                 overrides: Mapping[str, Mapping[str, str]] | None = None) -> None:
        assert sorted(name for wave in WAVES for name in wave) == sorted(demo.SERVICES)
        self.bootstrap_servers, self.prefix = bootstrap_servers, prefix
        self.services: dict[str, demo.Service] = {}
        self.overrides = {name: dict(values) for name, values in (overrides or {}).items()}
        self.spool = artifacts.parent / "serving-spool"
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
        self._modules = {spec.name: spec.module for spec in discover_services()}

    @property
    def endpoints(self) -> demo.Endpoints:
        """Every service's address, as reported by the service itself once it bound its ports."""
        return demo.Endpoints(self.bootstrap_servers, self.prefix, dict(self.services))

    def env(self, name: str) -> dict[str, str]:
        """The environment of service ``name``: its own ports when it ran before (a restart), else 0."""
        # Port 0: the service binds a port the OS gives it, so no two services can race for one.
        own = {"HTTP_PORT": "0", "GRPC_PORT": "0"}
        if name in self.services:
            own = {"HTTP_PORT": self.services[name].http.rpartition(":")[2],
                   "GRPC_PORT": self.services[name].grpc.rpartition(":")[2]}
        grpc_of = {other: service.grpc for other, service in self.services.items()}
        if name == "trainer":
            own |= {"FEATURES_ADDRESS": grpc_of["features"], "TRACKING_ADDRESS": grpc_of["tracking"],
                    "REGISTRY_ADDRESS": grpc_of["registry"], "DEFAULT_MAX_EVALS": str(MAX_EVALS),
                    "JOB_POLL_INTERVAL_S": "0.5", "RETRY_DELAY_S": "2"}
        elif name == "serving":
            own |= {"REGISTRY_ADDRESS": grpc_of["registry"], "SPOOL_DIR": str(self.spool)}
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
        own |= self.overrides.get(name, {})
        return {**self.common, **{f"GYRE_{name.upper()}_{key}": value for key, value in own.items()}}

    def _launch(self, name: str) -> None:
        self.processes[name] = ServiceProcess(self._modules[name], self.env(name))

    def _record_ports(self, name: str) -> None:
        ready = self.processes[name].wait_ready_line(timeout=READY_DEADLINE_S)
        self.services[name] = demo.Service(name, f"http://127.0.0.1:{ready['http_port']}",
                                           f"127.0.0.1:{ready['grpc_port']}")

    def start(self) -> None:
        """Start the services wave by wave, learning each one's ports from its ``ready`` line."""
        for wave in WAVES:
            for name in wave:
                self._launch(name)
            for name in wave:
                self._record_ports(name)

    def kill(self, name: str) -> None:
        """SIGKILL service ``name`` (no shutdown: in-flight work and buffers are lost as in a crash)."""
        self.processes[name].kill()

    def restart(self, name: str) -> None:
        """Start service ``name`` again on the ports it reported before; returns once it listens.

        Raises:
            AssertionError: it came up on other ports (its callers would no longer reach it).
            TimeoutError: no ``ready`` line within READY_DEADLINE_S (the message carries its log).
        """
        before = self.services[name]
        self.kill(name)
        self._launch(name)
        self._record_ports(name)
        assert self.services[name] == before, f"{name} restarted on {self.services[name]}, not {before}"

    async def not_ready(self, http: httpx.AsyncClient, names: list[str] | None = None) -> dict[str, str]:
        """Services (all, or ``names``) whose /readyz does not answer 200, each with what it said.

        Raises:
            AssertionError: a service process exited.
        """
        last: dict[str, str] = {}
        for name in names or sorted(self.processes):
            code = self.processes[name].process.poll()
            if code is not None:
                raise AssertionError(f"{name} exited with code {code}")
            try:
                response = await http.get(f"{self.endpoints[name].http}/readyz")
            except httpx.HTTPError as exc:
                last[name] = repr(exc)
                continue
            if response.status_code != 200:
                last[name] = f"{response.status_code} {response.text[:300]}"
        return last

    async def wait_ready(self, names: list[str] | None = None, within_s: float = READY_DEADLINE_S) -> None:
        """Every service (or ``names``) answers /readyz 200; fails at once when one exits, or at the deadline."""
        deadline = time.monotonic() + within_s
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                waiting = await self.not_ready(http, names)
                if not waiting:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"not ready within {within_s:.0f}s: "
                                         + "; ".join(f"{n}: {waiting[n]}" for n in sorted(waiting)))
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
