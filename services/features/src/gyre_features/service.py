"""How the features service describes itself to the platform (entry point ``gyre.services``)."""

from __future__ import annotations

from gyre_common import topics
from gyre_common.service import ServiceSpec
from gyre_features.settings import FeaturesSettings

SPEC = ServiceSpec(
    name="features",
    settings=FeaturesSettings,
    module="gyre_features",
    schema="features",
    migrations="gyre_features.migrations",
    consumes=(topics.FEATURES_EVENTS,),
)
