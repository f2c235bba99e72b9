"""The registry in-process on real Tansu + PostgreSQL: promotion, events, numbering, idempotency,
errors, the REST mirror and tokens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from support.waiting import wait_until

from gyre_common.artifacts import LocalArtifactStore
from gyre_common.bus import Envelope, decode_record, ensure_topics
from gyre_common.runner import ServiceRunner
from gyre_common.settings import DatabaseSettings, KafkaSettings, TelemetrySettings
from gyre_common.topics import REGISTRY_EVENTS, full_name
from gyre_contracts.gyre.events.v1 import common_pb2
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.gyre.registry.v1 import registry_service_pb2 as pb
from gyre_contracts.gyre.registry.v1 import registry_service_pb2_grpc as pb_grpc
from gyre_registry.bootstrap import bootstrap
from gyre_registry.service import SPEC
from gyre_registry.settings import RegistrySettings

pytestmark = pytest.mark.integration

HOLDOUT = "1" * 64
OTHER_HOLDOUT = "2" * 64


class EventReader:
    """Reads registry.events from the beginning (no consumer group) and keeps every envelope."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.events: list[Envelope] = []
        self._consumer = AIOKafkaConsumer(
            full_name(REGISTRY_EVENTS, kafka.topic_prefix), bootstrap_servers=kafka.bootstrap_servers,
            auto_offset_reset="earliest", enable_auto_commit=False, metadata_max_age_ms=500,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for records in (await self._consumer.getmany(timeout_ms=100)).values():
                self.events.extend(decode_record(record, self.kafka.topic_prefix) for record in records)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    def of(self, model: str, kind: int | None = None) -> list[ev.RegistryEvent]:
        found = []
        for envelope in self.events:
            message = envelope.message
            assert isinstance(message, ev.RegistryEvent)
            if message.model_name == model and (kind is None or message.kind == kind):
                found.append(message)
        return found

    async def wait_for(self, model: str, kind: int, count: int = 1, within_s: float = 20.0) -> list[ev.RegistryEvent]:
        await wait_until(lambda: len(self.of(model, kind)) >= count, within_s,
                         f"{count} {ev.RegistryEventKind.Name(kind)} of {model}")  # type: ignore[arg-type]
        return self.of(model, kind)


@dataclass
class Registry:
    runner: ServiceRunner
    stub: pb_grpc.RegistryServiceStub
    http: httpx.AsyncClient
    kafka: KafkaSettings
    events: EventReader
    artifacts: LocalArtifactStore


def kafka_settings(bootstrap_servers: str, unique: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=f"r{unique}.", default_partitions=2,
                         request_timeout_ms=5000, linger_ms=1, retry_backoff_ms=50)


def registry_settings(**overrides: object) -> RegistrySettings:
    base: dict[str, object] = dict(http_port=0, grpc_port=0, readiness_interval_s=0.2, shutdown_grace_s=3,
                                   outbox_poll_interval_s=0.2, outbox_max_backoff_s=0.5)
    base.update(overrides)
    return RegistrySettings(**base)  # type: ignore[arg-type]


@asynccontextmanager
async def running_registry(kafka: KafkaSettings, database_url: str, artifacts_root: Path,
                           settings: RegistrySettings | None = None) -> AsyncIterator[Registry]:
    """The registry in-process, a gRPC stub, an HTTP client and a reader of its events."""
    await ensure_topics(kafka, [REGISTRY_EVENTS])
    runner = ServiceRunner(SPEC, bootstrap, settings=settings or registry_settings(), kafka=kafka,
                           database=DatabaseSettings(url=database_url, pool_max_size=20),
                           telemetry_settings=TelemetrySettings())
    await runner.start()
    events = EventReader(kafka)
    await events.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runner.grpc_port}") as channel, \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.http_port}") as http:
            yield Registry(runner, pb_grpc.RegistryServiceStub(channel), http, kafka, events,
                           LocalArtifactStore(artifacts_root))
    finally:
        await events.stop()
        await runner.stop()


@pytest.fixture
async def registry(bootstrap_servers: str, unique: str, database_url: str, tmp_path: Path) -> AsyncIterator[Registry]:
    async with running_registry(kafka_settings(bootstrap_servers, unique), database_url, tmp_path) as started:
        yield started


def version_request(registry: Registry, model: str, *, accuracy: float | None = None, holdout: str = HOLDOUT,
                    key: str = "", content: bytes | None = None) -> pb.CreateModelVersionRequest:
    """A registration of a fresh artifact, with a reference profile and holdout_accuracy."""
    ref = registry.artifacts.put(content if content is not None else f"model {time.monotonic_ns()}".encode())
    profile = registry.artifacts.put(b"profile " + ref.sha256.encode())
    request = pb.CreateModelVersionRequest(
        model_name=model,
        artifact=common_pb2.ArtifactRef(uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size, format="skops"),
        signature=common_pb2.ModelSignature(
            inputs=[common_pb2.TensorSpec(name="spend", datatype="FP64", shape=[-1])],
            outputs=[common_pb2.TensorSpec(name="predict", datatype="INT64", shape=[-1])],
        ),
        lineage=common_pb2.Lineage(
            training_request_id=f"req-{model}-{key}", feature_views=["customer_stats"],
            dataset_fingerprint="f" * 64, run_id="run-1", experiment_id="exp-1",
            hyperparameters={"max_depth": "4"}, code_version="abc123", label="churned", training_rows=1000,
            reference_profile=common_pb2.ArtifactRef(uri=profile.uri, sha256=profile.sha256,
                                                     size_bytes=profile.size, format="gyre-reference-profile"),
        ),
        idempotency_key=key,
    )
    request.lineage.window_start.FromJsonString("2025-03-01T00:00:00Z")
    request.lineage.window_end.FromJsonString("2025-03-08T00:00:00Z")
    if accuracy is not None:
        request.lineage.metrics["holdout_accuracy"] = accuracy
        request.evaluation.primary_metric = "holdout_accuracy"
        request.evaluation.holdout_id = holdout
    return request


async def production(registry: Registry, model: str) -> int:
    reply = await registry.stub.GetModelVersionByAlias(
        pb.GetModelVersionByAliasRequest(model_name=model, alias="production"))
    return reply.model_version.version


# -- the promotion flow and its events --------------------------------------------------------------

async def test_promotion_policy_moves_aliases_with_audit_and_events(registry: Registry, unique: str) -> None:
    model = f"churn-{unique}"
    stub = registry.stub

    first = await stub.CreateModelVersion(version_request(registry, model, accuracy=0.80))
    assert first.model_version.version == 1
    assert first.promotion.outcome == pb.PROMOTION_OUTCOME_PROMOTED
    assert first.promotion.alias == "production" and first.promotion.previous_version == 0
    assert list(first.model_version.aliases) == ["production"]
    assert await production(registry, model) == 1

    created = (await registry.events.wait_for(model, ev.REGISTRY_EVENT_KIND_VERSION_CREATED))[0]
    request = version_request(registry, model, accuracy=0.80)  # same shape as the registration above
    assert created.version == 1
    assert created.artifact == first.model_version.artifact
    assert created.signature == request.signature
    assert created.lineage.reference_profile.sha256 == first.model_version.lineage.reference_profile.sha256
    assert created.lineage.metrics["holdout_accuracy"] == pytest.approx(0.80)
    assert created.lineage.window_end.ToJsonString() == "2025-03-08T00:00:00Z"
    assert created.occurred_at.seconds > 0 and created.audit_id
    alias_set = (await registry.events.wait_for(model, ev.REGISTRY_EVENT_KIND_ALIAS_SET))[0]
    assert (alias_set.alias, alias_set.version, alias_set.previous_version) == ("production", 1, 0)
    assert alias_set.actor == "policy"
    assert alias_set.artifact.sha256 == first.model_version.artifact.sha256
    assert alias_set.signature.inputs[0].name == "spend"

    second = await stub.CreateModelVersion(version_request(registry, model, accuracy=0.85))
    assert second.model_version.version == 2
    assert second.promotion.outcome == pb.PROMOTION_OUTCOME_PROMOTED
    assert (second.promotion.previous_version, second.promotion.champion_version) == (1, 1)
    moves = await registry.events.wait_for(model, ev.REGISTRY_EVENT_KIND_ALIAS_SET, 2)
    assert (moves[1].alias, moves[1].version, moves[1].previous_version) == ("production", 2, 1)
    assert "holdout_accuracy 0.85 >= 0.8" in moves[1].comment

    third = await stub.CreateModelVersion(version_request(registry, model, accuracy=0.70))
    assert third.promotion.outcome == pb.PROMOTION_OUTCOME_NOT_PROMOTED
    assert third.promotion.alias == "" and list(third.model_version.aliases) == []
    assert await production(registry, model) == 2

    fourth = await stub.CreateModelVersion(version_request(registry, model, accuracy=0.99, holdout=OTHER_HOLDOUT))
    assert fourth.promotion.outcome == pb.PROMOTION_OUTCOME_CHALLENGER
    assert "holdouts differ" in fourth.promotion.reason
    assert list(fourth.model_version.aliases) == ["challenger"]
    assert await production(registry, model) == 2

    # Every event of the model arrives, in order, keyed by the model, with distinct ce_ids.
    await registry.events.wait_for(model, ev.REGISTRY_EVENT_KIND_VERSION_CREATED, 4)
    await registry.events.wait_for(model, ev.REGISTRY_EVENT_KIND_ALIAS_SET, 3)
    envelopes = [e for e in registry.events.events if e.message.model_name == model]  # type: ignore[attr-defined]
    assert {e.key for e in envelopes} == {model}
    assert {e.ce_type for e in envelopes} == {"gyre.events.v1.RegistryEvent"}
    assert len({e.ce_id for e in envelopes}) == len(envelopes)
    kinds = [(e.message.kind, e.message.version) for e in envelopes]  # type: ignore[attr-defined]
    assert kinds == [
        (ev.REGISTRY_EVENT_KIND_MODEL_CREATED, 0),
        (ev.REGISTRY_EVENT_KIND_VERSION_CREATED, 1), (ev.REGISTRY_EVENT_KIND_ALIAS_SET, 1),
        (ev.REGISTRY_EVENT_KIND_VERSION_CREATED, 2), (ev.REGISTRY_EVENT_KIND_ALIAS_SET, 2),
        (ev.REGISTRY_EVENT_KIND_VERSION_CREATED, 3),
        (ev.REGISTRY_EVENT_KIND_VERSION_CREATED, 4), (ev.REGISTRY_EVENT_KIND_ALIAS_SET, 4),
    ]

    audit = await stub.ListAuditEntries(pb.ListAuditEntriesRequest(model_name=model))
    by_action = [(e.action, e.actor, e.version, dict(e.details)) for e in reversed(audit.entries)]
    moves_audited = [(v, d["alias"], d["from_version"], d["to_version"]) for a, who, v, d in by_action
                     if a == "set_alias" and who == "policy"]
    assert moves_audited == [(1, "production", "0", "1"), (2, "production", "1", "2"), (4, "challenger", "0", "4")]
    declined = [(v, d) for a, who, v, d in by_action if a == "promotion_declined"]
    assert len(declined) == 1 and declined[0][0] == 3 and "0.7 < 0.85" in declined[0][1]["reason"]
    challenger = next(d for a, _, v, d in by_action if a == "set_alias" and v == 4)
    assert "holdouts differ" in challenger["reason"]
    assert {e.audit_id for e in audit.entries} >= {m.audit_id for m in moves}


async def test_skip_promotion_registers_only(registry: Registry, unique: str) -> None:
    model = f"skip-{unique}"
    request = version_request(registry, model, accuracy=0.9)
    request.skip_promotion = True
    reply = await registry.stub.CreateModelVersion(request)
    assert reply.promotion.outcome == pb.PROMOTION_OUTCOME_SKIPPED
    assert list(reply.model_version.aliases) == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await production(registry, model)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# -- numbering and idempotency ------------------------------------------------------------------------

async def test_concurrent_creates_are_numbered_without_gaps(registry: Registry, unique: str) -> None:
    models = [f"conc-a-{unique}", f"conc-b-{unique}"]
    requests = [version_request(registry, model, accuracy=0.5 + i / 100) for i in range(10) for model in models]
    replies = await asyncio.gather(*(registry.stub.CreateModelVersion(r) for r in requests))
    for model in models:
        numbers = sorted(r.model_version.version for r in replies if r.model_version.model_name == model)
        assert numbers == list(range(1, 11))
        listed = await registry.stub.ListModelVersions(pb.ListModelVersionsRequest(model_name=model, page_size=4))
        assert [v.version for v in listed.model_versions] == [10, 9, 8, 7]
        rest = await registry.stub.ListModelVersions(
            pb.ListModelVersionsRequest(model_name=model, page_size=100, page_token=listed.next_page_token))
        assert [v.version for v in rest.model_versions] == [6, 5, 4, 3, 2, 1] and rest.next_page_token == ""
        model_reply = await registry.stub.GetRegisteredModel(pb.GetRegisteredModelRequest(name=model))
        assert model_reply.registered_model.latest_version == 10
        assert model_reply.registered_model.aliases["production"] >= 1
    await registry.events.wait_for(models[0], ev.REGISTRY_EVENT_KIND_VERSION_CREATED, 10)
    # Only one MODEL_CREATED per model, although ten creates raced to create it.
    assert len(registry.events.of(models[0], ev.REGISTRY_EVENT_KIND_MODEL_CREATED)) == 1


async def test_a_retried_registration_returns_the_same_version(registry: Registry, unique: str) -> None:
    model = f"retry-{unique}"
    request = version_request(registry, model, accuracy=0.8, key="training-request-42")
    replies = await asyncio.gather(*(registry.stub.CreateModelVersion(request) for _ in range(4)))
    assert {r.model_version.version for r in replies} == {1}
    assert {r.promotion.outcome for r in replies} == {pb.PROMOTION_OUTCOME_PROMOTED}
    again = await registry.stub.CreateModelVersion(request)
    assert again.model_version == replies[0].model_version

    other = version_request(registry, model, accuracy=0.9, key="training-request-43")
    assert (await registry.stub.CreateModelVersion(other)).model_version.version == 2

    reused = version_request(registry, model, accuracy=0.9, key="training-request-42", content=b"another model")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await registry.stub.CreateModelVersion(reused)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "training-request-42" in (caught.value.details() or "")

    # One model's events arrive in order, so a duplicate from a retry would have come before v2's.
    await registry.events.wait_for(model, ev.REGISTRY_EVENT_KIND_VERSION_CREATED, 2)
    assert [e.version for e in registry.events.of(model, ev.REGISTRY_EVENT_KIND_VERSION_CREATED)] == [1, 2]


# -- errors -------------------------------------------------------------------------------------------

async def expect(code: grpc.StatusCode, call: object, needle: str = "") -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()
    assert needle in (caught.value.details() or "")


async def test_grpc_errors_are_clear(registry: Registry, unique: str, tmp_path: Path) -> None:
    stub, model = registry.stub, f"err-{unique}"
    await expect(grpc.StatusCode.NOT_FOUND, stub.GetRegisteredModel(pb.GetRegisteredModelRequest(name=model)),
                 "does not exist")
    await expect(grpc.StatusCode.NOT_FOUND, stub.ListModelVersions(pb.ListModelVersionsRequest(model_name=model)))
    await expect(grpc.StatusCode.INVALID_ARGUMENT,
                 stub.GetModelVersion(pb.GetModelVersionRequest(model_name="bad name", version=1)), "model_name")

    bad_sha = version_request(registry, model)
    bad_sha.artifact.sha256 = "XYZ"
    await expect(grpc.StatusCode.INVALID_ARGUMENT, stub.CreateModelVersion(bad_sha), "artifact.sha256")
    wrong_sha = version_request(registry, model)
    wrong_sha.artifact.sha256 = "0" * 64
    await expect(grpc.StatusCode.FAILED_PRECONDITION, stub.CreateModelVersion(wrong_sha), "has sha256")
    missing = version_request(registry, model)
    missing.artifact.uri = (tmp_path / "nowhere").as_uri()
    await expect(grpc.StatusCode.FAILED_PRECONDITION, stub.CreateModelVersion(missing), "no artifact")
    unknown_metric = version_request(registry, model, accuracy=0.5)
    unknown_metric.evaluation.primary_metric = "roc_auc"
    await expect(grpc.StatusCode.INVALID_ARGUMENT, stub.CreateModelVersion(unknown_metric), "roc_auc")

    await stub.CreateModelVersion(version_request(registry, model, accuracy=0.5))
    await expect(grpc.StatusCode.NOT_FOUND,
                 stub.GetModelVersion(pb.GetModelVersionRequest(model_name=model, version=9)), "no version 9")
    await expect(grpc.StatusCode.NOT_FOUND, stub.GetModelVersionByAlias(
        pb.GetModelVersionByAliasRequest(model_name=model, alias="staging")), "no alias 'staging'")
    await expect(grpc.StatusCode.INVALID_ARGUMENT, stub.SetAlias(
        pb.SetAliasRequest(model_name=model, alias="latest", version=1)), "reserved")
    await expect(grpc.StatusCode.NOT_FOUND, stub.SetAlias(pb.SetAliasRequest(model_name=model, alias="x", version=5)))
    await expect(grpc.StatusCode.ALREADY_EXISTS,
                 stub.CreateRegisteredModel(pb.CreateRegisteredModelRequest(name=model)))
    await expect(grpc.StatusCode.FAILED_PRECONDITION, stub.ArchiveModelVersion(
        pb.ArchiveModelVersionRequest(model_name=model, version=1)), "production")
    await expect(grpc.StatusCode.INVALID_ARGUMENT, stub.ListRegisteredModels(
        pb.ListRegisteredModelsRequest(page_token="garbage")), "page_token")


async def test_alias_moves_archive_and_latest(registry: Registry, unique: str) -> None:
    stub, model = registry.stub, f"alias-{unique}"
    for accuracy in (0.9, 0.8):
        await stub.CreateModelVersion(version_request(registry, model, accuracy=accuracy))
    moved = await stub.SetAlias(pb.SetAliasRequest(model_name=model, alias="staging", version=2, comment="try it"),
                                metadata=(("x-gyre-actor", "alice"),))
    assert moved.applied and moved.previous_version == 0
    same = await stub.SetAlias(pb.SetAliasRequest(model_name=model, alias="staging", version=2))
    assert same.applied and same.previous_version == 2  # no-op: no second event
    removed = await stub.DeleteAlias(pb.DeleteAliasRequest(model_name=model, alias="staging", comment="done"))
    assert removed.previous_version == 2
    gone = (await registry.events.wait_for(model, ev.REGISTRY_EVENT_KIND_ALIAS_REMOVED))[0]
    assert (gone.alias, gone.version, gone.previous_version, gone.comment) == ("staging", 0, 2, "done")
    staged = [e for e in registry.events.of(model, ev.REGISTRY_EVENT_KIND_ALIAS_SET) if e.alias == "staging"]
    assert len(staged) == 1 and staged[0].actor == "alice" and staged[0].comment == "try it"

    archived = await stub.ArchiveModelVersion(pb.ArchiveModelVersionRequest(model_name=model, version=2))
    assert archived.model_version.status == pb.MODEL_VERSION_STATUS_ARCHIVED
    await registry.events.wait_for(model, ev.REGISTRY_EVENT_KIND_VERSION_ARCHIVED)
    latest = await stub.GetModelVersionByAlias(pb.GetModelVersionByAliasRequest(model_name=model, alias="latest"))
    assert latest.model_version.version == 1
    await expect(grpc.StatusCode.FAILED_PRECONDITION,
                 stub.SetAlias(pb.SetAliasRequest(model_name=model, alias="staging", version=2)), "archived")
    listed = await stub.ListModelVersions(pb.ListModelVersionsRequest(model_name=model))
    assert [v.version for v in listed.model_versions] == [1]
    listed = await stub.ListModelVersions(pb.ListModelVersionsRequest(model_name=model, include_archived=True))
    assert [v.version for v in listed.model_versions] == [2, 1]
    audit = await stub.ListAuditEntries(pb.ListAuditEntriesRequest(model_name=model, page_size=2))
    assert len(audit.entries) == 2 and audit.next_page_token
    assert audit.entries[0].action == "archive_model_version"


# -- REST mirror -------------------------------------------------------------------------------------

async def test_rest_mirror(registry: Registry, unique: str) -> None:
    from google.protobuf import json_format

    http, model = registry.http, f"rest-{unique}"
    created = await http.post("/api/v1/registered-models", json={"name": model, "description": "churn"})
    assert created.status_code == 201 and created.json()["registeredModel"]["name"] == model
    body = json_format.MessageToDict(version_request(registry, model, accuracy=0.7))
    reply = await http.post(f"/api/v1/registered-models/{model}/versions", json=body)
    assert reply.status_code == 201, reply.text
    assert reply.json()["modelVersion"]["version"] == "1"
    assert reply.json()["promotion"]["outcome"] == "PROMOTION_OUTCOME_PROMOTED"

    got = await http.get(f"/api/v1/registered-models/{model}/aliases/production")
    assert got.status_code == 200 and got.json()["modelVersion"]["lineage"]["runId"] == "run-1"
    assert (await http.get(f"/api/v1/registered-models/{model}/versions/1")).json()["modelVersion"]["aliases"] == [
        "production"]
    put = await http.put(f"/api/v1/registered-models/{model}/aliases/shadow", json={"version": 1, "comment": "c"})
    assert put.status_code == 200 and put.json()["applied"] is True
    deleted = await http.delete(f"/api/v1/registered-models/{model}/aliases/shadow", params={"comment": "bye"})
    assert deleted.status_code == 200 and deleted.json()["previousVersion"] == "1"
    listed = await http.get("/api/v1/registered-models", params={"page_size": 1000})
    assert model in [m["name"] for m in listed.json()["registeredModels"]]
    audit = await http.get("/api/v1/audit-entries", params={"model_name": model, "since": "2000-01-01T00:00:00Z"})
    assert [e["action"] for e in audit.json()["entries"]][:2] == ["delete_alias", "set_alias"]
    assert (await http.get("/api/v1/approvals")).json() == {}

    missing = await http.get(f"/api/v1/registered-models/{model}/versions/7")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    bad = await http.post(f"/api/v1/registered-models/{model}/versions", json={"artifact": {"uri": "x"}})
    assert bad.status_code == 400 and "artifact.sha256" in bad.json()["error"]["message"]
    typo = await http.post(f"/api/v1/registered-models/{model}/versions", json={"artefact": {}})
    assert typo.status_code == 400 and "artefact" in typo.json()["error"]["message"]
    assert (await http.get(f"/api/v1/registered-models/{model}/versions/x")).status_code == 400
    assert (await http.get("/api/v1/audit-entries", params={"since": "yesterday"})).status_code == 400
    assert (await http.post("/api/v1/registered-models", json={"name": model})).status_code == 409


# -- tokens --------------------------------------------------------------------------------------------

async def test_writes_need_a_token_when_tokens_are_configured(bootstrap_servers: str, unique: str,
                                                              database_url: str, tmp_path: Path) -> None:
    settings = registry_settings(auth_tokens="trainer:s3cret-token,alice:other")
    async with running_registry(kafka_settings(bootstrap_servers, unique), database_url, tmp_path,
                                settings) as registry:
        model = f"auth-{unique}"
        request = version_request(registry, model, accuracy=0.9)
        await expect(grpc.StatusCode.UNAUTHENTICATED, registry.stub.CreateModelVersion(request), "Bearer")
        await expect(grpc.StatusCode.UNAUTHENTICATED, registry.stub.CreateModelVersion(
            request, metadata=(("authorization", "Bearer nope"),)), "unknown token")
        reply = await registry.stub.CreateModelVersion(request, metadata=(("authorization", "Bearer s3cret-token"),))
        assert reply.model_version.created_by == "trainer"
        # Reads stay open.
        assert await production(registry, model) == 1
        rest = await registry.http.put(f"/api/v1/registered-models/{model}/aliases/shadow", json={"version": 1})
        assert rest.status_code == 401
        rest = await registry.http.put(f"/api/v1/registered-models/{model}/aliases/shadow", json={"version": 1},
                                       headers={"authorization": "Bearer other"})
        assert rest.status_code == 200
        audit = await registry.stub.ListAuditEntries(pb.ListAuditEntriesRequest(model_name=model))
        assert {(e.action, e.actor) for e in audit.entries} >= {
            ("create_model_version", "trainer"), ("set_alias", "alice"), ("set_alias", "policy")}
