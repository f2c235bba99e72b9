"""Settings of the features service (environment variables ``GYRE_FEATURES_*``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from gyre_common.settings import ServiceSettings


class FeaturesSettings(ServiceSettings):
    """Feature store: ports, and how it reads the features.events topic."""

    model_config = SettingsConfigDict(env_prefix="GYRE_FEATURES_")

    http_port: int = 7200
    """HTTP port: REST API (`/api/v1/...`), `/healthz`, `/readyz`, `/metrics`."""

    grpc_port: int = 7201
    """gRPC port: `gyre.features.v1.FeaturesService` and `grpc.health.v1`."""

    consume_events: bool = True
    """Whether this process ingests the features.events topic (false: serve reads and writes only)."""

    consumer_group: str = "features"
    """Kafka consumer group of the ingester; also names its dead-letter topic (`<prefix><group>.dlq`)."""
