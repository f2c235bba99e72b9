"""How the registry describes itself to the platform (entry point ``gyre.services: registry``)."""

from __future__ import annotations

from gyre_common.service import ServiceSpec
from gyre_common.topics import REGISTRY_EVENTS
from gyre_registry.settings import RegistrySettings

SPEC = ServiceSpec(
    name="registry",
    settings=RegistrySettings,
    module="gyre_registry",
    schema="registry",
    migrations="gyre_registry.migrations",
    consumes=(),
    produces=(REGISTRY_EVENTS,),
    outbox=True,
)
