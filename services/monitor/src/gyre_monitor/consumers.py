"""Kafka adapters: turn consumed envelopes into handler calls (and nothing more).

Offsets are committed by the bus only after a handler returned, i.e. after the database transaction
committed; a crash in between redelivers the batch, which the handlers deduplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gyre_common.bus import Envelope
from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_monitor.convert import prediction_from_event
from gyre_monitor.handlers import MonitorHandlers

log = logging.getLogger(__name__)


class InferenceEventsAdapter:
    """Batch handler of ``inference.events``."""

    def __init__(self, handlers: MonitorHandlers) -> None:
        self.handlers = handlers

    async def __call__(self, envelopes: Sequence[Envelope]) -> None:
        predictions = []
        for env in envelopes:
            message = env.message
            assert isinstance(message, events_pb2.InferenceEvent)
            predictions.append(prediction_from_event(message, env.time))
        result = await self.handlers.ingest(predictions)
        if result.invalid:
            log.warning("skipped %d inference events without model name, version or prediction id",
                        result.invalid)


class RegistryEventsAdapter:
    """Per-event handler of ``registry.events``: VERSION_CREATED brings a version's reference profile."""

    def __init__(self, handlers: MonitorHandlers) -> None:
        self.handlers = handlers

    async def __call__(self, env: Envelope) -> None:
        event = env.message
        assert isinstance(event, events_pb2.RegistryEvent)
        if event.kind != events_pb2.REGISTRY_EVENT_KIND_VERSION_CREATED:
            return
        lineage = event.lineage
        reference = lineage.reference_profile
        await self.handlers.version_created(
            model_name=event.model_name,
            model_version=int(event.version),
            profile_uri=reference.uri,
            profile_sha256=reference.sha256,
            feature_view=lineage.feature_views[0] if lineage.feature_views else "",
            label=lineage.label,
        )

