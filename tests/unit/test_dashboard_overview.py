"""Gathering the overview from fake upstreams: concurrency, contained failures, caching, JSON shape."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from gyre_dashboard.domain.health import Health, ServiceHealth, UpstreamError
from gyre_dashboard.domain.models import (
    AlertSummary,
    FeatureDriftRow,
    ModelDrift,
    ModelQuality,
    ModelSummary,
    VersionQuality,
    VersionSummary,
)
from gyre_dashboard.domain.overview import to_json
from gyre_dashboard.domain.training import RunOrigin, RunSummary, TrainingJobSummary
from gyre_dashboard.handlers import DashboardHandlers, OverviewLimits

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SERVICES = ("registry", "monitor", "feedback", "trainer", "tracking")


@dataclass
class FakeUpstreams:
    """In-memory upstreams; a service named in ``down`` raises UpstreamError for every call."""

    models: list[ModelSummary] = field(default_factory=list)
    versions: dict[str, list[VersionSummary]] = field(default_factory=dict)
    drift: dict[str, ModelDrift] = field(default_factory=dict)
    quality: dict[str, ModelQuality] = field(default_factory=dict)
    jobs: list[TrainingJobSummary] = field(default_factory=list)
    alerts: list[AlertSummary] = field(default_factory=list)
    runs: list[RunSummary] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    delay_s: float = 0.0
    calls: list[tuple[str, object]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def _enter(self, service: str, what: str, arg: object = None) -> None:
        self.calls.append((what, arg))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        if service in self.down:
            raise UpstreamError(service, "unreachable (connection refused)")

    async def readiness(self, service: str) -> ServiceHealth:
        await self._enter("none", "readiness", service)
        if service in self.down:
            return ServiceHealth(service, f"http://{service}", Health.DOWN, detail="unreachable")
        return ServiceHealth(service, f"http://{service}", Health.READY, latency_ms=1.0)

    async def registry_models(self, limit: int) -> list[ModelSummary]:
        await self._enter("registry", "models", limit)
        return self.models[:limit]

    async def registry_versions(self, model_name: str, limit: int) -> list[VersionSummary]:
        await self._enter("registry", "versions", model_name)
        return self.versions.get(model_name, [])[:limit]

    async def monitor_latest_drift(self, model_name: str) -> ModelDrift | None:
        await self._enter("monitor", "drift", model_name)
        return self.drift.get(model_name)

    async def monitor_alerts(self, limit: int) -> list[AlertSummary]:
        await self._enter("monitor", "alerts", limit)
        return self.alerts[:limit]

    async def feedback_quality(self, model_name: str, window_start: datetime) -> ModelQuality | None:
        await self._enter("feedback", "quality", (model_name, window_start))
        return self.quality.get(model_name)

    async def trainer_jobs(self, limit: int) -> list[TrainingJobSummary]:
        await self._enter("trainer", "jobs", limit)
        return self.jobs[:limit]

    async def tracking_runs(self, limit: int) -> list[RunSummary]:
        await self._enter("tracking", "runs", limit)
        return self.runs[:limit]


def sample_upstreams() -> FakeUpstreams:
    return FakeUpstreams(
        models=[ModelSummary("fraud", latest_version=1, aliases={"production": 1}),
                ModelSummary("churn", "who leaves", 2, {"production": 1, "challenger": 2})],
        versions={"churn": [VersionSummary(2, "READY", ("challenger",)), VersionSummary(1, "READY", ("production",))],
                  "fraud": [VersionSummary(1, "READY", ("production",))]},
        drift={"churn": ModelDrift("churn", 1, NOW - timedelta(minutes=5), NOW, 300, 0.5, True,
                                   (FeatureDriftRow("age", "ks", 0.4, 0.001, 0.05, True),
                                    FeatureDriftRow("plan", "chisquare", 1.0, 0.6, 0.05, False)))},
        quality={"churn": ModelQuality("churn", NOW - timedelta(hours=24), NOW,
                                       (VersionQuality(1, 100, 10, 8, accuracy=0.75),))},
        jobs=[TrainingJobSummary("j1", "r1", "churn", "SUCCEEDED", "DRIFT", "monitor", NOW, NOW, 12, 2)],
        alerts=[AlertSummary("a1", "DRIFT", "churn", 1, NOW, 0.5, ("age",))],
        runs=[RunSummary("t" * 32, "trial-3", "1", "gyre/churn", "FINISHED", NOW, NOW, "gyre-trainer",
                         RunOrigin.TRAINER, "job j1, trial 3", "p" * 32, {"val_f1": 0.7, "loss": float("nan")}, 2),
              RunSummary("m" * 32, "bold-owl", "0", "Default", "RUNNING", NOW - timedelta(minutes=1), None, "alice",
                         RunOrigin.MLFLOW, "train.py")],
    )


def service(upstreams: FakeUpstreams, **kwargs: object) -> DashboardHandlers:
    return DashboardHandlers(upstreams, SERVICES, OverviewLimits(max_models=10, versions_per_model=5, recent_runs=7),
                           clock=lambda: NOW,
                           **kwargs)  # type: ignore[arg-type]


async def test_everything_up() -> None:
    upstreams = sample_upstreams()
    overview = await service(upstreams).collect()
    assert [s.name for s in overview.services] == list(SERVICES)
    assert all(s.health is Health.READY for s in overview.services)
    assert [m.name for m in overview.models.items] == ["churn", "fraud"]  # by name
    churn = overview.models.items[0]
    assert churn.aliases == {"production": 1, "challenger": 2} and [v.version for v in churn.versions] == [2, 1]
    assert [d.model_name for d in overview.drift.items] == ["churn"]  # fraud has no window yet: left out
    assert overview.drift.items[0].drifted_features == ("age",)
    assert [q.model_name for q in overview.quality.items] == ["churn"]
    assert overview.training_jobs.items[0].reason == "DRIFT" and overview.alerts.items[0].alert_id == "a1"
    assert [(r.run_name, r.origin) for r in overview.runs.items] == [("trial-3", RunOrigin.TRAINER),
                                                                     ("bold-owl", RunOrigin.MLFLOW)]
    assert ("runs", 7) in upstreams.calls  # the configured limit
    for section in (overview.models, overview.drift, overview.quality, overview.training_jobs, overview.alerts,
                    overview.runs):
        assert section.error == "" and section.available
    window_starts = {arg[1] for what, arg in upstreams.calls if what == "quality"}  # type: ignore[index]
    assert window_starts == {NOW - timedelta(hours=24)}
    assert overview.generated_at == NOW


async def test_registry_down_leaves_drift_and_quality_unknown_but_the_rest_shows() -> None:
    upstreams = sample_upstreams()
    upstreams.down = {"registry"}
    overview = await service(upstreams).collect()
    health = {s.name: s.health for s in overview.services}
    assert health["registry"] is Health.DOWN and health["monitor"] is Health.READY
    assert not overview.models.available and "registry: unreachable" in overview.models.error
    assert not overview.drift.available and "registry" in overview.drift.error
    assert not overview.quality.available
    assert overview.training_jobs.available and overview.alerts.available and overview.runs.available


async def test_tracking_down_costs_only_the_runs() -> None:
    upstreams = sample_upstreams()
    upstreams.down = {"tracking"}
    overview = await service(upstreams).collect()
    assert {s.name: s.health for s in overview.services}["tracking"] is Health.DOWN
    assert not overview.runs.available and overview.runs.error == "tracking: unreachable (connection refused)"
    for section in (overview.models, overview.drift, overview.quality, overview.training_jobs, overview.alerts):
        assert section.available and section.error == ""


async def test_monitor_down_costs_only_its_sections_with_one_error_text() -> None:
    upstreams = sample_upstreams()
    upstreams.down = {"monitor"}
    overview = await service(upstreams).collect()
    assert overview.models.available and len(overview.models.items) == 2
    assert not overview.drift.available and not overview.alerts.available
    # Two models, two failing drift calls, one distinct message.
    assert overview.drift.error == "monitor: unreachable (connection refused)"
    assert overview.quality.available and overview.training_jobs.available


async def test_a_failing_version_list_marks_its_model_only() -> None:
    class OneBadModel(FakeUpstreams):
        async def registry_versions(self, model_name: str, limit: int) -> list[VersionSummary]:
            if model_name == "fraud":
                raise UpstreamError("registry", "answered 503: database is down")
            return await super().registry_versions(model_name, limit)

    base = sample_upstreams()
    upstreams = OneBadModel(models=base.models, versions=base.versions)
    overview = await service(upstreams).collect()
    churn, fraud = overview.models.items
    assert churn.versions and not churn.versions_error
    assert fraud.versions == () and "database is down" in fraud.versions_error
    assert overview.models.available and "database is down" in overview.models.error  # partly unknown


async def test_an_unexpected_exception_is_contained_too() -> None:
    class Broken(FakeUpstreams):
        async def trainer_jobs(self, limit: int) -> list[TrainingJobSummary]:
            raise KeyError("status")

    overview = await service(Broken()).collect()
    assert not overview.training_jobs.available and "status" in overview.training_jobs.error


async def test_calls_run_concurrently_within_the_limit() -> None:
    upstreams = sample_upstreams()
    upstreams.models = [ModelSummary(f"m{i}") for i in range(10)]
    upstreams.delay_s = 0.05
    started = time.perf_counter()
    await service(upstreams, max_concurrency=8).collect()
    elapsed = time.perf_counter() - started
    # 5 readiness + 4 lists, then 30 per-model calls: sequential would take 39 x 50 ms = 1.95 s.
    assert elapsed < 0.9, elapsed
    assert upstreams.max_in_flight == 8


async def test_concurrent_requests_share_one_gathering_and_the_cache_expires() -> None:
    upstreams = sample_upstreams()
    upstreams.delay_s = 0.02
    overviews = service(upstreams, cache_ttl_s=0.2)
    first, second = await asyncio.gather(overviews.overview(), overviews.overview())
    assert first is second
    assert (await overviews.overview()) is first  # still fresh
    rounds = sum(1 for what, _ in upstreams.calls if what == "models")
    assert rounds == 1
    await asyncio.sleep(0.25)
    assert (await overviews.overview()) is not first
    assert sum(1 for what, _ in upstreams.calls if what == "models") == 2


async def test_a_cancelled_request_does_not_cancel_the_shared_gathering() -> None:
    upstreams = sample_upstreams()
    upstreams.delay_s = 0.05
    overviews = service(upstreams, cache_ttl_s=0.0)
    impatient = asyncio.create_task(overviews.overview())
    patient = asyncio.create_task(overviews.overview())
    await asyncio.sleep(0.01)
    impatient.cancel()
    overview = await patient
    assert overview.models.available
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_json_shape() -> None:
    upstreams = sample_upstreams()
    upstreams.down = {"feedback"}
    data = to_json(await service(upstreams).collect())
    assert set(data) == {"generated_at", "services", "models", "drift", "quality", "training_jobs", "alerts",
                         "runs", "duration_ms"}
    assert data["generated_at"] == "2025-03-01T12:00:00Z"
    assert data["services"][2] == {"name": "feedback", "url": "http://feedback", "health": "down", "failing": [],
                                   "detail": "unreachable", "latency_ms": None}
    assert data["models"]["available"] is True and data["models"]["error"] is None
    assert data["models"]["items"][0]["aliases"] == {"production": 1, "challenger": 2}
    drift = data["drift"]["items"][0]
    assert drift["drifted_features"] == ["age"] and drift["features"][0]["p_value"] == 0.001
    assert data["quality"] == {"source": "feedback", "available": False, "items": [],
                               "error": "feedback: unreachable (connection refused)"}
    assert data["training_jobs"]["items"][0]["created_at"] == "2025-03-01T12:00:00Z"
    trial, mlflow_run = data["runs"]["items"]
    assert data["runs"]["source"] == "tracking" and data["runs"]["error"] is None
    assert (trial["origin"], trial["origin_detail"], trial["experiment_name"]) == ("trainer", "job j1, trial 3",
                                                                                   "gyre/churn")
    assert trial["metrics"] == {"val_f1": 0.7, "loss": None}  # NaN has no JSON: null
    assert (mlflow_run["origin"], mlflow_run["status"], mlflow_run["end_time"]) == ("mlflow", "RUNNING", None)
    json.dumps(data, allow_nan=False)  # what the HTTP answer does: strict JSON
