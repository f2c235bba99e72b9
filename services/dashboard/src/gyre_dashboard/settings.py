"""Settings of the dashboard (environment prefix ``GYRE_DASHBOARD_``).

The upstream addresses default to the ports of docs/architecture (DESIGN.md) on loopback, which is
where `make up` runs every service; in a container set each one to the service's name.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from gyre_common.settings import ServiceSettings

#: The services the dashboard watches, in the order the page lists them.
UPSTREAMS = ("tracking", "features", "trainer", "registry", "serving", "feedback", "monitor")


class DashboardSettings(ServiceSettings):
    """Where the dashboard listens, where the other services are, and how long it waits for them."""

    model_config = SettingsConfigDict(env_prefix="GYRE_DASHBOARD_")

    http_port: int = 7000
    """HTTP port: the operator page `/`, `/api/v1/overview`, `/healthz`, `/readyz`, `/metrics`."""

    grpc_port: int = 7001
    """gRPC port: only `grpc.health.v1` (the dashboard has no gRPC API of its own)."""

    tracking_url: str = "http://127.0.0.1:7100"
    """Base HTTP URL of the tracking service: `/readyz`, experiments and recent runs
    (`/api/v1/experiments`, `/api/v1/runs/search`)."""

    features_url: str = "http://127.0.0.1:7200"
    """Base HTTP URL of the features service (its `/readyz` is polled)."""

    trainer_url: str = "http://127.0.0.1:7300"
    """Base HTTP URL of the trainer: `/readyz` and its training jobs (`/v1/jobs`)."""

    registry_url: str = "http://127.0.0.1:7400"
    """Base HTTP URL of the registry: `/readyz`, models, versions and aliases (`/api/v1/registered-models`)."""

    serving_url: str = "http://127.0.0.1:8080"
    """Base HTTP URL of serving (its `/readyz` is polled)."""

    feedback_url: str = "http://127.0.0.1:7600"
    """Base HTTP URL of the feedback service: `/readyz` and quality per model version."""

    monitor_url: str = "http://127.0.0.1:7700"
    """Base HTTP URL of the monitor: `/readyz`, latest drift per model and alerts."""

    upstream_timeout_s: float = Field(default=2.0, gt=0.0)
    """Seconds one call to another service may take (connect + response); past it that service's
    part of the page shows as unknown instead of holding the page up."""

    max_concurrency: int = Field(default=16, ge=1)
    """Most calls to other services in flight at once while one overview is gathered."""

    cache_ttl_s: float = Field(default=1.0, ge=0.0)
    """Seconds an overview is reused for further page loads (many open browsers cost the other
    services one round of calls per this period); 0 gathers a fresh one on every request."""

    refresh_interval_s: int = Field(default=5, ge=0)
    """Seconds between automatic reloads of the page in the browser; 0 turns auto-refresh off."""

    max_models: int = Field(default=50, ge=1, le=1000)
    """Most registered models shown (and asked about drift and quality)."""

    versions_per_model: int = Field(default=5, ge=1, le=100)
    """Newest versions listed per model."""

    recent_jobs: int = Field(default=15, ge=1, le=1000)
    """Newest training jobs (retraining requests) listed."""

    recent_alerts: int = Field(default=15, ge=1, le=1000)
    """Newest monitor alerts listed."""

    recent_runs: int = Field(default=20, ge=1, le=1000)
    """Newest tracking runs listed, across all experiments by start time: the trainer's searches and
    hyperopt trials and runs logged with the MLflow client alike (at most 1000, tracking's page limit)."""

    quality_window_hours: float = Field(default=24.0, gt=0.0)
    """Feedback quality is shown over the predictions of this many past hours."""

    @field_validator("tracking_url", "features_url", "trainer_url", "registry_url", "serving_url",
                     "feedback_url", "monitor_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL such as http://registry:7400")
        return value

    def upstream_urls(self) -> dict[str, str]:
        """Base URL of every watched service, by service name, in page order."""
        return {name: getattr(self, f"{name}_url") for name in UPSTREAMS}
