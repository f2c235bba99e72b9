"""The one place the dashboard is wired: HTTP client, upstream client, handlers, routes."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

import httpx

from gyre_common.runner import ServiceContext
from gyre_dashboard import api_http
from gyre_dashboard.clients import UpstreamClient
from gyre_dashboard.handlers import DashboardHandlers, OverviewLimits
from gyre_dashboard.settings import DashboardSettings


class _HttpClientTask:
    """Closes the shared HTTP client when the service stops (after the server drained)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.client.aclose()


def dashboard_handlers(settings: DashboardSettings, http: httpx.AsyncClient) -> DashboardHandlers:
    """The handlers of ``settings`` calling the other services through ``http``."""
    urls = settings.upstream_urls()
    limits = OverviewLimits(
        max_models=settings.max_models,
        versions_per_model=settings.versions_per_model,
        recent_jobs=settings.recent_jobs,
        recent_alerts=settings.recent_alerts,
        recent_runs=settings.recent_runs,
        quality_window=timedelta(hours=settings.quality_window_hours),
    )
    return DashboardHandlers(UpstreamClient(http, urls), list(urls), limits,
                           max_concurrency=settings.max_concurrency, cache_ttl_s=settings.cache_ttl_s)


def http_client(settings: DashboardSettings) -> httpx.AsyncClient:
    """The client every upstream call goes through: one timeout for connect, read and pool waits,
    keep-alive connections up to ``max_concurrency``, no proxy from the environment (the upstreams
    are the platform's own services, usually on loopback)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.upstream_timeout_s),
        limits=httpx.Limits(max_connections=settings.max_concurrency,
                            max_keepalive_connections=settings.max_concurrency),
        headers={"user-agent": "gyre-dashboard"},
        trust_env=False,
    )


async def bootstrap(ctx: ServiceContext) -> None:
    """Wire the dashboard into the runner's context (no database, no broker, no readiness check:
    the dashboard is ready whenever it answers, and shows the others' state instead of adopting it)."""
    settings = cast(DashboardSettings, ctx.settings)
    http = http_client(settings)
    handlers = dashboard_handlers(settings, http)
    ctx.app.include_router(api_http.router(handlers, refresh_s=settings.refresh_interval_s))
    ctx.add_task(_HttpClientTask(http), name="http-client")
