"""How the tracking service describes itself to the platform (entry point ``gyre.services``)."""

from __future__ import annotations

from gyre_common import topics
from gyre_common.service import ServiceSpec
from gyre_tracking.settings import TrackingSettings

SPEC = ServiceSpec(
    name="tracking",
    settings=TrackingSettings,
    module="gyre_tracking",
    schema="tracking",
    migrations="gyre_tracking.migrations",
    consumes=(topics.TRACKING_EVENTS,),
)
