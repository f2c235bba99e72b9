"""Schemathesis against the OpenAPI document of every FastAPI service, each a real service in-process on
free ports with a real PostgreSQL (and Tansu where it talks to Kafka).

For every operation of a service's ``/openapi.json`` Schemathesis generates valid (positive) and
invalid (negative) requests; each answer must not be a 5xx and must conform to the documented
response schema and content type where one is documented. Generation is derandomised (the same
examples on every run) and bounded (``EXAMPLES`` per operation and mode), so the file takes a few
minutes on two cores.

The requests are sent from a worker thread: the services run on the test's event loop, which must
keep turning while Schemathesis (synchronous, requests-based) waits for their answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity
from schemathesis import CheckFunction, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance
from support.kafka import fast_kafka
from support.services import fast_settings, running

from gyre_common.artifacts import ArtifactSettings
from gyre_common.runner import ServiceContext, ServiceRunner
from gyre_common.settings import KafkaSettings

pytestmark = [
    pytest.mark.integration,
    # Evidently (the monitor's HTML report) imports modules that warn about their own dependencies.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

EXAMPLES = 50
"""Generated requests per operation and generation mode (positive, negative)."""

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]

NOT_YET_CHECKED: dict[str, set[CheckFunction]] = {}
"""Checks left out for one operation until its owner fixes what they found (never not_a_server_error)."""


def _failure_titles(exc: BaseException) -> str:
    inner = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
    return "; ".join(getattr(e, "title", None) or type(e).__name__ for e in inner)


def check_cases(operation: schemathesis.APIOperation, mode: GenerationMode, base_url: str,
                session: requests.Session, examples: int, failures: dict[str, str]) -> None:
    """``examples`` generated requests to ``operation``; its first failure lands in ``failures``."""
    label = f"{operation.label} [{mode.value}]"
    checks = [check for check in CHECKS if check not in NOT_YET_CHECKED.get(operation.label, set())]

    @hypothesis.settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                         phases=[Phase.explicit, Phase.generate], verbosity=Verbosity.quiet,
                         suppress_health_check=list(HealthCheck))
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        if label in failures:
            return
        response = case.call(base_url=base_url, session=session, timeout=30)
        try:
            case.validate_response(response, checks=checks)
        except (AssertionError, BaseExceptionGroup) as exc:  # failed checks: keep the first, go on
            failures[label] = (f"{label}: {response.status_code} {response.text[:300]!r}\n"
                               f"    {case.as_curl_command()}\n    {_failure_titles(exc)}")

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        pass  # nothing to generate: e.g. no invalid request exists for an operation without inputs


def _fuzz_sync(document: dict[str, Any], base_url: str, examples: int) -> list[str]:
    """Run every operation of ``document`` against ``base_url``; the first failure of each operation."""
    schema = schemathesis.openapi.from_dict(document)
    failures: dict[str, str] = {}
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            check_cases(operation, mode, base_url, session, examples, failures)
    return list(failures.values())


async def fuzz(runner: ServiceRunner, examples: int = EXAMPLES) -> list[str]:
    """Schemathesis on the service's own OpenAPI document; failures as readable lines."""
    base_url = f"http://127.0.0.1:{runner.http_port}"
    async with httpx.AsyncClient(base_url=base_url) as http:
        answer = await http.get("/openapi.json")
        answer.raise_for_status()
        document = answer.json()
    assert document["paths"], "the service documents no operation"
    return await asyncio.to_thread(_fuzz_sync, document, base_url, examples)


def assert_clean(failures: Iterable[str]) -> None:
    failures = list(failures)
    assert not failures, f"{len(failures)} operation(s) failed:\n\n" + "\n\n".join(failures)


@pytest.fixture
def kafka(bootstrap_servers: str, unique: str) -> KafkaSettings:
    return fast_kafka(bootstrap_servers, f"z{unique}.")


@pytest.fixture(autouse=True)
def artifact_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GYRE_ARTIFACTS_ROOT", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


async def test_tracking(kafka: KafkaSettings, database_url: str, tmp_path: Path) -> None:
    from gyre_tracking.bootstrap import bootstrap
    from gyre_tracking.service import SPEC
    from gyre_tracking.settings import TrackingSettings

    settings = fast_settings(TrackingSettings, consume_events=False, artifacts_destination=str(tmp_path / "t"),
                             registry_url="http://127.0.0.1:9")
    async with running(SPEC, bootstrap, settings, kafka=kafka, database_url=database_url) as runner:
        assert_clean(await fuzz(runner))


async def test_features(kafka: KafkaSettings, database_url: str) -> None:
    from gyre_features.bootstrap import bootstrap
    from gyre_features.service import SPEC
    from gyre_features.settings import FeaturesSettings

    async with running(SPEC, bootstrap, fast_settings(FeaturesSettings), kafka=kafka,
                       database_url=database_url) as runner:
        assert_clean(await fuzz(runner))


async def test_trainer(kafka: KafkaSettings, database_url: str, tmp_path: Path, unique: str) -> None:
    from gyre_common.artifacts import LocalArtifactStore
    from gyre_trainer.bootstrap import Dependencies, bootstrap
    from gyre_trainer.service import SPEC
    from gyre_trainer.settings import TrainerSettings
    from gyre_trainer.testing import (
        FakeModelRegistry,
        FakeRunLogger,
        FakeTrainingDataSource,
        breast_cancer_training_set,
    )

    deps = Dependencies(source=FakeTrainingDataSource({"patients": breast_cancer_training_set()}),
                        runs=FakeRunLogger(), registry=FakeModelRegistry(),
                        artifacts=LocalArtifactStore(tmp_path / "trainer-artifacts"))

    async def build(ctx: ServiceContext) -> None:
        await bootstrap(ctx, deps)

    settings = fast_settings(TrainerSettings, consumer_group=f"trainer-{unique}", default_max_evals=1)
    async with running(SPEC, build, settings, kafka=kafka, database_url=database_url) as runner:
        assert_clean(await fuzz(runner))


async def test_registry(kafka: KafkaSettings, database_url: str) -> None:
    from gyre_registry.bootstrap import bootstrap
    from gyre_registry.service import SPEC
    from gyre_registry.settings import RegistrySettings

    async with running(SPEC, bootstrap, fast_settings(RegistrySettings), kafka=kafka,
                       database_url=database_url) as runner:
        assert_clean(await fuzz(runner))


async def test_serving(kafka: KafkaSettings, artifact_root: Path) -> None:
    from gyre_serving.bootstrap import bootstrap
    from gyre_serving.service import SPEC
    from gyre_serving.settings import ServingSettings

    settings = fast_settings(ServingSettings, registry_address="")
    async with running(SPEC, partial(bootstrap, artifacts=ArtifactSettings(root=str(artifact_root))), settings,
                       kafka=kafka) as runner:
        assert_clean(await fuzz(runner))


async def test_feedback(kafka: KafkaSettings, database_url: str) -> None:
    from gyre_feedback.bootstrap import bootstrap
    from gyre_feedback.service import SPEC
    from gyre_feedback.settings import FeedbackSettings

    async with running(SPEC, bootstrap, fast_settings(FeedbackSettings), kafka=kafka,
                       database_url=database_url) as runner:
        assert_clean(await fuzz(runner))


async def test_monitor(kafka: KafkaSettings, database_url: str) -> None:
    from gyre_monitor.bootstrap import bootstrap
    from gyre_monitor.service import SPEC
    from gyre_monitor.settings import MonitorSettings

    async with running(SPEC, bootstrap, fast_settings(MonitorSettings), kafka=kafka,
                       database_url=database_url) as runner:
        assert_clean(await fuzz(runner))


async def test_dashboard() -> None:
    from gyre_dashboard.bootstrap import bootstrap
    from gyre_dashboard.service import SPEC
    from gyre_dashboard.settings import DashboardSettings

    down = "http://127.0.0.1:9"  # discard port: nothing listens, so every upstream is down at once
    settings = fast_settings(DashboardSettings, upstream_timeout_s=2, cache_ttl_s=0,
                             **{f"{name}_url": down for name in DashboardSettings().upstream_urls()})
    async with running(SPEC, bootstrap, settings) as runner:
        assert_clean(await fuzz(runner))
