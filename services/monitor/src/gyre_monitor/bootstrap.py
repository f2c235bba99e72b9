"""The one place that wires the monitor: store, handlers, adapters, consumers, background tasks."""

from __future__ import annotations

import logging

from gyre_common.artifacts import ArtifactSettings, LocalArtifactStore
from gyre_common.bus import Consumer, add_consumer
from gyre_common.deadletters import mount_dead_letter_routes
from gyre_common.outbox import add_outbox
from gyre_common.runner import ServiceContext
from gyre_common.settings import load_settings
from gyre_common.topics import INFERENCE_EVENTS, MONITOR_ALERTS, REGISTRY_EVENTS, TRAINING_REQUESTS
from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2_grpc as pb_grpc
from gyre_monitor import api_http
from gyre_monitor.api_grpc import SERVICE_NAME, MonitorServicer
from gyre_monitor.consumers import InferenceEventsAdapter, RegistryEventsAdapter
from gyre_monitor.domain.drift import DriftOptions
from gyre_monitor.domain.windows import WindowPolicy
from gyre_monitor.embeddings import text_embedder
from gyre_monitor.handlers import MonitorConfig, MonitorHandlers
from gyre_monitor.report import render_drift_html
from gyre_monitor.settings import MonitorSettings
from gyre_monitor.store import PostgresStore

log = logging.getLogger(__name__)


def monitor_config(settings: MonitorSettings) -> MonitorConfig:
    """Handler configuration from the settings."""
    return MonitorConfig(
        window=WindowPolicy(settings.window_size, settings.window_max_age_s, settings.min_window_rows),
        drift=DriftOptions(drift_share=settings.drift_share, max_embedded_texts=settings.max_embedded_texts),
        cooldown_s=settings.cooldown_s,
        keep_windows=settings.keep_windows,
        promote_to_alias=settings.promote_to_alias,
        profile_cache_size=settings.profile_cache_size,
        max_report_rows=settings.max_report_rows,
    )


async def bootstrap(ctx: ServiceContext) -> None:
    """Wire the monitor into the runner's context."""
    settings = ctx.settings
    assert isinstance(settings, MonitorSettings)
    store = PostgresStore(ctx.db)
    # The shared transactional outbox (docs/runtime.md): one relay per schema at a time, in order,
    # broker outages waited out, poison rows set aside; woken after each commit that queued events.
    # Added first among the tasks, so it stops last: consumers commit before its last pass.
    relay = add_outbox(ctx, topics=[MONITOR_ALERTS, TRAINING_REQUESTS])
    artifacts = LocalArtifactStore.from_settings(load_settings(ArtifactSettings))
    handlers = MonitorHandlers(store, monitor_config(settings), on_events=relay.wake, read_artifact=artifacts.get,
                               render_html=render_drift_html, embedder=text_embedder())

    ctx.app.include_router(api_http.router(handlers))
    ctx.add_servicer(pb_grpc.add_MonitorServiceServicer_to_server, MonitorServicer(handlers), name=SERVICE_NAME)
    add_consumer(ctx, Consumer(ctx.kafka, group=settings.registry_consumer_group, topics=[REGISTRY_EVENTS],
                               service=ctx.spec.name, handler=RegistryEventsAdapter(handlers)),
                 name="registry-consumer")
    add_consumer(ctx, Consumer(ctx.kafka, group=settings.consumer_group, topics=[INFERENCE_EVENTS],
                               service=ctx.spec.name, batch_handler=InferenceEventsAdapter(handlers)),
                 name="inference-consumer")
    mount_dead_letter_routes(ctx)  # /api/v1/dead-letters for both consumers' groups
