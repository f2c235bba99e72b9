"""How the dashboard describes itself to the platform (entry point ``gyre.services: dashboard``).

No schema and no topics: the dashboard owns nothing and reads the other services over HTTP, so it
needs neither the database nor the broker to be ready.
"""

from __future__ import annotations

from gyre_common.service import ServiceSpec
from gyre_dashboard.settings import DashboardSettings

SPEC = ServiceSpec(
    name="dashboard",
    settings=DashboardSettings,
    module="gyre_dashboard",
)
