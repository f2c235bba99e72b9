"""Settings of the registry (environment prefix ``GYRE_REGISTRY_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from gyre_common.settings import OutboxSettings


class RegistrySettings(OutboxSettings):
    """Where the registry listens, who may write, how it promotes and how it relays its events."""

    model_config = SettingsConfigDict(env_prefix="GYRE_REGISTRY_")

    http_port: int = 7400
    """HTTP port: REST API under `/api/v1`, `/healthz`, `/readyz`, `/metrics`."""

    grpc_port: int = 7401
    """gRPC port: `gyre.registry.v1.RegistryService` and `grpc.health.v1`."""

    auth_tokens: SecretStr | None = None
    """Comma-separated `subject:token` pairs (e.g. `trainer:s3cret,alice:t0ken`). When set, every write
    (gRPC metadata or HTTP header `authorization: Bearer <token>`) needs one of these tokens and its
    subject is the audit actor; unset (the embedded default) leaves writes open."""

    champion_alias: str = "production"
    """Alias the promotion policy gives the first version of a model and every later version that is
    at least as good on the same holdout."""

    challenger_alias: str = "challenger"
    """Alias the promotion policy gives a new version it cannot compare with the champion (other
    holdout, missing metric)."""

    verify_artifacts: bool = True
    """Read each `file://` artifact at registration and check its sha256 and size
    (FAILED_PRECONDITION otherwise). Other URI schemes are not read."""

    outbox_retention_hours: float = Field(default=168.0, ge=0.0)
    """Hours a published outbox row is kept (for inspection) before the relay deletes it."""
