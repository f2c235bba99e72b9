"""The one place that wires the tracking service: store, handlers, REST, gRPC, ingester."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from gyre_common.artifacts import ArtifactSettings
from gyre_common.bus import Consumer, add_consumer
from gyre_common.deadletters import mount_dead_letter_routes
from gyre_common.runner import ServiceContext
from gyre_common.settings import load_settings
from gyre_common.topics import TRACKING_EVENTS
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2_grpc as pb_grpc
from gyre_tracking import api_http, mlflow_api, mlflow_artifacts_api
from gyre_tracking.api_grpc import SERVICE_NAME, TrackingServicer
from gyre_tracking.consumers import TrackingEventsAdapter
from gyre_tracking.handlers import TrackingHandlers
from gyre_tracking.registry_proxy import RegistryProxy
from gyre_tracking.settings import TrackingSettings
from gyre_tracking.store import PostgresStore
from gyre_tracking.store.files import ProxiedArtifactFiles

PROXIED_ARTIFACT_ROOT = "mlflow-artifacts:/"
"""Default artifact root: MLflow clients upload through this server (MLflow's proxied artifact access)."""


def artifact_root(settings: TrackingSettings) -> str:
    """The default artifact root URI: the setting, else ``mlflow-artifacts:/``."""
    if settings.default_artifact_root:
        return settings.default_artifact_root.rstrip("/")
    return PROXIED_ARTIFACT_ROOT


def artifacts_destination(settings: TrackingSettings) -> Path:
    """Where proxied artifact uploads are stored: the setting, else ``<GYRE_ARTIFACTS_ROOT>/tracking``."""
    if settings.artifacts_destination:
        return Path(settings.artifacts_destination)
    return Path(load_settings(ArtifactSettings).root) / "tracking"


async def bootstrap(ctx: ServiceContext) -> None:
    """Wire the service into the runner's context (the runner has migrated the schema already)."""
    settings = cast(TrackingSettings, ctx.settings)
    files = ProxiedArtifactFiles(artifacts_destination(settings))
    handlers = TrackingHandlers(PostgresStore(ctx.db), artifact_root(settings), files=files)
    await handlers.ensure_default_experiment()
    ctx.app.include_router(api_http.router(handlers))
    proxy = RegistryProxy(settings.registry_url, timeout_s=settings.registry_timeout_s,
                          max_connections=settings.registry_max_connections)
    ctx.add_task(proxy, name="registry-proxy")
    mlflow_api.install(ctx.app, handlers, registry=proxy)
    mlflow_artifacts_api.install(ctx.app, files)
    ctx.add_servicer(pb_grpc.add_TrackingServiceServicer_to_server, TrackingServicer(handlers), name=SERVICE_NAME)
    if settings.consume_events:
        group = settings.consumer_group
        add_consumer(ctx, Consumer(ctx.kafka, group=group, topics=[TRACKING_EVENTS], service="tracking",
                                   batch_handler=TrackingEventsAdapter(handlers, group)),
                     name="tracking-ingester")
    mount_dead_letter_routes(ctx)  # /api/v1/dead-letters for the consumer's group
