"""How the monitor describes itself to the platform (entry point ``gyre.services: monitor``)."""

from __future__ import annotations

from gyre_common.service import ServiceSpec
from gyre_common.topics import INFERENCE_EVENTS, MONITOR_ALERTS, REGISTRY_EVENTS, TRAINING_REQUESTS
from gyre_monitor.settings import MonitorSettings

SPEC = ServiceSpec(
    name="monitor",
    settings=MonitorSettings,
    module="gyre_monitor",
    schema="monitor",
    migrations="gyre_monitor.migrations",
    consumes=(INFERENCE_EVENTS, REGISTRY_EVENTS),
    produces=(MONITOR_ALERTS, TRAINING_REQUESTS),
    outbox=True,
)
