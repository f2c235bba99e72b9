"""Kafka adapter: each TrainingRequest on ``training.requests`` becomes a queued job.

The handler only records the job (claiming the event's ce_id and the request id in one
transaction) and returns, so the offset is committed within milliseconds however long the
training takes; the job worker does the work. A redelivered record, or a second record with a
known request id, finds the job already there and changes nothing.
"""

from __future__ import annotations

from gyre_common.bus import Consumer, Envelope
from gyre_common.settings import KafkaSettings
from gyre_common.topics import TRAINING_REQUESTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_trainer.handlers import JobService
from gyre_trainer.store import EventClaim


def training_request_handler(service: JobService, group: str):  # type: ignore[no-untyped-def]
    """The per-event handler: submit the request, claiming ``(group, ce_id)``."""

    async def handle(envelope: Envelope) -> None:
        message = envelope.message
        if not isinstance(message, ev.TrainingRequest):  # the topic's type is checked by the bus
            raise TypeError(f"expected a TrainingRequest, got {message.DESCRIPTOR.full_name}")
        request = ev.TrainingRequest()
        request.CopyFrom(message)
        if not request.requested_by:
            request.requested_by = envelope.source
        await service.submit(request, claim=EventClaim(group, envelope.ce_id))

    return handle


def training_request_consumer(kafka: KafkaSettings, service: JobService, *, group: str) -> Consumer:
    """A consumer-group member of ``group`` reading ``training.requests`` into the job queue
    (a runner background component as it is: ``start()`` consumes in the background)."""
    return Consumer(kafka, group=group, topics=[TRAINING_REQUESTS], service="trainer",
                    handler=training_request_handler(service, group))
