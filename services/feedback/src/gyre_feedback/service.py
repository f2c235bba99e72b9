"""How the feedback service describes itself to the platform (entry point ``gyre.services: feedback``)."""

from __future__ import annotations

from gyre_common.service import ServiceSpec
from gyre_common.topics import (
    FEEDBACK_EVENTS,
    INFERENCE_EVENTS,
    MONITOR_ALERTS,
    REGISTRY_EVENTS,
    TRAINING_REQUESTS,
)
from gyre_feedback.settings import FeedbackSettings

SPEC = ServiceSpec(
    name="feedback",
    settings=FeedbackSettings,
    module="gyre_feedback",
    schema="feedback",
    migrations="gyre_feedback.migrations",
    # feedback.events is read back too: feedback UIs may publish FeedbackEvents (JSON or protobuf)
    # straight to the topic; our own submissions come back as no-op duplicates.
    consumes=(INFERENCE_EVENTS, FEEDBACK_EVENTS, REGISTRY_EVENTS),
    produces=(FEEDBACK_EVENTS, MONITOR_ALERTS, TRAINING_REQUESTS),
    outbox=True,
)
