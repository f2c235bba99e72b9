"""The dashboard's one use case: gather an :class:`Overview` from the other services.

Every upstream call runs concurrently (bounded by a semaphore) and each failure is contained in
its part of the overview, so an unreachable service costs at most one timeout and a blank or
"unknown" part of the page, never the page. Knows nothing of HTTP: the calls go through the
:class:`Upstreams` port (``clients.UpstreamClient`` in production, a fake in tests).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, Protocol, TypeVar

from gyre_dashboard.domain.health import Health, ServiceHealth, UpstreamError
from gyre_dashboard.domain.models import AlertSummary, ModelDrift, ModelQuality, ModelSummary, VersionSummary
from gyre_dashboard.domain.overview import Overview, Section
from gyre_dashboard.domain.training import RunSummary, TrainingJobSummary

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_SECTION_ERROR_CHARS = 400
"""Longest error text of one section (distinct errors are joined, then cut)."""


class Upstreams(Protocol):
    """The calls the overview needs; each may raise :class:`UpstreamError` (see ``clients.UpstreamClient``)."""

    async def readiness(self, service: str) -> ServiceHealth: ...

    async def registry_models(self, limit: int) -> list[ModelSummary]: ...

    async def registry_versions(self, model_name: str, limit: int) -> list[VersionSummary]: ...

    async def monitor_latest_drift(self, model_name: str) -> ModelDrift | None: ...

    async def monitor_alerts(self, limit: int) -> list[AlertSummary]: ...

    async def feedback_quality(self, model_name: str, window_start: datetime) -> ModelQuality | None: ...

    async def trainer_jobs(self, limit: int) -> list[TrainingJobSummary]: ...

    async def tracking_runs(self, limit: int) -> list[RunSummary]: ...


@dataclass(frozen=True)
class OverviewLimits:
    """How much the overview asks for.

    Attributes:
        max_models: most registered models listed (and asked about drift and quality).
        versions_per_model: newest versions per model.
        recent_jobs: newest training jobs.
        recent_alerts: newest monitor alerts.
        recent_runs: newest tracking runs (trainer and MLflow-client runs alike).
        quality_window: how far back feedback quality looks.
    """

    max_models: int = 50
    versions_per_model: int = 5
    recent_jobs: int = 15
    recent_alerts: int = 15
    recent_runs: int = 20
    quality_window: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class _Outcome(Generic[T]):
    value: T | None
    error: str = ""


def _join_errors(errors: Sequence[str]) -> str:
    distinct = list(dict.fromkeys(e for e in errors if e))  # one down service fails every call alike
    return "; ".join(distinct)[:MAX_SECTION_ERROR_CHARS]


class DashboardHandlers:
    """Gathers overviews; concurrent requests share one gathering, reused for ``cache_ttl_s``.

    Args:
        upstreams: the calls to the other services.
        services: names of the services whose readiness is shown, in page order.
        limits: how much to ask for.
        max_concurrency: most upstream calls in flight at once.
        cache_ttl_s: seconds an overview is reused; 0 gathers anew on every request (requests that
            arrive while one gathering runs still share it).
        clock: UTC "now" (tests pin it).
    """

    def __init__(self, upstreams: Upstreams, services: Sequence[str], limits: OverviewLimits | None = None, *,
                 max_concurrency: int = 16, cache_ttl_s: float = 1.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._upstreams = upstreams
        self._services = tuple(services)
        self._limits = limits or OverviewLimits()
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._cached: tuple[float, Overview] | None = None
        self._inflight: asyncio.Future[Overview] | None = None

    async def overview(self) -> Overview:
        """A recent overview: the cached one while fresh, else the one being gathered, else a new one."""
        if self._cached is not None and time.monotonic() - self._cached[0] < self._cache_ttl_s:
            return self._cached[1]
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._refresh())
        # A browser that goes away cancels its request, not the gathering the others wait for.
        return await asyncio.shield(self._inflight)

    async def _refresh(self) -> Overview:
        overview = await self.collect()
        self._cached = (time.monotonic(), overview)
        return overview

    async def collect(self) -> Overview:
        """Gather a fresh overview. Never raises for an upstream's failure: it lands in the part it spoils."""
        started = time.perf_counter()
        generated_at = self._clock()
        services, (models, drift, quality), jobs, alerts, runs = await asyncio.gather(
            self._readiness(),
            self._models_drift_quality(generated_at),
            self._section("trainer", lambda: self._upstreams.trainer_jobs(self._limits.recent_jobs)),
            self._section("monitor", lambda: self._upstreams.monitor_alerts(self._limits.recent_alerts)),
            self._section("tracking", lambda: self._upstreams.tracking_runs(self._limits.recent_runs)),
        )
        return Overview(
            generated_at=generated_at,
            services=services,
            models=models,
            drift=drift,
            quality=quality,
            training_jobs=jobs,
            alerts=alerts,
            runs=runs,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _call(self, call: Callable[[], Awaitable[T]]) -> _Outcome[T]:
        async with self._semaphore:
            try:
                return _Outcome(await call())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # UpstreamError is the expected case; anything else is a bug here or a payload we
                # cannot read, and must still cost only its part of the page.
                if not isinstance(exc, UpstreamError):
                    log.warning("upstream call failed unexpectedly", exc_info=exc)
                return _Outcome(None, str(exc) or type(exc).__name__)

    async def _section(self, source: str, call: Callable[[], Awaitable[list[T]]]) -> Section[T]:
        outcome = await self._call(call)
        return Section(source, tuple(outcome.value or ()), outcome.error)

    async def _readiness(self) -> tuple[ServiceHealth, ...]:
        async def ask(name: str) -> ServiceHealth:
            outcome = await self._call(lambda: self._upstreams.readiness(name))
            if outcome.value is None:
                return ServiceHealth(name, "", Health.DOWN, detail=outcome.error)
            return outcome.value

        return tuple(await asyncio.gather(*(ask(name) for name in self._services)))

    async def _models_drift_quality(
        self, now: datetime,
    ) -> tuple[Section[ModelSummary], Section[ModelDrift], Section[ModelQuality]]:
        """Models from the registry, then per model (all at once): versions, latest drift, quality."""
        limits, upstreams = self._limits, self._upstreams
        listed = await self._call(lambda: upstreams.registry_models(limits.max_models))
        if listed.value is None:
            why = "needs the model list from the registry, which is unavailable"
            return Section("registry", (), listed.error), Section("monitor", (), why), Section("feedback", (), why)
        models = sorted(listed.value, key=lambda m: m.name)
        since = now - limits.quality_window

        def versions_of(name: str) -> Callable[[], Awaitable[list[VersionSummary]]]:
            return lambda: upstreams.registry_versions(name, limits.versions_per_model)

        def drift_of(name: str) -> Callable[[], Awaitable[ModelDrift | None]]:
            return lambda: upstreams.monitor_latest_drift(name)

        def quality_of(name: str) -> Callable[[], Awaitable[ModelQuality | None]]:
            return lambda: upstreams.feedback_quality(name, since)

        versions, drifts, qualities = await asyncio.gather(
            asyncio.gather(*(self._call(versions_of(m.name)) for m in models)),
            asyncio.gather(*(self._call(drift_of(m.name)) for m in models)),
            asyncio.gather(*(self._call(quality_of(m.name)) for m in models)),
        )
        summaries = tuple(
            ModelSummary(m.name, m.description, m.latest_version, m.aliases, m.updated_at,
                         tuple(v.value or ()), v.error)
            for m, v in zip(models, versions, strict=True)
        )
        return (
            Section("registry", summaries, _join_errors([v.error for v in versions])),
            Section("monitor", tuple(d.value for d in drifts if d.value is not None),
                    _join_errors([d.error for d in drifts])),
            Section("feedback", tuple(q.value for q in qualities if q.value is not None),
                    _join_errors([q.error for q in qualities])),
        )
