"""Kafka adapters: turn consumed envelopes into handler calls (and nothing more).

The bus commits offsets only after a handler returned, i.e. after its database transaction
committed; a crash in between redelivers the records, which the handlers deduplicate (predictions
on ``prediction_id``, feedback and registry events on ``ce_id`` and their natural keys).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gyre_common.bus import DeadLetter, Envelope
from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_feedback.convert import feedback_from_event, prediction_from_event
from gyre_feedback.domain.feedback import InvalidFeedback
from gyre_feedback.handlers import FeedbackHandlers
from gyre_feedback.store import Lineage

log = logging.getLogger(__name__)

INVALID_FEEDBACK = "invalid_feedback"
"""``gyre_dlq_reason`` of a feedback event that fails validation."""


class InferenceEventsAdapter:
    """Batch handler of ``inference.events``."""

    def __init__(self, handlers: FeedbackHandlers, label_output: str) -> None:
        self.handlers = handlers
        self.label_output = label_output

    async def __call__(self, envelopes: Sequence[Envelope]) -> None:
        predictions = []
        for env in envelopes:
            message = env.message
            assert isinstance(message, events_pb2.InferenceEvent)
            predictions.append(prediction_from_event(message, self.label_output, env.time))
        result = await self.handlers.ingest_predictions(predictions)
        if result.invalid:
            log.warning("skipped %d inference events without prediction id, model name or version", result.invalid)


class FeedbackEventsAdapter:
    """Per-event handler of ``feedback.events``.

    Invalid feedback can never succeed: it is dead-lettered at once, without retries, with
    ``gyre_dlq_reason`` = ``invalid_feedback`` and every field problem in ``gyre_dlq_error``. A
    database outage is not the record's fault: the bus waits it out (see
    :mod:`gyre_common.bus.failures`), so good feedback is never dead-lettered for it.
    """

    def __init__(self, handlers: FeedbackHandlers) -> None:
        self.handlers = handlers

    async def __call__(self, env: Envelope) -> None:
        message = env.message
        assert isinstance(message, events_pb2.FeedbackEvent)
        try:
            feedback = feedback_from_event(message, now=env.time)
        except InvalidFeedback as exc:
            raise DeadLetter(INVALID_FEEDBACK, str(exc)) from exc
        await self.handlers.ingest_feedback(env.ce_id, feedback)


class RegistryEventsAdapter:
    """Per-event handler of ``registry.events``: VERSION_CREATED brings a version's feature view and label."""

    def __init__(self, handlers: FeedbackHandlers) -> None:
        self.handlers = handlers

    async def __call__(self, env: Envelope) -> None:
        event = env.message
        assert isinstance(event, events_pb2.RegistryEvent)
        if event.kind != events_pb2.REGISTRY_EVENT_KIND_VERSION_CREATED or not event.model_name or event.version <= 0:
            return
        lineage = event.lineage
        await self.handlers.version_created(
            env.ce_id, event.model_name, int(event.version),
            Lineage(feature_view=lineage.feature_views[0] if lineage.feature_views else "", label=lineage.label),
        )
