"""The one place that wires the feedback service: store, handlers, adapters, consumers, background tasks."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from gyre_common.bus import Consumer, add_consumer
from gyre_common.deadletters import mount_dead_letter_routes
from gyre_common.outbox import add_outbox
from gyre_common.runner import ServiceContext
from gyre_common.topics import FEEDBACK_EVENTS, INFERENCE_EVENTS, MONITOR_ALERTS, REGISTRY_EVENTS, TRAINING_REQUESTS
from gyre_contracts.gyre.feedback.v1 import feedback_service_pb2_grpc as pb_grpc
from gyre_feedback import api_http
from gyre_feedback.api_grpc import SERVICE_NAME, FeedbackServicer
from gyre_feedback.consumers import FeedbackEventsAdapter, InferenceEventsAdapter, RegistryEventsAdapter
from gyre_feedback.convert import SERVICE
from gyre_feedback.domain.quality import DropPolicy
from gyre_feedback.handlers import FeedbackConfig, FeedbackHandlers
from gyre_feedback.settings import FeedbackSettings
from gyre_feedback.store import PostgresStore

log = logging.getLogger(__name__)


def feedback_config(settings: FeedbackSettings) -> FeedbackConfig:
    """Handler configuration from the settings."""
    return FeedbackConfig(
        quality_alias=settings.quality_alias,
        retrain_enabled=settings.retrain_enabled,
        drop=DropPolicy(window=settings.retrain_window_labels, threshold=settings.retrain_accuracy_threshold,
                        cooldown_s=settings.retrain_cooldown_s),
        promote_to_alias=settings.promote_to_alias,
        consumer=settings.feedback_consumer_group,
        corrections_to_features=settings.corrections_to_features,
    )


async def bootstrap(ctx: ServiceContext) -> None:
    """Wire the feedback service into the runner's context."""
    settings = ctx.settings
    assert isinstance(settings, FeedbackSettings)
    store = PostgresStore(ctx.db)
    # The shared transactional outbox (docs/runtime.md): one relay per schema at a time, in order,
    # broker outages waited out, poison rows set aside; woken after each commit that queued events.
    # Added first among the tasks, so it stops last: consumers commit before its last pass.
    relay = add_outbox(ctx, topics=[FEEDBACK_EVENTS, MONITOR_ALERTS, TRAINING_REQUESTS])
    handlers = FeedbackHandlers(store, feedback_config(settings), on_events=relay.wake)
    retention = timedelta(days=settings.prediction_retention_days)

    async def prune() -> None:
        while True:
            try:
                await handlers.prune(retention)
            except Exception:  # retried next interval; a database blip must not stop the service
                log.warning("pruning old predictions failed", exc_info=True)
            await asyncio.sleep(settings.prune_interval_s)

    ctx.app.include_router(api_http.router(handlers))
    ctx.add_servicer(pb_grpc.add_FeedbackServiceServicer_to_server, FeedbackServicer(handlers), name=SERVICE_NAME)

    ctx.add_task(prune, name="prune")
    # Each Consumer is a runner background component (start() consumes in the background);
    # add_consumer also makes its progress part of readiness.
    tracer_provider = ctx.telemetry.active_tracer_provider
    add_consumer(ctx, Consumer(ctx.kafka, group=settings.registry_consumer_group, topics=[REGISTRY_EVENTS],
                               service=SERVICE, handler=RegistryEventsAdapter(handlers),
                               tracer_provider=tracer_provider), name="registry-consumer")
    # Predictions come in batches: one transaction per polled batch (thousands per second).
    add_consumer(ctx, Consumer(ctx.kafka, group=settings.inference_consumer_group, topics=[INFERENCE_EVENTS],
                               service=SERVICE, batch_handler=InferenceEventsAdapter(handlers, settings.label_output),
                               tracer_provider=tracer_provider), name="inference-consumer")
    add_consumer(ctx, Consumer(ctx.kafka, group=settings.feedback_consumer_group, topics=[FEEDBACK_EVENTS],
                               service=SERVICE, handler=FeedbackEventsAdapter(handlers),
                               tracer_provider=tracer_provider), name="feedback-consumer")
    mount_dead_letter_routes(ctx)  # /api/v1/dead-letters for the three consumers' groups

