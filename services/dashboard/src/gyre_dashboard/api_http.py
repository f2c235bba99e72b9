"""HTTP adapter: the operator page and its JSON twin. Decode nothing, gather, encode.

* ``GET /`` — the operator page (HTML, reloads itself every ``refresh_interval_s``).
* ``GET /api/v1/overview`` — the same data as JSON (see docs/services/dashboard.md for the shape).

Both answer 200 even when other services are down: their parts say ``unknown`` (HTML) or carry
``"available": false`` and an ``"error"`` (JSON).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from gyre_dashboard.domain.overview import to_json
from gyre_dashboard.handlers import DashboardHandlers
from gyre_dashboard.render import render_page


def router(handlers: DashboardHandlers, *, refresh_s: int) -> APIRouter:
    """The page and the JSON overview over ``handlers``."""
    api = APIRouter(tags=["dashboard"])

    @api.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        overview = await handlers.overview()
        # The page is a live view: a cached copy would show old readiness as current.
        return HTMLResponse(render_page(overview, refresh_s), headers={"cache-control": "no-store"})

    @api.get("/api/v1/overview")
    async def overview_json() -> dict[str, Any]:
        return dict(to_json(await handlers.overview()))

    return api
