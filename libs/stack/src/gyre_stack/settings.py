"""Settings of the embedded development stack (`make up`), read from ``GYRE_STACK_*`` and ``GYRE_HOME``.

The services themselves are configured by their own settings classes; the stack only decides
where the broker and the database are (``GYRE_KAFKA_BOOTSTRAP_SERVERS``, ``GYRE_DATABASE_URL``) and
hands those to every service it starts.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from gyre_common.settings import GyreSettings

#: The port a system PostgreSQL usually holds; the embedded one must never take it.
SYSTEM_POSTGRES_PORT = 5432
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class StackSettings(GyreSettings):
    """Where `gyre-stack` keeps its state and which ports the broker and the embedded PostgreSQL use."""

    model_config = SettingsConfigDict(env_prefix="GYRE_STACK_", validate_by_name=True)

    home: Path = Field(default=Path(".gyre"), validation_alias=AliasChoices("GYRE_HOME"))
    """State folder of the stack (pids/, logs/, postgres/, state.json), set by `GYRE_HOME`.
    A relative path starts at the current directory."""

    host: str = "127.0.0.1"
    """Address the broker and the embedded PostgreSQL listen on.
    Keep it on loopback: the embedded PostgreSQL trusts every local connection."""

    broker_port: int = 9092
    """TCP port of the Tansu broker (Kafka protocol)."""

    postgres_port: int = 7432
    """TCP port of the embedded PostgreSQL; never 5432, which a system PostgreSQL may hold."""

    database: str = "gyre"
    """Name of the database `up` creates in the embedded PostgreSQL for the services."""

    ready_timeout_s: float = 90.0
    """Seconds `up` waits for every service it started to answer `GET /readyz` with 200 before it gives up."""

    start_timeout_s: float = 60.0
    """Seconds `up` waits for the broker or the embedded PostgreSQL to accept connections."""

    stop_timeout_s: float = 20.0
    """Seconds `down` waits after SIGTERM for a process to exit before it sends SIGKILL."""

    log_tail_lines: int = 40
    """Lines of a component's log shown when it fails to start or become ready."""

    services: str = "all"
    """Installed services `up` runs: `all`, `none`, or comma-separated names (e.g. `registry,serving`)."""

    extra_services: str = ""
    """Development and testing aid: comma-separated `module:ATTRIBUTE` references to extra
    `ServiceSpec`s that `up` runs besides the installed services."""

    @field_validator("database")
    @classmethod
    def _plain_identifier(cls, name: str) -> str:
        if not _IDENTIFIER.match(name):
            raise ValueError("use lower-case letters, digits and _ (it is spliced into SQL)")
        return name

    @field_validator("postgres_port")
    @classmethod
    def _not_system_postgres(cls, port: int) -> int:
        if port == SYSTEM_POSTGRES_PORT:
            raise ValueError(f"port {SYSTEM_POSTGRES_PORT} belongs to the system PostgreSQL; choose another")
        return port

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable that sets ``field`` (``home`` is `GYRE_HOME`, not prefixed)."""
        if field == "home":
            return "GYRE_HOME"
        return super().env_name(field)

    @property
    def home_dir(self) -> Path:
        """``home`` as an absolute path."""
        return self.home.expanduser().resolve()

    def service_selection(self) -> set[str] | None:
        """Names chosen by ``services``: None for all, an empty set for none."""
        value = self.services.strip().lower()
        if value == "all":
            return None
        if value == "none":
            return set()
        return {name.strip() for name in value.split(",") if name.strip()}

    def extra_service_refs(self) -> list[str]:
        """The ``module:ATTRIBUTE`` entries of ``extra_services``, blanks dropped."""
        return [ref.strip() for ref in self.extra_services.split(",") if ref.strip()]
