"""Dead letters on a real Tansu broker, through a real service's HTTP routes and the `gyre dlq` CLI.

A small consuming service (built like every Gyre service: a runner, a bus Consumer added with
``ctx.add_task``, :func:`mount_dead_letter_routes` last in its bootstrap) refuses training requests
for an unregistered model until the test "fixes" it. A poison request is dead-lettered, listed,
shown with its reason, replayed after the fix, handled exactly once, and a second replay sends
nothing.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict
from support.kafka import fast_kafka
from support.services import fast_settings, running
from support.waiting import wait_until

from gyre_cli.main import run as gyre
from gyre_common import topics
from gyre_common.artifacts import LocalArtifactStore
from gyre_common.bus import Consumer, DeadLetter, Envelope, Publisher, SeenEvents, ensure_topics
from gyre_common.bus.headers import dead_letter_headers
from gyre_common.deadletters import (
    REPLAYED_FROM,
    DeadLetterTools,
    dead_letter_router,
    mount_dead_letter_routes,
    replay_group,
)
from gyre_common.http import create_app
from gyre_common.runner import ServiceContext, ServiceRunner
from gyre_common.service import ServiceSpec
from gyre_common.settings import KafkaSettings, ServiceSettings
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_trainer.bootstrap import Dependencies, bootstrap
from gyre_trainer.service import SPEC as TRAINER
from gyre_trainer.settings import TrainerSettings
from gyre_trainer.testing import FakeModelRegistry, FakeRunLogger, FakeTrainingDataSource

pytestmark = pytest.mark.integration

DEADLINE_S = 120.0
GROUP = "dlqtest"
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def deadline(test: F) -> F:
    """Run an async test under ``asyncio.timeout(DEADLINE_S)``: a stuck broker call fails, never hangs."""

    @functools.wraps(test)
    async def bounded(*args: Any, **kwargs: Any) -> Any:
        async with asyncio.timeout(DEADLINE_S):
            return await test(*args, **kwargs)

    return bounded  # type: ignore[return-value]


class DlqTestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GYRE_DLQTEST_")


SPEC = ServiceSpec(name="dlqtest", settings=DlqTestSettings, module="tests.integration.test_dlq_tools",
                   consumes=(topics.TRAINING_REQUESTS,))


@dataclass
class Trainer:
    """The service's handler: refuses unknown models (dead letter, no retry) until they are registered;
    idempotent on ce_id like every Gyre consumer."""

    known_models: set[str] = field(default_factory=lambda: {"churn"})
    seen: SeenEvents = field(default_factory=lambda: SeenEvents(10_000))
    calls: Counter[str] = field(default_factory=Counter)
    effects: Counter[str] = field(default_factory=Counter)

    async def handle(self, env: Envelope) -> None:
        request = env.message
        assert isinstance(request, ev.TrainingRequest)
        self.calls[request.request_id] += 1
        if request.model_name not in self.known_models:
            raise DeadLetter("unknown_model", f"model {request.model_name!r} is not registered")
        if self.seen.check_and_add(env.ce_id):
            self.effects[request.request_id] += 1


@pytest.fixture
def kafka(bootstrap_servers: str, unique: str) -> KafkaSettings:
    return fast_kafka(bootstrap_servers, f"t{unique}.", retry_backoff_ms=10)


@dataclass
class Running:
    runner: ServiceRunner
    trainer: Trainer
    consumer: Consumer
    http: httpx.AsyncClient
    kafka: KafkaSettings

    @property
    def dlq(self) -> str:
        return self.consumer.dead_letter_topic


@pytest.fixture
async def service(kafka: KafkaSettings) -> AsyncIterator[Running]:
    trainer = Trainer()
    made: list[Consumer] = []

    def build(ctx: ServiceContext) -> None:
        consumer = Consumer(ctx.kafka, group=GROUP, topics=[topics.TRAINING_REQUESTS], service="dlqtest",
                            handler=trainer.handle, session_timeout_ms=2000, heartbeat_interval_ms=300)
        made.append(consumer)
        ctx.add_task(consumer, name="consumer")
        assert mount_dead_letter_routes(ctx) == [GROUP]

    async with running(SPEC, build, fast_settings(DlqTestSettings), kafka=kafka) as runner, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.http_port}", timeout=30) as http:
        await made[0].wait_assigned()
        yield Running(runner, trainer, made[0], http, kafka)


def training_request(request_id: str, model: str) -> ev.TrainingRequest:
    return ev.TrainingRequest(request_id=request_id, model_name=model, feature_view="customers", label="churned")


async def end_offsets_total(kafka: KafkaSettings, topic: str) -> int:
    reader = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    await reader.start()
    try:
        await reader.topics()
        tps = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        return sum((await reader.end_offsets(tps)).values())
    finally:
        await reader.stop()


async def dead_letter_count(http: httpx.AsyncClient) -> int:
    body = (await http.get("/api/v1/dead-letters")).json()
    return sum(t["count"] for t in body["dead_letters"])


@deadline
async def test_dead_letter_list_show_fix_replay_once(service: Running) -> None:
    http, trainer, kafka = service.http, service.trainer, service.kafka
    original_topic = f"{kafka.topic_prefix}{topics.TRAINING_REQUESTS}"

    listed = (await http.get("/api/v1/dead-letters")).json()
    assert [t["topic"] for t in listed["dead_letters"]] == [service.dlq]
    assert listed["dead_letters"][0]["count"] == 0
    assert listed["dead_letters"][0]["group"] == GROUP

    async with Publisher(kafka, service="test") as pub:
        good = await pub.publish(topics.TRAINING_REQUESTS, training_request("good", "churn"), key="churn")
        poison = await pub.publish(topics.TRAINING_REQUESTS, training_request("poison", "fraud"), key="fraud")
    await wait_until(lambda: dead_letter_count(http), what="the poison request in the dead-letter topic")
    await wait_until(lambda: trainer.effects["good"] == 1, what="the good request handled")
    assert trainer.effects["poison"] == 0

    # list: the topic with its count, then the record with its reason headers
    topic_info = (await http.get("/api/v1/dead-letters")).json()["dead_letters"][0]
    assert topic_info["count"] == 1 and topic_info["pending"] == 1
    assert topic_info["replay_group"] == replay_group(service.dlq)
    page = (await http.get(f"/api/v1/dead-letters/{service.dlq}")).json()
    assert page["next"] is None
    [summary] = page["records"]
    assert summary["reason"] == "unknown_model"
    assert summary["error"] == "model 'fraud' is not registered"
    assert summary["original_topic"] == original_topic
    assert summary["original_partition"] == poison.partition
    assert summary["original_offset"] == poison.offset
    assert summary["key"] == "fraud"
    assert summary["ce_id"] == poison.ce_id
    assert summary["group"] == f"{kafka.topic_prefix}{GROUP}"

    # show: every header and the payload decoded with the original topic's event type
    shown = (await http.get(f"/api/v1/dead-letters/{service.dlq}/{summary['partition']}/{summary['offset']}")).json()
    names = [h["name"] for h in shown["headers"]]
    assert {"ce_id", "ce_type", "traceparent", "gyre_dlq_reason", "gyre_dlq_error", "gyre_dlq_topic"} <= set(names)
    assert shown["payload"]["encoding"] == "protobuf"
    assert shown["payload"]["event_type"] == "gyre.events.v1.TrainingRequest"
    assert shown["payload"]["value"]["model_name"] == "fraud"
    assert shown["payload"]["value"]["request_id"] == "poison"

    # fix the cause, replay: handled exactly once, with the original ce_id
    trainer.known_models.add("fraud")
    before = await end_offsets_total(kafka, original_topic)
    replayed = await http.post(f"/api/v1/dead-letters/{service.dlq}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["replayed"] == 1
    await wait_until(lambda: trainer.effects["poison"] == 1, what="the replayed request handled")
    assert await end_offsets_total(kafka, original_topic) == before + 1
    assert trainer.effects == Counter(good=1, poison=1)

    # replay all again: progress was committed, nothing is sent
    again = (await http.post(f"/api/v1/dead-letters/{service.dlq}/replay", json={})).json()
    assert again["replayed"] == 0
    assert await end_offsets_total(kafka, original_topic) == before + 1
    after = (await http.get("/api/v1/dead-letters")).json()["dead_letters"][0]
    assert after["count"] == 1 and after["pending"] == 0  # the dead letter itself stays

    # asked explicitly from an offset, it is sent again; the consumer dedupes it on ce_id
    forced = (await http.post(f"/api/v1/dead-letters/{service.dlq}/replay",
                              json={"partition": summary["partition"], "from_offset": 0})).json()
    assert forced["replayed"] == 1
    await wait_until(lambda: trainer.calls["poison"] == 3, what="the forced replay delivered")
    assert trainer.effects == Counter(good=1, poison=1)
    assert await end_offsets_total(kafka, original_topic) == before + 2
    assert good.ce_id != poison.ce_id


@deadline
async def test_replayed_record_keeps_key_value_and_cloudevents_headers(kafka: KafkaSettings, unique: str) -> None:
    """Produce straight to a dead-letter topic with the consumer's headers; replay one record by offset."""
    tools = DeadLetterTools(kafka)
    group = f"direct{unique}"
    dlq = tools.topic_of(group)
    await ensure_topics(kafka, [topics.FEATURES_EVENTS], dead_letter_groups=[group])
    original = [("ce_id", b"id-1"), ("ce_type", b"gyre.events.v1.FeatureEvent"), ("ce_source", b"kcat"),
                ("content-type", b"application/json"), ("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01")]
    value = json.dumps({"entity_id": "e1", "feature_view": "v"}).encode()
    headers = dead_letter_headers(original, reason="unknown_feature", error="no view v",
                                  topic=f"{kafka.topic_prefix}{topics.FEATURES_EVENTS}", partition=1, offset=7,
                                  group=f"{kafka.topic_prefix}{group}", attempts=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        sent = [await producer.send_and_wait(dlq, value, key=b"e1", partition=0, headers=headers) for _ in range(3)]
    finally:
        await producer.stop()

    [info] = await tools.list_topics([group])
    assert info.count == 3 and info.pending == 3
    record = await tools.record(dlq, 0, sent[1].offset)
    assert record.reason == "unknown_feature"

    result = await tools.replay(dlq, partition=0, from_offset=sent[1].offset, to_offset=sent[1].offset)
    assert result.replayed == 1
    # a single record away from the progress does not count as "replayed up to here"
    assert result.progress == {0: None}
    target = f"{kafka.topic_prefix}{topics.FEATURES_EVENTS}"
    reader = AIOKafkaConsumer(target, bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest",
                              enable_auto_commit=False)
    await reader.start()
    try:
        records = await wait_until(lambda: _records(reader), what="the replayed record")
    finally:
        await reader.stop()
    [replayed] = records
    assert replayed.key == b"e1" and replayed.value == value
    assert list(replayed.headers) == [*original, (REPLAYED_FROM, f"{dlq}/0/{sent[1].offset}".encode())]

    # "all" then sends the three (the second one again: consumers dedupe on ce_id), and only once
    assert (await tools.replay(dlq)).replayed == 3
    assert (await tools.replay(dlq)).replayed == 0
    [info] = await tools.list_topics([group])
    assert info.pending == 0 and info.partitions[0].replayed_offset == sent[-1].offset + 1


async def _records(reader: AIOKafkaConsumer) -> list[Any]:
    return [r for batch in (await reader.getmany(timeout_ms=200)).values() for r in batch]


@deadline
async def test_http_validation(service: Running, unique: str) -> None:
    http, dlq = service.http, service.dlq
    other = f"{service.kafka.topic_prefix}someone-else.dlq"
    for method, path in [("GET", f"/api/v1/dead-letters/{other}"), ("GET", f"/api/v1/dead-letters/{other}/0/0"),
                         ("POST", f"/api/v1/dead-letters/{other}/replay"),
                         ("GET", "/api/v1/dead-letters/not-a-dlq-topic")]:
        answer = await http.request(method, path)
        assert answer.status_code == 404, (path, answer.text)
        assert "is not a dead-letter topic of this service" in answer.json()["detail"]

    async def status(method: str, path: str, **kw: Any) -> tuple[int, Any]:
        answer = await http.request(method, path, **kw)
        return answer.status_code, answer.json()

    base = f"/api/v1/dead-letters/{dlq}"
    code, body = await status("GET", base, params={"offset": 3})
    assert code == 400 and "offset needs a partition" in body["detail"]
    assert (await status("GET", base, params={"limit": 501}))[0] == 422
    assert (await status("GET", base, params={"limit": 0}))[0] == 422
    assert (await status("GET", base, params={"partition": -1}))[0] == 422
    assert (await status("GET", base, params={"partition": "x"}))[0] == 422
    code, body = await status("GET", base, params={"partition": 99})
    assert code == 404 and "has no partition 99" in body["detail"]
    code, body = await status("GET", f"{base}/0/5")
    assert code == 404 and "no record at offset 5" in body["detail"]
    assert (await status("GET", f"{base}/0/-1"))[0] == 422
    assert (await status("GET", f"{base}/0/{2**64}"))[0] == 422
    assert (await status("GET", base, params={"partition": 2**31}))[0] == 422
    assert (await status("POST", f"{base}/replay", json={"to_offset": 2**63}))[0] == 422
    code, body = await status("POST", f"{base}/replay", json={"from_offset": 5, "to_offset": 2})
    assert code == 400 and "after to_offset" in body["detail"]
    assert (await status("POST", f"{base}/replay", json={"partition": -1}))[0] == 422
    assert (await status("POST", f"{base}/replay", json={"offset": 1}))[0] == 422  # unknown field
    code, body = await status("POST", f"{base}/replay", json={"partition": 99})
    assert code == 404
    # an empty topic replays nothing
    code, body = await status("POST", f"{base}/replay")
    assert code == 200 and body["replayed"] == 0


@deadline
async def test_trainer_serves_its_dead_letters_and_the_cli_replays(
        bootstrap_servers: str, database_url: str, unique: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A real service (the trainer, wired by its own ``bootstrap``) answers for its group's dead letters;
    replay needs its token; ``gyre dlq`` finds, shows and replays the same record on the broker."""
    kafka = fast_kafka(bootstrap_servers, f"t{unique}.", default_partitions=1)
    settings = TrainerSettings(http_port=0, grpc_port=0, readiness_interval_s=0.1, shutdown_grace_s=3,
                               consumer_group=f"trainer-{unique}", auth_tokens=SecretStr("ops:s3cret"))
    deps = Dependencies(source=FakeTrainingDataSource({}), runs=FakeRunLogger(), registry=FakeModelRegistry(),
                        artifacts=LocalArtifactStore(tmp_path / "artifacts"))
    consumers: list[Consumer] = []

    async def build(ctx: ServiceContext) -> None:
        await bootstrap(ctx, deps)
        consumers.extend(task for _, task in ctx.tasks if isinstance(task, Consumer))

    async with running(TRAINER, build, settings, kafka=kafka, database_url=database_url) as runner, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.http_port}", timeout=30) as http:
        [consumer] = consumers
        await consumer.wait_assigned()
        dlq = consumer.dead_letter_topic
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
        await producer.start()
        try:  # not protobuf, not JSON: a poison record
            await producer.send_and_wait(f"{kafka.topic_prefix}{topics.TRAINING_REQUESTS}", b"\xff\x00garbage",
                                         key=b"m", headers=[("content-type", b"application/protobuf")])
        finally:
            await producer.stop()
        await wait_until(lambda: dead_letter_count(http), what="the poison record dead-lettered by the trainer")

        listed = (await http.get("/api/v1/dead-letters")).json()["dead_letters"]
        assert [(t["topic"], t["count"]) for t in listed] == [(dlq, 1)]
        shown = (await http.get(f"/api/v1/dead-letters/{dlq}/0/0")).json()
        assert shown["reason"] == "decode_error"
        assert shown["payload"]["encoding"] == "base64"
        assert shown["payload"]["event_type"] == "gyre.events.v1.TrainingRequest"
        assert "invalid protobuf" in shown["payload"]["decode_error"]
        refused = await http.post(f"/api/v1/dead-letters/{dlq}/replay")
        assert refused.status_code == 401

        env = ["--bootstrap-servers", bootstrap_servers, "--topic-prefix", kafka.topic_prefix]
        capsys.readouterr()
        assert await asyncio.to_thread(gyre, ["dlq", *env, "--output", "json", "list"]) == 0
        topics_out = json.loads(capsys.readouterr().out)["dead_letters"]
        assert (dlq, 1) in [(t["topic"], t["count"]) for t in topics_out]
        assert await asyncio.to_thread(gyre, ["dlq", *env, "show", dlq, "0", "0"]) == 0
        text = capsys.readouterr().out
        assert "gyre_dlq_reason: decode_error" in text and "payload (base64" in text
        assert await asyncio.to_thread(gyre, ["dlq", *env, "show", dlq, "0", "9"]) == 2
        assert "no record at offset 9" in capsys.readouterr().err
        assert await asyncio.to_thread(gyre, ["dlq", *env, "list", f"{kafka.topic_prefix}x.events"]) == 2

        # still poison: replayed once, dead-lettered again, and a second replay resends nothing new
        assert await asyncio.to_thread(gyre, ["dlq", *env, "--output", "json", "replay", dlq]) == 0
        assert json.loads(capsys.readouterr().out)["replayed"] == 1
        await wait_until(lambda: _count_is(http, 2), what="the replayed poison record dead-lettered again")
        replayed_again = await http.post(f"/api/v1/dead-letters/{dlq}/replay", json={"to_offset": 0},
                                         headers={"authorization": "Bearer s3cret"})
        assert replayed_again.status_code == 200 and replayed_again.json()["replayed"] == 0
        page = (await http.get(f"/api/v1/dead-letters/{dlq}", params={"partition": 0, "offset": 1})).json()
        assert [r["replayed_from"] for r in page["records"]] == [f"{dlq}/0/0"]


async def _count_is(http: httpx.AsyncClient, count: int) -> bool:
    return await dead_letter_count(http) == count


@deadline
async def test_broker_away_is_503_and_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listens on port 1: the routes answer 503 (never 500), the CLI exits 3."""
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", request_timeout_ms=2000)
    app = create_app("dlq-test")
    app.include_router(dead_letter_router(DeadLetterTools(kafka), ["g"]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        for method, path in [("GET", "/api/v1/dead-letters"), ("GET", "/api/v1/dead-letters/gyre.g.dlq"),
                             ("GET", "/api/v1/dead-letters/gyre.g.dlq/0/0"),
                             ("POST", "/api/v1/dead-letters/gyre.g.dlq/replay")]:
            answer = await http.request(method, path)
            assert answer.status_code == 503, (path, answer.text)
            assert "127.0.0.1:1" in answer.json()["detail"]
    code = await asyncio.to_thread(gyre, ["dlq", "--bootstrap-servers", "127.0.0.1:1", "list"])
    assert code == 3
    assert "did not answer" in capsys.readouterr().err
