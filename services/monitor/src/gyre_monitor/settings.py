"""Settings of the monitor (environment prefix ``GYRE_MONITOR_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from gyre_common.settings import OutboxSettings


class MonitorSettings(OutboxSettings):
    """Where the monitor listens, how it windows traffic and when it alerts."""

    model_config = SettingsConfigDict(env_prefix="GYRE_MONITOR_")

    http_port: int = 7700
    """HTTP port: REST API (`/api/v1/...`), `/healthz`, `/readyz`, `/metrics`."""

    grpc_port: int = 7701
    """gRPC port: `gyre.monitor.v1.MonitorService` and `grpc.health.v1`."""

    window_size: int = Field(default=500, ge=10, le=100_000)
    """Predictions per tumbling drift window of one model version (a full window is tested at once)."""

    window_max_age_s: float = Field(default=0.0, ge=0.0)
    """Event-time length of a window in seconds: a prediction served this long after the window's first
    closes it early; 0 closes by count only."""

    min_window_rows: int = Field(default=30, ge=1)
    """Fewest predictions a time-closed window needs to be tested; smaller ones are recorded as too small."""

    drift_share: float = Field(default=0.5, gt=0.0, le=1.0)
    """Share of drifted features at which a window counts as drifted (Evidently's default 0.5)."""

    cooldown_s: float = Field(default=3600.0, ge=0.0)
    """Seconds (event time) between two retraining requests of one model, and between two alerts of one
    continuing drift episode."""

    keep_windows: int = Field(default=20, ge=1)
    """Closed windows per model version whose raw inputs are kept (on-demand reports; dedupe horizon of
    redelivered predictions)."""

    consumer_group: str = "monitor"
    """Kafka consumer group reading `inference.events` (also names the dead-letter topic)."""

    registry_consumer_group: str = "monitor-registry"
    """Kafka consumer group reading `registry.events` for new versions' reference profiles."""

    promote_to_alias: str = "production"
    """Alias a retrained model is asked to win (TrainingRequest.promote_to_alias); empty registers without promotion."""

    profile_cache_size: int = Field(default=64, ge=1)
    """Reference profiles kept prepared in memory (one per model version being served)."""

    max_embedded_texts: int = Field(default=500, ge=2, le=5000)
    """Most texts of one text feature embedded per window (a seeded sample beyond): embedding drift's cost,
    about 65 texts/s per CPU core with all-MiniLM-L6-v2. Needs the `text` extra (gyre-monitor[text])."""

    max_report_rows: int = Field(default=50_000, ge=100)
    """Most predictions an on-demand drift report reads; a longer time range is refused as invalid."""
