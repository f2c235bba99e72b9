"""Gyre's Kafka bus: typed publishing and consuming of protobuf events with CloudEvents headers.

See docs/bus.md. The main entry points:

* :class:`Publisher` — ``await pub.publish(topics.FEATURES_EVENTS, event, key=entity_id)``;
* :class:`Consumer` — a consumer-group member calling ``handler(envelope)`` or
  ``batch_handler(envelopes)`` with retries, dead letters and commit-after-success;
* :class:`DeadLetter` (raise it) / :class:`Rejected` (return them from a batch handler) — send a
  record to the dead-letter topic at once, without retries;
* :func:`classify_failure` — transient (wait, never dead-letter) / permanent (dead-letter now) /
  unknown (bounded retries), the one rule every consumer follows;
* :func:`add_consumer` — run a consumer in a service with its progress in readiness;
* :class:`Envelope` — what handlers get: the message plus ``ce_*`` context and Kafka coordinates;
* :func:`ensure_topics` — create the prefixed topics;
* :class:`SeenEvents`, :func:`claim_event` — idempotent handlers.

Faust support lives in :mod:`gyre_common.bus.faust` (optional extra ``gyre-common[faust]``).
"""

from gyre_common.bus.admin import ensure_topics
from gyre_common.bus.codec import EventDecodeError, UnknownTopicError, encode_json, message_class, topic_spec
from gyre_common.bus.consumer import BatchHandler, Consumer, ConsumerStalled, ConsumerStats, EventHandler, add_consumer
from gyre_common.bus.deadletter import DeadLetter, Rejected
from gyre_common.bus.envelope import Envelope, decode_record
from gyre_common.bus.failures import Failure, classify_failure
from gyre_common.bus.idempotency import (
    PROCESSED_EVENTS_DDL,
    SeenEvents,
    claim_event,
    processed_events_ddl,
    prune_processed_events,
)
from gyre_common.bus.publisher import Published, Publisher, producer_config
from gyre_common.bus.retry import RetryPolicy

Subscriber = Consumer
"""Alias: some call it a subscriber."""

__all__ = [
    "PROCESSED_EVENTS_DDL",
    "BatchHandler",
    "Consumer",
    "ConsumerStalled",
    "ConsumerStats",
    "DeadLetter",
    "Envelope",
    "EventDecodeError",
    "EventHandler",
    "Failure",
    "Published",
    "Publisher",
    "Rejected",
    "RetryPolicy",
    "SeenEvents",
    "Subscriber",
    "UnknownTopicError",
    "add_consumer",
    "claim_event",
    "classify_failure",
    "decode_record",
    "encode_json",
    "ensure_topics",
    "message_class",
    "processed_events_ddl",
    "producer_config",
    "prune_processed_events",
    "topic_spec",
]
