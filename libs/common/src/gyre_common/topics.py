"""Every Kafka topic Gyre uses, named once.

Names here are *base* names; the configured prefix (``GYRE_KAFKA_TOPIC_PREFIX``, default
``gyre.``) goes in front. The bus refuses to publish to a topic that is not listed here, so a typo
is a clear error instead of a silently auto-created topic.
"""

from __future__ import annotations

from dataclasses import dataclass

FEATURES_EVENTS = "features.events"
TRACKING_EVENTS = "tracking.events"
TRAINING_REQUESTS = "training.requests"
TRAINING_EVENTS = "training.events"
REGISTRY_EVENTS = "registry.events"
INFERENCE_EVENTS = "inference.events"
FEEDBACK_EVENTS = "feedback.events"
MONITOR_ALERTS = "monitor.alerts"

DEAD_LETTER_SUFFIX = ".dlq"


@dataclass(frozen=True)
class TopicSpec:
    """A topic and the protobuf event type its records carry.

    Attributes:
        name: base name, without prefix.
        event_type: full protobuf name of the message (also the CloudEvents ``ce_type``).
        json_allowed: whether external producers may send JSON instead of protobuf.
    """

    name: str
    event_type: str
    json_allowed: bool = False


TOPICS: dict[str, TopicSpec] = {
    spec.name: spec
    for spec in (
        TopicSpec(FEATURES_EVENTS, "gyre.events.v1.FeatureEvent", json_allowed=True),
        TopicSpec(TRACKING_EVENTS, "gyre.events.v1.TrackingEvent", json_allowed=True),
        TopicSpec(TRAINING_REQUESTS, "gyre.events.v1.TrainingRequest", json_allowed=True),
        TopicSpec(TRAINING_EVENTS, "gyre.events.v1.TrainingEvent"),
        TopicSpec(REGISTRY_EVENTS, "gyre.events.v1.RegistryEvent"),
        TopicSpec(INFERENCE_EVENTS, "gyre.events.v1.InferenceEvent"),
        TopicSpec(FEEDBACK_EVENTS, "gyre.events.v1.FeedbackEvent", json_allowed=True),
        TopicSpec(MONITOR_ALERTS, "gyre.events.v1.MonitorAlert"),
    )
}


def full_name(base: str, prefix: str) -> str:
    """The topic as the broker knows it: ``prefix + base``."""
    return f"{prefix}{base}"


def dead_letter_topic(group_id: str, prefix: str) -> str:
    """The dead-letter topic of one consumer group: ``<prefix><group_id>.dlq``."""
    return f"{prefix}{group_id}{DEAD_LETTER_SUFFIX}"
