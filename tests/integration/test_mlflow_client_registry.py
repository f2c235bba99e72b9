"""The unmodified MLflow client's model-registry calls against real tracking + registry servers.

``MlflowClient(tracking_uri=<tracking>, registry_uri=<tracking>)``: every registry call goes to
tracking, which proxies it to the registry (real PostgreSQL, real Tansu for registry.events).
The client is synchronous (requests), so each call runs in a thread while the services keep
serving on this event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from support.kafka import fast_kafka, read_all
from support.services import fast_settings, running
from support.waiting import wait_until

from gyre_common.bus import ensure_topics
from gyre_common.topics import REGISTRY_EVENTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_registry.bootstrap import bootstrap as registry_bootstrap
from gyre_registry.service import SPEC as REGISTRY
from gyre_registry.settings import RegistrySettings
from gyre_tracking import bootstrap as tracking_bootstrap_module
from gyre_tracking.service import SPEC as TRACKING
from gyre_tracking.settings import TrackingSettings

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:.*(stages|get_latest_versions).*:FutureWarning")]

T = TypeVar("T")


@dataclass
class Servers:
    client: MlflowClient
    registry_http: httpx.AsyncClient
    tracking_url: str
    kafka: Any

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def registry_events(self, model: str, kind: int) -> list[ev.RegistryEvent]:
        found = []
        for envelope in await read_all(self.kafka, REGISTRY_EVENTS):
            message = envelope.message
            if isinstance(message, ev.RegistryEvent) and message.model_name == model and message.kind == kind:
                found.append(message)
        return found


@pytest.fixture
async def servers(bootstrap_servers: str, unique: str, database_url: str, tmp_path: Any,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Servers]:
    kafka = fast_kafka(bootstrap_servers, f"m{unique}.")
    await ensure_topics(kafka, [REGISTRY_EVENTS])
    registry_settings = fast_settings(RegistrySettings, outbox_poll_interval_s=0.2, outbox_max_backoff_s=0.5)
    async with running(REGISTRY, registry_bootstrap, registry_settings, kafka=kafka,
                       database_url=database_url) as registry:
        tracking_settings = fast_settings(TrackingSettings, consume_events=False,
                                          registry_url=f"http://127.0.0.1:{registry.http_port}",
                                          default_artifact_root=(tmp_path / "artifacts").as_uri())
        async with running(TRACKING, tracking_bootstrap_module.bootstrap, tracking_settings, kafka=kafka,
                           database_url=database_url) as tracking:
            url = f"http://127.0.0.1:{tracking.http_port}"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{registry.http_port}") as http:
                yield Servers(MlflowClient(tracking_uri=url, registry_uri=url), http, url, kafka)


def _error_code(exc: MlflowException) -> str:
    return str(exc.error_code)


async def test_registered_models_create_get_search_update_delete(servers: Servers) -> None:
    c = servers.client
    created = await servers.call(c.create_registered_model, "churn-a", tags={"team": "growth"},
                                 description="first")
    assert created.name == "churn-a" and created.tags == {"team": "growth"} and created.description == "first"
    await servers.call(c.create_registered_model, "churn-b")
    await servers.call(c.create_registered_model, "fraud")

    got = await servers.call(c.get_registered_model, "churn-a")
    assert got.description == "first" and got.creation_timestamp > 0

    found = await servers.call(c.search_registered_models, filter_string="name LIKE 'churn-%'")
    assert [m.name for m in found] == ["churn-a", "churn-b"]
    by_tag = await servers.call(c.search_registered_models, filter_string="tags.team = 'growth'")
    assert [m.name for m in by_tag] == ["churn-a"]
    descending = await servers.call(c.search_registered_models, order_by=["name DESC"])
    assert [m.name for m in descending] == ["fraud", "churn-b", "churn-a"]

    page1 = await servers.call(c.search_registered_models, max_results=2)
    assert len(page1) == 2 and page1.token
    page2 = await servers.call(c.search_registered_models, max_results=2, page_token=page1.token)
    assert [m.name for m in page2] == ["fraud"] and not page2.token

    updated = await servers.call(c.update_registered_model, "churn-a", description="second")
    assert updated.description == "second"
    await servers.call(c.set_registered_model_tag, "churn-a", "owner", "ana")
    await servers.call(c.delete_registered_model_tag, "churn-a", "team")
    assert (await servers.call(c.get_registered_model, "churn-a")).tags == {"owner": "ana"}

    await servers.call(c.delete_registered_model, "churn-b")
    with pytest.raises(MlflowException) as missing:
        await servers.call(c.get_registered_model, "churn-b")
    assert _error_code(missing.value) == "RESOURCE_DOES_NOT_EXIST"


async def test_versions_tags_and_search(servers: Servers) -> None:
    c = servers.client
    await servers.call(c.create_registered_model, "ranker")
    v1 = await servers.call(c.create_model_version, "ranker", "file:///runs/r1/artifacts/model", run_id="r1",
                            tags={"stage": "dev"}, description="baseline")
    v2 = await servers.call(c.create_model_version, "ranker", "file:///runs/r2/artifacts/model", run_id="r2")
    assert (int(v1.version), int(v2.version)) == (1, 2)
    assert v1.status == "READY" and v1.source == "file:///runs/r1/artifacts/model" and v1.run_id == "r1"
    assert v1.tags == {"stage": "dev"} and v1.description == "baseline"

    got = await servers.call(c.get_model_version, "ranker", "2")
    assert got.run_id == "r2" and got.current_stage == "None"
    latest = await servers.call(c.get_latest_versions, "ranker")
    assert [int(v.version) for v in latest] == [2]
    uri = await servers.call(c.get_model_version_download_uri, "ranker", "1")
    assert uri == "file:///runs/r1/artifacts/model"

    by_run = await servers.call(c.search_model_versions, "run_id = 'r2'")
    assert [(v.name, int(v.version)) for v in by_run] == [("ranker", 2)]
    by_name = await servers.call(c.search_model_versions, "name = 'ranker'")
    assert [int(v.version) for v in by_name] == [2, 1]
    by_tag = await servers.call(c.search_model_versions, "tags.stage = 'dev'")
    assert [int(v.version) for v in by_tag] == [1]

    updated = await servers.call(c.update_model_version, "ranker", "1", description="better words")
    assert updated.description == "better words"
    await servers.call(c.set_model_version_tag, "ranker", "2", "validated", "yes")
    await servers.call(c.delete_model_version_tag, "ranker", "1", "stage")
    assert (await servers.call(c.get_model_version, "ranker", "1")).tags == {}
    assert (await servers.call(c.get_model_version, "ranker", "2")).tags == {"validated": "yes"}

    await servers.call(c.delete_model_version, "ranker", "1")
    with pytest.raises(MlflowException) as missing:
        await servers.call(c.get_model_version, "ranker", "1")
    assert _error_code(missing.value) == "RESOURCE_DOES_NOT_EXIST"
    # Numbers are never reused after a deletion.
    v3 = await servers.call(c.create_model_version, "ranker", "file:///runs/r3/artifacts/model", run_id="r3")
    assert int(v3.version) == 3


async def test_aliases_are_governed_registry_aliases(servers: Servers) -> None:
    c = servers.client
    await servers.call(c.create_registered_model, "scorer")
    await servers.call(c.create_model_version, "scorer", "file:///runs/a/artifacts/model", run_id="a")
    await servers.call(c.create_model_version, "scorer", "file:///runs/b/artifacts/model", run_id="b")

    await servers.call(c.set_registered_model_alias, "scorer", "production", "2")
    by_alias = await servers.call(c.get_model_version_by_alias, "scorer", "production")
    assert int(by_alias.version) == 2 and by_alias.aliases == ["production"]
    model = await servers.call(c.get_registered_model, "scorer")
    assert {k: int(v) for k, v in model.aliases.items()} == {"production": 2}

    # The alias went through the registry's governed path: audited and announced.
    audit = (await servers.registry_http.get("/api/v1/audit-entries", params={"model_name": "scorer"})).json()
    moves = [e for e in audit["entries"] if e["action"] == "set_alias"]
    assert moves and moves[0]["details"]["alias"] == "production" and moves[0]["details"]["to_version"] == "2"
    events = await wait_until(lambda: servers.registry_events("scorer", ev.REGISTRY_EVENT_KIND_ALIAS_SET),
                              what="ALIAS_SET of scorer")
    assert events[0].alias == "production" and events[0].version == 2 and events[0].previous_version == 0

    await servers.call(c.delete_registered_model_alias, "scorer", "production")
    with pytest.raises(MlflowException) as gone:
        await servers.call(c.get_model_version_by_alias, "scorer", "production")
    assert _error_code(gone.value) == "RESOURCE_DOES_NOT_EXIST"
    await wait_until(lambda: servers.registry_events("scorer", ev.REGISTRY_EVENT_KIND_ALIAS_REMOVED),
                     what="ALIAS_REMOVED of scorer")


async def test_errors_carry_mlflow_codes(servers: Servers) -> None:
    c = servers.client
    await servers.call(c.create_registered_model, "dup")
    with pytest.raises(MlflowException) as exists:
        await servers.call(c.create_registered_model, "dup")
    assert _error_code(exists.value) == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as bad_filter:
        await servers.call(c.search_registered_models, filter_string="colour = 'red'")
    assert _error_code(bad_filter.value) == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as no_model:
        await servers.call(c.create_model_version, "nope", "file:///x", run_id="r")
    assert _error_code(no_model.value) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as no_version:
        await servers.call(c.set_registered_model_alias, "dup", "production", "7")
    assert _error_code(no_version.value) == "RESOURCE_DOES_NOT_EXIST"
    await servers.call(c.create_model_version, "dup", "file:///x", run_id="r")
    with pytest.raises(MlflowException) as stages:
        await servers.call(c.transition_model_version_stage, "dup", "1", "Production")
    assert _error_code(stages.value) == "NOT_IMPLEMENTED" and "alias" in str(stages.value)

    # The proxy passes status and body through unchanged; the registry answers the same directly.
    async with httpx.AsyncClient(base_url=servers.tracking_url) as tracking:
        via_proxy = await tracking.get("/api/2.0/mlflow/registered-models/get", params={"name": "absent"})
        via_ajax = await tracking.get("/ajax-api/2.0/mlflow/registered-models/get", params={"name": "absent"})
    direct = await servers.registry_http.get("/api/2.0/mlflow/registered-models/get", params={"name": "absent"})
    assert via_proxy.status_code == via_ajax.status_code == direct.status_code == 404
    assert via_proxy.json() == direct.json() == {
        "error_code": "RESOURCE_DOES_NOT_EXIST", "message": "registered model 'absent' does not exist",
    }
