"""The one place that wires the features service: store, handlers, REST, gRPC, ingester."""

from __future__ import annotations

from typing import cast

from gyre_common import topics
from gyre_common.bus import Consumer, add_consumer
from gyre_common.deadletters import mount_dead_letter_routes
from gyre_common.runner import ServiceContext
from gyre_contracts.gyre.features.v1 import features_service_pb2_grpc as pb_grpc
from gyre_features import api_http
from gyre_features.api_grpc import SERVICE_NAME, FeaturesServicer
from gyre_features.consumers import FeatureEventsAdapter
from gyre_features.handlers import FeaturesHandlers
from gyre_features.settings import FeaturesSettings
from gyre_features.store import PostgresStore


async def bootstrap(ctx: ServiceContext) -> None:
    """Wire the service into the runner's context (the runner has migrated the schema already)."""
    settings = cast(FeaturesSettings, ctx.settings)
    handlers = FeaturesHandlers(PostgresStore(ctx.db))
    ctx.app.include_router(api_http.router(handlers))
    ctx.add_servicer(pb_grpc.add_FeaturesServiceServicer_to_server, FeaturesServicer(handlers), name=SERVICE_NAME)
    if settings.consume_events:
        # Batches: one transaction per polled batch (see consumers.py); the batch size is the
        # Kafka settings' batch_max_records.
        adapter = FeatureEventsAdapter(handlers, meter=ctx.telemetry.meter("gyre_features"))
        ingester = Consumer(ctx.kafka, group=settings.consumer_group, topics=[topics.FEATURES_EVENTS],
                            service="features", batch_handler=adapter)
        # A background task whose progress is part of readiness (a stalled ingester is not ready).
        add_consumer(ctx, ingester, name="features-ingester")
    mount_dead_letter_routes(ctx)  # /api/v1/dead-letters for the consumer's group
