"""A tiny service used only by the runner tests: the smallest thing built like a real Gyre service.

It owns schema ``sample`` (one migration), declares that it produces a topic (so the runner
watches the broker; it never actually publishes), answers ``GET /slow`` after
``GYRE_SAMPLE_SLOW_REQUEST_S`` seconds (to test draining on SIGTERM), ``GET /greetings`` from its
table, and runs one background ticker whose ``stop()`` logs ``ticker stopped``.

Run it with ``python -m tests.support.sample_service`` from the repository root.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from fastapi import APIRouter
from pydantic_settings import SettingsConfigDict

from gyre_common import topics
from gyre_common.runner import ServiceContext
from gyre_common.service import ServiceSpec
from gyre_common.settings import ServiceSettings

log = logging.getLogger("tests.support.sample_service")


class SampleSettings(ServiceSettings):
    """Settings of the sample service (env prefix ``GYRE_SAMPLE_``)."""

    model_config = SettingsConfigDict(env_prefix="GYRE_SAMPLE_")

    greeting: str
    """Word stored and returned by `/greetings`. Required, so tests can check the missing-setting error."""

    slow_request_s: float = 0.8
    """Seconds `GET /slow` takes to answer."""

    tick_interval_s: float = 0.1
    """Seconds between two ticks of the background ticker."""


SPEC = ServiceSpec(
    name="sample",
    settings=SampleSettings,
    module="tests.support.sample_service",
    schema="sample",
    migrations="tests.support.sample_service.migrations",
    produces=(topics.FEATURES_EVENTS,),
)


class Ticker:
    """A background component with ``start()``/``stop()``, like a bus consumer."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        log.info("ticker stopped", extra={"ticks": self.ticks})


def routes(ctx: ServiceContext, settings: SampleSettings) -> APIRouter:
    router = APIRouter()
    meter = ctx.telemetry.meter(__name__)
    requests = meter.create_counter("sample_requests", description="Requests to /slow")

    @router.get("/slow")
    async def slow() -> dict[str, float]:
        requests.add(1)
        log.info("slow request started")
        await asyncio.sleep(settings.slow_request_s)
        return {"slept_s": settings.slow_request_s}

    @router.post("/greetings")
    async def add_greeting() -> dict[str, int]:
        new_id = await ctx.db.fetchval("INSERT INTO greetings (word) VALUES ($1) RETURNING id",
                                       settings.greeting)
        return {"id": int(new_id)}

    @router.get("/greetings")
    async def greetings() -> dict[str, object]:
        rows = await ctx.db.fetch("SELECT word FROM greetings ORDER BY id")
        return {"greeting": settings.greeting, "stored": [row["word"] for row in rows]}

    return router


def bootstrap(ctx: ServiceContext) -> None:
    """Wire the sample service: routes, one background task, one extra readiness check."""
    settings = cast(SampleSettings, ctx.settings)
    ctx.app.include_router(routes(ctx, settings))
    ctx.add_task(Ticker(settings.tick_interval_s), name="ticker")

    async def always_fine() -> bool:
        return True

    ctx.add_check("sample", always_fine)
