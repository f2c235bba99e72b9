"""Settings base for every Gyre process, on pydantic-settings.

Conventions (docs/configuration.md is generated from these classes):

* every field has a docstring right under it (``use_attribute_docstrings``): that text is the
  documentation of the environment variable;
* each service has one env prefix, ``GYRE_<SERVICE>_``; settings shared by all services have their
  own prefix (``GYRE_KAFKA_``, ``GYRE_DATABASE_``, ``GYRE_TELEMETRY_``) so one value serves all;
* a required setting that is missing stops start-up with :class:`SettingsError`, whose message
  names the environment variable and says what it is for.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class GyreSettings(BaseSettings):
    """Base of every settings class: env-driven, documented, strict about unknown values."""

    model_config = SettingsConfigDict(
        env_prefix="GYRE_",
        extra="ignore",
        use_attribute_docstrings=True,
        validate_default=True,
        frozen=True,
    )

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable that sets ``field``."""
        prefix = cls.model_config.get("env_prefix") or ""
        return f"{prefix}{field}".upper()


class KafkaSettings(GyreSettings):
    """Where the Kafka-protocol broker is and how Gyre's clients talk to it."""

    model_config = SettingsConfigDict(env_prefix="GYRE_KAFKA_")

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated host:port list of Kafka brokers (Tansu in development, Apache Kafka in production)."""

    topic_prefix: str = "gyre."
    """Prefix put before every topic name, e.g. `gyre.` gives `gyre.features.events`."""

    client_id: str = "gyre"
    """Kafka client id reported to the broker (the service name is appended)."""

    default_partitions: int = 6
    """Partitions given to a topic when Gyre creates it. More partitions allow more consumers per group."""

    replication_factor: int = 1
    """Replication factor for topics Gyre creates (1 for a single broker, 3 in production)."""

    max_retries: int = 5
    """Attempts a consumer makes at a failing handler before the record goes to the dead-letter topic."""

    retry_backoff_ms: int = 100
    """First back-off between handler retries in milliseconds; doubles on each attempt (capped at 10 s)."""

    batch_max_records: int = 500
    """Most records a consumer hands to its handler in one batch."""

    consumer_stall_after_s: float = Field(default=60.0, gt=0)
    """Seconds a consumer may hold records without finishing any (waiting for the database or the
    broker to come back, retrying) before the service reports not ready; the time is exported as
    `gyre_bus_consumer_stalled_seconds`."""

    linger_ms: int = 5
    """How long the producer waits to fill a batch before sending, in milliseconds."""

    request_timeout_ms: int = 30000
    """Producer request timeout in milliseconds; past it a publish fails with a clear error."""

    session_timeout_ms: int = 10000
    """Consumer-group session timeout in milliseconds: a member silent this long loses its partitions.
    Tansu also waits about half of it for members when a group (re)joins, so tests use less."""

    heartbeat_interval_ms: int = 3000
    """Milliseconds between consumer heartbeats; keep it under a third of `session_timeout_ms`."""


class DatabaseSettings(GyreSettings):
    """Where the PostgreSQL database is. Each service keeps its tables in its own schema."""

    model_config = SettingsConfigDict(env_prefix="GYRE_DATABASE_")

    url: str = "postgresql://postgres@127.0.0.1:7432/gyre"
    """PostgreSQL URL (libpq form). `make up` starts an embedded PostgreSQL here unless set to another server."""

    pool_min_size: int = 1
    """Connections the pool keeps open at rest."""

    pool_max_size: int = 10
    """Most connections the pool opens."""

    connect_timeout_s: float = 5.0
    """Seconds to wait for a connection before the database counts as unreachable."""

    statement_timeout_s: float = Field(default=30.0, ge=0)
    """Seconds one SQL statement may run before PostgreSQL cancels it (the pool's
    `statement_timeout`; 0 turns it off), so a runaway query fails instead of holding a connection.
    Migrations run without it; the features service's training-set stream too (the trainer bounds it)."""


class TelemetrySettings(GyreSettings):
    """Traces and metrics. The standard `OTEL_*` variables of the OpenTelemetry SDK also apply."""

    model_config = SettingsConfigDict(env_prefix="GYRE_TELEMETRY_")

    otlp_endpoint: str | None = None
    """OTLP gRPC endpoint (e.g. `http://otel-collector:4317`) that receives traces; unset keeps traces in-process."""

    log_level: str = "INFO"
    """Log level of the process: DEBUG, INFO, WARNING or ERROR."""

    http_metrics: bool = False
    """FastAPI's own per-request HTTP metrics (`http.server.request.duration`, active requests) on
    `/metrics`. Off by default: they cost 15-30% of a small request (measured on serving's REST
    inference), and each service already counts the requests it serves in its own metrics."""


class ServiceSettings(GyreSettings):
    """Settings every service has. Subclasses set ``env_prefix="GYRE_<SERVICE>_"`` and add their own."""

    http_host: str = "127.0.0.1"
    """Address the HTTP server binds (use 0.0.0.0 in a container)."""

    http_port: int = 0
    """HTTP port: REST API, `/healthz`, `/readyz`, `/metrics`."""

    grpc_port: int = 0
    """gRPC port: the service's gRPC API and `grpc.health.v1`."""

    grpc_host: str = "127.0.0.1"
    """Address the gRPC server binds (use 0.0.0.0 in a container)."""

    shutdown_grace_s: float = 10.0
    """Seconds SIGTERM waits for in-flight work (requests, handler batches) before stopping anyway."""

    readiness_interval_s: float = 1.0
    """Seconds between checks of the broker and the database that drive readiness."""

    readiness_timeout_s: float = 2.0
    """Seconds one readiness check (broker, database, ...) may take before it counts as failing."""

    http_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=0)
    """Largest HTTP request body in bytes (4 MiB); a larger one, declared or streamed in chunks,
    gets 413 `too_large`. Routes that document another limit (e.g. artifact uploads) keep theirs."""

    grpc_max_receive_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Largest gRPC request message in bytes (gRPC's own default, 4 MiB); a larger one fails with
    RESOURCE_EXHAUSTED before any handler runs."""

    grpc_max_send_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Largest gRPC response message in bytes (4 MiB, what gRPC clients accept by default); a
    handler answering more fails the call with RESOURCE_EXHAUSTED. Large results are streamed in chunks."""

    grpc_max_concurrent_rpcs: int = Field(default=1000, ge=1)
    """Most gRPC calls the server handles at once; a call beyond it is refused at once with
    RESOURCE_EXHAUSTED rather than queued without bound."""


class OutboxSettings(ServiceSettings):
    """Settings of a service that publishes events through the transactional outbox
    (:mod:`gyre_common.outbox`); its settings class derives from this one instead of
    :class:`ServiceSettings`, so the names and defaults are the same in every such service."""

    outbox_poll_interval_s: float = Field(default=0.5, gt=0.0)
    """Seconds between looks at the outbox for unsent events; a commit that queued events wakes the
    relay at once, so this only bounds the delay of events another replica queued."""

    outbox_batch_size: int = Field(default=200, ge=1)
    """Most outbox events the relay publishes in one round."""

    outbox_max_backoff_s: float = Field(default=5.0, gt=0.0)
    """Longest wait, in seconds, between relay attempts while the broker is away (the wait doubles
    from 0.1 s up to this)."""

    outbox_retention_hours: float = Field(default=168.0, ge=0.0)
    """Hours a published outbox row is kept (for inspection) before the relay deletes it."""


class SettingsError(SystemExit):
    """Start-up stops because a setting is missing or invalid; the message names the variable."""


_S = TypeVar("_S", bound=GyreSettings)


def load_settings(cls: type[_S], **overrides: Any) -> _S:
    """Read ``cls`` from the environment, turning validation errors into one clear message."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            env = cls.env_name(field)
            info = cls.model_fields.get(field)
            doc = (info.description or "").strip() if info else ""
            if error["type"] == "missing":
                lines.append(f"missing required setting {env}: {doc}")
            else:
                lines.append(f"invalid setting {env}={error.get('input')!r}: {error['msg']}. {doc}")
        raise SettingsError(f"{cls.__name__}: " + "; ".join(lines)) from None
