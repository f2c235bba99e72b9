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

from gyre_dashboard.model import to_json
from gyre_dashboard.overview import OverviewService
from gyre_dashboard.render import render_page


def routes(service: OverviewService, *, refresh_s: int) -> APIRouter:
    """The page and the JSON overview over ``service``."""
    router = APIRouter(tags=["dashboard"])

    @router.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        overview = await service.overview()
        # The page is a live view: a cached copy would show old readiness as current.
        return HTMLResponse(render_page(overview, refresh_s), headers={"cache-control": "no-store"})

    @router.get("/api/v1/overview")
    async def overview_json() -> dict[str, Any]:
        return dict(to_json(await service.overview()))

    return router
