"""Run a Gyre service in-process on free ports (tests only)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gyre_common.runner import Build, ServiceRunner
from gyre_common.service import ServiceSpec
from gyre_common.settings import DatabaseSettings, KafkaSettings, ServiceSettings, TelemetrySettings


@asynccontextmanager
async def running(spec: ServiceSpec, build: Build, settings: ServiceSettings, *, kafka: KafkaSettings | None = None,
                  database_url: str | None = None, database: DatabaseSettings | None = None,
                  ) -> AsyncIterator[ServiceRunner]:
    """``spec`` started by a :class:`ServiceRunner` with ``settings`` (give them ``http_port=0,
    grpc_port=0`` for free ports), default telemetry, and the database at ``database_url`` (or
    ``database``); stopped on exit."""
    if database is None and database_url is not None:
        database = DatabaseSettings(url=database_url)
    runner = ServiceRunner(spec, build, settings=settings, kafka=kafka, database=database,
                           telemetry_settings=TelemetrySettings())
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


def fast_settings(settings_class: type[Any], **overrides: Any) -> Any:
    """``settings_class`` on free ports with quick readiness checks and a short shutdown; ``overrides`` win."""
    fields: dict[str, Any] = dict(http_port=0, grpc_port=0, readiness_interval_s=0.1, shutdown_grace_s=3)
    fields.update(overrides)
    return settings_class(**fields)
