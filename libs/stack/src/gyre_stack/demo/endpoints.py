"""Where the story finds things: every service's HTTP and gRPC address, the broker, the ``gyre`` CLI."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from gyre_common.service import discover_services
from gyre_common.settings import KafkaSettings, ServiceSettings, load_settings
from gyre_common.topics import full_name
from gyre_stack.demo.checks import LoopError

#: Services the loop needs, in the order they are checked; the dashboard comes last.
SERVICES = ("tracking", "features", "trainer", "registry", "serving", "feedback", "monitor", "dashboard")


@dataclass(frozen=True)
class Service:
    """One running service: base URL of its HTTP API and host:port of its gRPC API."""

    name: str
    http: str
    grpc: str


@dataclass(frozen=True)
class Endpoints:
    """Every address the loop talks to."""

    bootstrap_servers: str
    topic_prefix: str
    services: dict[str, Service]

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def topic(self, base: str) -> str:
        """The full name of topic ``base`` (``training.events``) under this stack's prefix."""
        return full_name(base, self.topic_prefix)

    @classmethod
    def from_env(cls) -> Endpoints:
        """The addresses `make up` uses: each service's settings from this environment (defaults
        otherwise), on loopback; the broker and prefix from ``GYRE_KAFKA_*``.

        Raises:
            LoopError: a service the loop needs is not installed.
            SettingsError: a ``GYRE_*`` variable does not parse.
        """
        specs = {spec.name: spec for spec in discover_services()}
        missing = [name for name in SERVICES if name not in specs]
        if missing:
            raise LoopError(f"services not installed: {', '.join(missing)} (run `make install`)")
        services = {}
        for name in SERVICES:
            settings: ServiceSettings = load_settings(specs[name].settings)
            services[name] = Service(name, f"http://127.0.0.1:{settings.http_port}",
                                     f"127.0.0.1:{settings.grpc_port}")
        kafka = load_settings(KafkaSettings)
        return cls(kafka.bootstrap_servers, kafka.topic_prefix, services)


def gyre_cli() -> list[str]:
    """The ``gyre`` console script next to this interpreter (or the module, when not installed as a script)."""
    script = Path(sys.executable).with_name("gyre")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gyre_cli.main"]
