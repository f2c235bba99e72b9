"""The one place that wires the tracking service: store, handlers, REST, gRPC, ingester."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from gyre_common.artifacts import ArtifactSettings
from gyre_common.runner import ServiceContext
from gyre_common.settings import load_settings
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2_grpc as pb_grpc
from gyre_tracking import api_http
from gyre_tracking.api_grpc import SERVICE_NAME, TrackingServicer
from gyre_tracking.consumers import TrackingEventsConsumer
from gyre_tracking.handlers import TrackingHandlers
from gyre_tracking.settings import TrackingSettings
from gyre_tracking.store import PostgresStore


def artifact_root(settings: TrackingSettings) -> str:
    """The default artifact root URI: the setting, else ``<GYRE_ARTIFACTS_ROOT>/tracking`` as a file URI."""
    if settings.default_artifact_root:
        return settings.default_artifact_root.rstrip("/")
    return (Path(load_settings(ArtifactSettings).root).resolve() / "tracking").as_uri()


async def bootstrap(ctx: ServiceContext) -> None:
    """Wire the service into the runner's context (the runner has migrated the schema already)."""
    settings = cast(TrackingSettings, ctx.settings)
    handlers = TrackingHandlers(PostgresStore(ctx.db), artifact_root(settings))
    await handlers.ensure_default_experiment()
    api_http.install(ctx.app, handlers)
    ctx.add_servicer(pb_grpc.add_TrackingServiceServicer_to_server, TrackingServicer(handlers), name=SERVICE_NAME)
    if settings.consume_events:
        ctx.add_task(TrackingEventsConsumer(handlers, ctx.kafka, settings.consumer_group), name="tracking-ingester")
