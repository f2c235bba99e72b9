"""Kafka adapter: the ``tracking.events`` ingester (fire-and-forget logging from training code).

Each polled batch becomes one :meth:`TrackingHandlers.ingest` call (:class:`TrackingEventsAdapter`,
the batch handler of a plain :class:`gyre_common.bus.Consumer` wired in bootstrap); each event is
applied in its own transaction together with its ``ce_id`` claim in ``processed_events``, so a redelivered event
is skipped, and metric points are idempotent on their natural key (run, key, step, timestamp,
value) even when a producer re-sends the same observations under a new id. Offsets are committed
by the bus after the handler returns, i.e. after the transactions committed.

Events that can never apply (invalid keys or ids, a param conflict, a deleted run) are not
retried: they go to the group's dead-letter topic at once with ``gyre_dlq_reason`` = the
reason (``invalid_argument``, ``param_conflict``, ...) and ``gyre_dlq_error`` = the explanation
(the batch handler returns them as :class:`~gyre_common.bus.Rejected`; the bus sends the original
record bytes).
Database errors raise, so the bus retries the batch (applied events are then skipped by id).
"""

from __future__ import annotations

import logging

from gyre_common.bus import Envelope, Rejected
from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_tracking.convert import metric_from_proto, optional_time, status_from_proto
from gyre_tracking.domain.errors import InvalidArgument
from gyre_tracking.domain.model import Metric
from gyre_tracking.handlers import RejectedEvent, RunBatch, TrackingEventCommand, TrackingHandlers

log = logging.getLogger(__name__)


def event_command(env: Envelope) -> TrackingEventCommand:
    """The handler command of one decoded ``TrackingEvent``.

    Points without a timestamp get the event's time (``emitted_at``, else the CloudEvents time),
    which is the same on every redelivery, so such points still deduplicate.

    Raises:
        InvalidArgument: an unknown status number.
    """
    message = env.message
    assert isinstance(message, events_pb2.TrackingEvent)
    occurred_at = optional_time(message, "emitted_at") or env.time
    try:
        status = status_from_proto(message.status)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    metrics = []
    for point in message.metrics:
        key, value, step, stamp = metric_from_proto(point, occurred_at)
        assert stamp is not None
        metrics.append(Metric(key, value, step, stamp))
    return TrackingEventCommand(
        event_id=env.ce_id,
        run_id=message.run_id,
        experiment_name=message.experiment_name,
        run_name=message.run_name,
        batch=RunBatch(metrics=metrics, params=[(p.key, p.value) for p in message.params],
                       tags=[(t.key, t.value) for t in message.tags]),
        status=status,
        end_time=optional_time(message, "end_time"),
        occurred_at=occurred_at,
    )


class TrackingEventsAdapter:
    """The ``batch_handler=`` of the ``tracking.events`` consumer: decode a batch into handler
    commands, ingest them, and hand back the events that can never apply (for the dead-letter topic).

    Args:
        handlers: the use cases.
        group: the consumer group (also the ``processed_events`` consumer name).

    Attributes:
        applied, duplicates, rejected: events applied, skipped as already applied, and dead-lettered
            since start (logs and tests).
    """

    def __init__(self, handlers: TrackingHandlers, group: str) -> None:
        self.handlers = handlers
        self.group = group
        self.applied = 0
        self.duplicates = 0
        self.rejected = 0

    async def __call__(self, envelopes: list[Envelope]) -> list[Rejected]:
        """Apply a batch of events; return the ones that can never apply, for the dead-letter topic.

        Raises:
            Exception: database errors (the bus retries the batch; applied events are skipped by id).
        """
        commands: list[TrackingEventCommand] = []
        positions: list[int] = []
        rejected: list[RejectedEvent] = []
        for index, env in enumerate(envelopes):
            try:
                commands.append(event_command(env))
                positions.append(index)
            except InvalidArgument as exc:
                rejected.append(RejectedEvent(index, exc.reason, str(exc)))
        report = await self.handlers.ingest(commands, self.group)
        rejected += [RejectedEvent(positions[r.index], r.reason, r.detail) for r in report.rejected]
        self.applied += report.applied
        self.duplicates += report.duplicates
        self.rejected += len(rejected)
        if report.duplicates:
            log.info("skipped %d tracking events already applied", report.duplicates)
        return [Rejected(envelopes[r.index], r.reason, r.detail) for r in rejected]
