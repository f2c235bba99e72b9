"""Kafka adapter: the ``features.events`` ingester.

Each polled batch becomes one :meth:`FeaturesHandlers.ingest` call (one database transaction for
the batch). Offsets are committed by the bus after the handler returns, i.e. after the
transaction committed; a crash before that means redelivery, which the natural key
(feature_view, entity_id, event_time) makes harmless.

Events that fail validation (unknown view or feature, wrong type, no entity id or event_time) can
never succeed, so they are not retried: they go to the group's dead-letter topic at once, with
``gyre_dlq_reason`` = the validation reason (e.g. ``unknown_feature``) and ``gyre_dlq_error`` =
the explanation, and the batch goes on: the batch handler returns them as
:class:`~gyre_common.bus.Rejected` and the bus sends the ORIGINAL record bytes there. Records that
cannot be decoded at all are dead-lettered by the bus itself (reason ``decode_error`` etc.).
"""

from __future__ import annotations

import logging

from opentelemetry.metrics import Meter

from gyre_common.bus import Envelope, Rejected
from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_features.convert import raw_event
from gyre_features.handlers import FeaturesHandlers

log = logging.getLogger(__name__)


class FeatureEventsAdapter:
    """The ``batch_handler`` of the ``features.events`` consumer: decode a batch, ingest it.

    Bootstrap wires it as ``Consumer(kafka, group=..., topics=[topics.FEATURES_EVENTS],
    service="features", batch_handler=FeatureEventsAdapter(handlers, meter))``.

    Args:
        handlers: the use cases.
        meter: where the ``gyre_features_ingested_events`` counter goes (attribute ``outcome``:
            inserted, merged, replayed, rejected); none when omitted.

    Attributes:
        rejected: events dead-lettered as invalid since the adapter was made.
    """

    def __init__(self, handlers: FeaturesHandlers, meter: Meter | None = None) -> None:
        self.handlers = handlers
        self._events = meter.create_counter(
            "gyre_features_ingested_events", unit="1",
            description="Feature events consumed, by outcome (inserted, merged, replayed, rejected)",
        ) if meter is not None else None
        self.rejected = 0

    async def __call__(self, envelopes: list[Envelope]) -> list[Rejected]:
        """Store the valid events of a batch; return the invalid ones for the dead-letter topic.

        Raises:
            Exception: database errors (the bus retries the batch, then record by record).
        """
        events = []
        for env in envelopes:
            assert isinstance(env.message, events_pb2.FeatureEvent)
            events.append(raw_event(env.message, env.ce_id, env.time))
        report = await self.handlers.ingest(events)
        rejects = [Rejected(envelopes[r.index], r.error.reason, r.error.detail) for r in report.rejected]
        self.rejected += len(rejects)
        if self._events is not None:
            result = report.result
            for outcome, count in (("inserted", result.inserted), ("merged", result.merged),
                                   ("replayed", result.unchanged), ("rejected", len(rejects))):
                if count:
                    self._events.add(count, {"outcome": outcome})
        if report.result.inserted or report.result.merged:
            log.debug("ingested %d new, %d merged, %d replayed feature events", report.result.inserted,
                      report.result.merged, report.result.unchanged)
        return rejects
