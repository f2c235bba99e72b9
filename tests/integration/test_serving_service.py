"""Serving as a real server (the runner, free ports) on a real Tansu: registry events load and swap
models, OIP over gRPC and REST answers like the model, inference events carry the prediction ids."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import skops.io as sio
from aiokafka import AIOKafkaConsumer
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier
from support.waiting import wait_until

from gyre_common.artifacts import ArtifactRef, ArtifactSettings, LocalArtifactStore
from gyre_common.bus import Publisher, decode_record
from gyre_common.runner import ServiceRunner
from gyre_common.settings import KafkaSettings, TelemetrySettings
from gyre_common.topics import INFERENCE_EVENTS, REGISTRY_EVENTS, full_name
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_contracts.gyre.registry.v1 import registry_service_pb2 as rpb
from gyre_contracts.gyre.registry.v1 import registry_service_pb2_grpc as rpb_grpc
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as pb
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from gyre_serving.bootstrap import bootstrap
from gyre_serving.service import SPEC
from gyre_serving.settings import ServingSettings

pytestmark = pytest.mark.integration

MODEL = "cancer"
DATA = load_breast_cancer()
X: np.ndarray = DATA.data
FEATURES = [f"f{j}" for j in range(X.shape[1])]


@dataclass
class Trained:
    """A trained model and its artifact."""

    model: Any
    ref: ArtifactRef


@pytest.fixture(scope="module")
def artifact_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def v1(artifact_root: Path) -> Trained:
    model = LogisticRegression(max_iter=5000).fit(X, DATA.target)
    return Trained(model, LocalArtifactStore(artifact_root).put(sio.dumps(model)))


@pytest.fixture(scope="module")
def v2(artifact_root: Path) -> Trained:
    model = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, DATA.target)
    return Trained(model, LocalArtifactStore(artifact_root).put(sio.dumps(model)))


def signature() -> common_pb2.ModelSignature:
    """Per-feature columns in, the label (INT64) and the probabilities (FP32) out."""
    return common_pb2.ModelSignature(
        inputs=[common_pb2.TensorSpec(name=name, datatype="FP64", shape=[-1]) for name in FEATURES],
        outputs=[common_pb2.TensorSpec(name="predict", datatype="INT64", shape=[-1]),
                 common_pb2.TensorSpec(name="proba", datatype="FP32", shape=[-1, 2])],
    )


def registry_event(kind: int, version: int, ref: ArtifactRef, *, alias: str = "",
                   sha256: str | None = None) -> events_pb2.RegistryEvent:
    return events_pb2.RegistryEvent(
        kind=kind, model_name=MODEL, version=version, alias=alias,  # type: ignore[arg-type]
        artifact=common_pb2.ArtifactRef(uri=ref.uri, sha256=sha256 or ref.sha256, size_bytes=ref.size,
                                        format="skops"),
        signature=signature(), actor="test",
    )


@pytest.fixture
def kafka(bootstrap_servers: str, unique: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=f"t{unique}.", default_partitions=2,
                         linger_ms=1)


@dataclass
class Serving:
    runner: ServiceRunner
    stub: pb_grpc.GRPCInferenceServiceStub
    http: httpx.AsyncClient
    publisher: Publisher

    async def announce(self, event: events_pb2.RegistryEvent) -> None:
        await self.publisher.publish(REGISTRY_EVENTS, event, key=event.model_name)

    async def model_ready(self, version: str = "") -> bool:
        reply = await self.stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version=version), timeout=5)
        return reply.ready

    async def metric(self, name: str, labels: dict[str, str]) -> float:
        text = (await self.http.get("/metrics")).text
        wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in text.splitlines():
            if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        assert wanted  # a missing sample is 0
        return 0.0


async def start_serving(kafka: KafkaSettings, artifact_root: Path, **overrides: Any) -> ServiceRunner:
    settings = ServingSettings(http_port=0, grpc_port=0, readiness_interval_s=0.1, readiness_timeout_s=2,
                               shutdown_grace_s=5, **{"registry_address": "", **overrides})
    runner = ServiceRunner(SPEC, partial(bootstrap, artifacts=ArtifactSettings(root=str(artifact_root))),
                           settings=settings, kafka=kafka, telemetry_settings=TelemetrySettings())
    await runner.start()
    return runner


@pytest.fixture
async def serving(kafka: KafkaSettings, artifact_root: Path) -> AsyncIterator[Serving]:
    runner = await start_serving(kafka, artifact_root)
    try:
        assert runner.context is not None
        readiness = runner.context.readiness
        # Ready (no models configured, no registry): the follower has fixed its position, so what is
        # published from now on is seen.
        await wait_until(lambda: readiness.is_ready, what="serving ready")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runner.grpc_port}") as channel, \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.http_port}", timeout=10) as http, \
                Publisher(kafka, service="registry") as publisher:
            yield Serving(runner, pb_grpc.GRPCInferenceServiceStub(channel), http, publisher)
    finally:
        await runner.stop()


def infer_request_2d(rows: np.ndarray, request_id: str = "") -> pb.ModelInferRequest:
    """One [batch, 30] FP64 input in raw_input_contents (what array clients such as tritonclient send)."""
    request = pb.ModelInferRequest(model_name=MODEL, id=request_id)
    request.inputs.add(name="features", datatype="FP64", shape=list(rows.shape))
    request.raw_input_contents.append(np.ascontiguousarray(rows, dtype="<f8").tobytes())
    return request


async def read_inference_events(kafka: KafkaSettings, wanted: set[str], within_s: float = 20.0,
                                ) -> dict[str, events_pb2.InferenceEvent]:
    topic = full_name(INFERENCE_EVENTS, kafka.topic_prefix)
    reader = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest",
                              enable_auto_commit=False)
    await reader.start()
    found: dict[str, events_pb2.InferenceEvent] = {}
    try:
        deadline = time.monotonic() + within_s
        while not wanted <= set(found) and time.monotonic() < deadline:
            for records in (await reader.getmany(timeout_ms=200)).values():
                for record in records:
                    event = decode_record(record, kafka.topic_prefix).message
                    assert isinstance(event, events_pb2.InferenceEvent)
                    assert record.key == event.prediction_id.encode()
                    found[event.prediction_id] = event
    finally:
        await reader.stop()
    return found


async def test_registry_events_load_a_model_served_over_grpc_and_rest_with_inference_events(
        serving: Serving, kafka: KafkaSettings, v1: Trained) -> None:
    assert not await serving.model_ready()
    await serving.announce(registry_event(events_pb2.REGISTRY_EVENT_KIND_VERSION_CREATED, 1, v1.ref))
    # VERSION_CREATED alone does not serve it: the alias does.
    await serving.announce(registry_event(events_pb2.REGISTRY_EVENT_KIND_ALIAS_SET, 1, v1.ref, alias="production"))
    await wait_until(serving.model_ready, what="model ready")
    assert await serving.model_ready("1")
    assert not await serving.model_ready("2")

    meta = await serving.stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=5)
    assert list(meta.versions) == ["1"] and meta.platform == "sklearn"
    assert [t.name for t in meta.inputs] == FEATURES and [t.name for t in meta.outputs] == ["predict", "proba"]

    # gRPC: one [batch, 30] input, raw contents in -> raw contents out.
    rows = X[:7]
    reply = await serving.stub.ModelInfer(infer_request_2d(rows, request_id="req-grpc"), timeout=5)
    assert reply.id == "req-grpc" and reply.model_version == "1"
    assert [o.name for o in reply.outputs] == ["predict", "proba"]
    predicted = np.frombuffer(reply.raw_output_contents[0], dtype="<i8")
    proba = np.frombuffer(reply.raw_output_contents[1], dtype="<f4").reshape(7, 2)
    np.testing.assert_array_equal(predicted, v1.model.predict(rows))
    np.testing.assert_allclose(proba, v1.model.predict_proba(rows), rtol=1e-5, atol=1e-6)
    grpc_ids = reply.parameters["prediction_ids"].string_param.split(",")
    assert grpc_ids == [f"req-grpc:{i}" for i in range(7)]

    # REST: one named input per feature, one row; no id -> a generated one.
    row = X[100]
    body = {"inputs": [{"name": name, "shape": [1], "datatype": "FP64", "data": [float(row[j])]}
                       for j, name in enumerate(FEATURES)],
            "parameters": {"request_key": "patient-100"}}
    response = await serving.http.post(f"/v2/models/{MODEL}/infer", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    outputs = {o["name"]: o for o in payload["outputs"]}
    assert outputs["predict"]["data"] == [int(v1.model.predict(row[None, :])[0])]
    assert outputs["proba"]["shape"] == [1, 2]
    rest_id = payload["id"]
    assert len(rest_id) == 36 and payload["parameters"]["prediction_ids"] == rest_id

    # Explicit version and the alias name both work; an unknown version does not.
    assert (await serving.http.post(f"/v2/models/{MODEL}/versions/1/infer", json=body)).status_code == 200
    assert (await serving.http.post(f"/v2/models/{MODEL}/versions/production/infer", json=body)).status_code == 200
    missing = await serving.http.post(f"/v2/models/{MODEL}/versions/9/infer", json=body)
    assert missing.status_code == 404 and "version 9" in missing.json()["error"]

    events = await read_inference_events(kafka, {*grpc_ids, rest_id})
    assert {*grpc_ids, rest_id} <= set(events)
    first = events["req-grpc:0"]
    assert first.model_name == MODEL and first.model_version == 1 and first.alias == "production"
    assert first.request_id == "req-grpc" and first.row_index == 0 and first.latency_ms > 0
    assert first.inputs["f0"].double_value == pytest.approx(X[0, 0])
    assert set(first.outputs) == {"predict", "proba_0", "proba_1"}
    assert first.outputs["predict"].int64_value == int(v1.model.predict(X[:1])[0])
    rest_event = events[rest_id]
    assert rest_event.request_key == "patient-100" and len(rest_event.inputs) == 30


async def test_errors_name_what_was_expected(serving: Serving, v1: Trained) -> None:
    await serving.announce(registry_event(events_pb2.REGISTRY_EVENT_KIND_ALIAS_SET, 1, v1.ref, alias="production"))
    await wait_until(serving.model_ready, what="model ready")

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await serving.stub.ModelInfer(pb.ModelInferRequest(model_name="nope"), timeout=5)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    wrong_width = infer_request_2d(X[:2, :5])
    with pytest.raises(grpc.aio.AioRpcError) as shape:
        await serving.stub.ModelInfer(wrong_width, timeout=5)
    assert shape.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "[batch, 30]" in (shape.value.details() or "")

    bad_type = pb.ModelInferRequest(model_name=MODEL)
    bad_type.inputs.add(name="features", datatype="BYTES", shape=[1, 30])
    bad_type.inputs[0].contents.bytes_contents.extend([b"x"] * 30)
    with pytest.raises(grpc.aio.AioRpcError) as datatype:
        await serving.stub.ModelInfer(bad_type, timeout=5)
    assert datatype.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expected FP64" in (datatype.value.details() or "")

    response = await serving.http.post(f"/v2/models/{MODEL}/infer", json={"inputs": [
        {"name": "f0", "shape": [1], "datatype": "FP64", "data": [1.0]}]})
    assert response.status_code == 400 and "missing input(s) 'f1'" in response.json()["error"]
    assert (await serving.http.post("/v2/models/nope/infer", json={"inputs": []})).status_code == 404
    assert (await serving.http.get("/v2/models/nope")).status_code == 404
    assert (await serving.http.get(f"/v2/models/{MODEL}/ready")).status_code == 200
    assert (await serving.http.get("/v2/health/ready")).status_code == 200
    assert (await serving.http.get("/v2")).json()["name"] == "gyre-serving"


async def test_swap_under_traffic_fails_no_call_and_bad_artifact_keeps_the_old_version(
        serving: Serving, v1: Trained, v2: Trained, artifact_root: Path) -> None:
    await serving.announce(registry_event(events_pb2.REGISTRY_EVENT_KIND_ALIAS_SET, 1, v1.ref, alias="production"))
    await wait_until(serving.model_ready, what="v1 ready")

    rows = X[:4]
    versions: list[list[str]] = [[] for _ in range(4)]
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def client(worker: int) -> None:
        for _ in range(150):  # bounded: at most 600 calls in all
            if stop.is_set():
                return
            try:
                reply = await serving.stub.ModelInfer(infer_request_2d(rows), timeout=5)
                versions[worker].append(reply.model_version)
                expected = (v1 if reply.model_version == "1" else v2).model.predict(rows)
                np.testing.assert_array_equal(np.frombuffer(reply.raw_output_contents[0], dtype="<i8"), expected)
            except BaseException as exc:  # every failure counts, assertion or RPC error
                failures.append(exc)
            await asyncio.sleep(0.005)

    traffic = [asyncio.create_task(client(w)) for w in range(4)]
    await wait_until(lambda: all(len(v) >= 10 for v in versions), what="traffic on v1")
    await serving.announce(registry_event(events_pb2.REGISTRY_EVENT_KIND_VERSION_CREATED, 2, v2.ref))
    await serving.announce(registry_event(events_pb2.REGISTRY_EVENT_KIND_ALIAS_SET, 2, v2.ref, alias="production"))
    await wait_until(lambda: all(v and v[-1] == "2" for v in versions), what="traffic on v2")
    stop.set()
    await asyncio.gather(*traffic)

    assert failures == []
    for seen in versions:
        switch = seen.index("2")
        assert switch > 0 and set(seen[:switch]) == {"1"} and set(seen[switch:]) == {"2"}, seen

    # v3's announced sha256 does not match its bytes: refused, v2 keeps serving.
    v3_ref = LocalArtifactStore(artifact_root).put(sio.dumps(LogisticRegression(C=0.01, max_iter=5000).fit(
        X, DATA.target)))
    refused_before = await serving.metric("gyre_serving_model_loads_total", {"model": MODEL, "outcome": "integrity"})
    await serving.announce(registry_event(events_pb2.REGISTRY_EVENT_KIND_ALIAS_SET, 3, v3_ref, alias="production",
                                          sha256="0" * 64))

    async def refused() -> bool:
        now = await serving.metric("gyre_serving_model_loads_total", {"model": MODEL, "outcome": "integrity"})
        return now > refused_before

    await wait_until(refused, what="v3 refused")
    reply = await serving.stub.ModelInfer(infer_request_2d(rows), timeout=5)
    assert reply.model_version == "2"
    assert await serving.model_ready("2") and not await serving.model_ready("3")


# -- start-up from the registry's state --------------------------------------------------------------


class FakeRegistry(rpb_grpc.RegistryServiceServicer):
    """The registry's read RPCs serving uses, over one model whose alias points at ``version``."""

    def __init__(self, version: rpb.ModelVersion) -> None:
        self.version = version
        self.tokens: list[str] = []

    async def GetModelVersionByAlias(self, request: rpb.GetModelVersionByAliasRequest,
                                     context: grpc.aio.ServicerContext) -> rpb.GetModelVersionByAliasResponse:
        self.tokens.append(dict(context.invocation_metadata() or ()).get("authorization", ""))
        if request.model_name != self.version.model_name or request.alias != "production":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such alias")
        return rpb.GetModelVersionByAliasResponse(model_version=self.version)


async def test_start_up_reads_the_aliases_from_the_registry(kafka: KafkaSettings, artifact_root: Path,
                                                            v1: Trained) -> None:
    version = rpb.ModelVersion(
        model_name=MODEL, version=1, status=rpb.MODEL_VERSION_STATUS_READY, signature=signature(),
        artifact=common_pb2.ArtifactRef(uri=v1.ref.uri, sha256=v1.ref.sha256, size_bytes=v1.ref.size, format="skops"),
    )
    registry = FakeRegistry(version)  # type: ignore[abstract]  # only the RPCs serving calls
    server = grpc.aio.server()
    rpb_grpc.add_RegistryServiceServicer_to_server(registry, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    # The configured model gates readiness: ready means it is loaded.
    runner = await start_serving(kafka, artifact_root, registry_address=f"127.0.0.1:{port}", models=(MODEL,),
                                 service_token="viewer-token")
    try:
        assert runner.context is not None
        readiness = runner.context.readiness
        await wait_until(lambda: readiness.is_ready, what="ready from the registry's state")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runner.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert (await stub.ServerReady(pb.ServerReadyRequest(), timeout=5)).ready
            reply = await stub.ModelInfer(infer_request_2d(X[:3]), timeout=5)
        assert reply.model_version == "1"
        assert registry.tokens and registry.tokens[0] == "Bearer viewer-token"
    finally:
        await runner.stop()
        await server.stop(None)
