"""Kafka adapter: each TrainingRequest on ``training.requests`` becomes a queued job.

The adapter only records the job (claiming the event's ce_id and the request id in one
transaction) and returns, so the offset is committed within milliseconds however long the
training takes; the job worker does the work. A redelivered record, or a second record with a
known request id, finds the job already there and changes nothing.
"""

from __future__ import annotations

from dataclasses import replace

from gyre_common.bus import Envelope
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_trainer.convert import request_from_proto
from gyre_trainer.handlers import TrainerHandlers
from gyre_trainer.store import EventClaim


class TrainingRequestsAdapter:
    """The per-event ``handler=`` of the ``training.requests`` consumer: submit the request,
    claiming ``(group, ce_id)``; a request without ``requested_by`` is credited to the event's source."""

    def __init__(self, handlers: TrainerHandlers, group: str) -> None:
        self.handlers = handlers
        self.group = group

    async def __call__(self, envelope: Envelope) -> None:
        message = envelope.message
        if not isinstance(message, ev.TrainingRequest):  # the topic's type is checked by the bus
            raise TypeError(f"expected a TrainingRequest, got {message.DESCRIPTOR.full_name}")
        request = request_from_proto(message)
        if not request.requested_by:
            request = replace(request, requested_by=envelope.source)
        await self.handlers.submit(request, claim=EventClaim(self.group, envelope.ce_id))
