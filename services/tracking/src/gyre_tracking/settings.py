"""Settings of the tracking service (environment variables ``GYRE_TRACKING_*``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from gyre_common.settings import ServiceSettings


class TrackingSettings(ServiceSettings):
    """Tracking service: ports, where run artifacts live by default, and the tracking.events ingester."""

    model_config = SettingsConfigDict(env_prefix="GYRE_TRACKING_")

    http_port: int = 7100
    """HTTP port: REST API (`/api/v1/...`), `/healthz`, `/readyz`, `/metrics`."""

    grpc_port: int = 7101
    """gRPC port: `gyre.tracking.v1.TrackingService` and `grpc.health.v1`."""

    default_artifact_root: str | None = None
    """URI under which experiments without an explicit artifact location keep their runs' artifacts
    (`<root>/<experiment id>/<run id>/artifacts`); unset uses `mlflow-artifacts:/`, i.e. MLflow clients
    upload through this server, which stores the files under `artifacts_destination`."""

    artifacts_destination: str | None = None
    """Directory where files uploaded through MLflow's proxied artifact API (`/api/2.0/mlflow-artifacts/...`)
    are stored, as `<experiment id>/<run id>/artifacts/<path>`; unset uses `<GYRE_ARTIFACTS_ROOT>/tracking`."""

    consume_events: bool = True
    """Whether this process ingests the tracking.events topic (false: serve the APIs only)."""

    consumer_group: str = "tracking"
    """Kafka consumer group of the ingester; also names its dead-letter topic (`<prefix><group>.dlq`)."""

    registry_url: str = "http://127.0.0.1:7400"
    """HTTP address of the registry service. MLflow clients send model-registry calls
    (`/api/2.0/mlflow/registered-models/*`, `/api/2.0/mlflow/model-versions/*`) to tracking, which
    forwards them there unchanged."""

    registry_timeout_s: float = 30.0
    """Seconds to wait for the registry (connect, and between bytes of its answer) before answering 503."""

    registry_max_connections: int = 32
    """Keep-alive connections to the registry kept open at most."""
