"""How serving describes itself to the platform (entry point ``gyre.services: serving``)."""

from __future__ import annotations

from gyre_common.service import ServiceSpec
from gyre_common.topics import INFERENCE_EVENTS, REGISTRY_EVENTS
from gyre_serving.settings import ServingSettings

SPEC = ServiceSpec(
    name="serving",
    settings=ServingSettings,
    module="gyre_serving",
    # Stateless: the registry is the source of truth, so there is no schema.
    schema=None,
    migrations=None,
    consumes=(REGISTRY_EVENTS,),
    produces=(INFERENCE_EVENTS,),
)
