"""Serving as a real server (runner, free ports, real Tansu) against hostile input.

* Fuzzed Open Inference Protocol requests over gRPC and REST (Hypothesis, a bounded number): the
  answer is a result or a client error, never UNKNOWN / INTERNAL / 5xx.
* registry.events records that cannot be decoded or point at nothing usable are logged, counted
  and skipped: the process keeps running, keeps serving the version it had, and applies the next
  good event.
"""

from __future__ import annotations

import asyncio
import json
import math
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
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from support.waiting import wait_until

from gyre_common.artifacts import ArtifactRef, ArtifactSettings, LocalArtifactStore
from gyre_common.bus import Publisher
from gyre_common.runner import ServiceRunner
from gyre_common.settings import KafkaSettings, TelemetrySettings
from gyre_common.topics import REGISTRY_EVENTS, full_name
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as pb
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from gyre_serving.bootstrap import bootstrap
from gyre_serving.domain.tensors import DATATYPES
from gyre_serving.grpc_codec import CONTENTS_FIELD
from gyre_serving.service import SPEC
from gyre_serving.settings import ServingSettings

pytestmark = pytest.mark.integration

MODEL = "m"
MAX_ELEMENTS = 4096
ALIAS_SET = events_pb2.REGISTRY_EVENT_KIND_ALIAS_SET
CLIENT_GRPC_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                     grpc.StatusCode.RESOURCE_EXHAUSTED}


@dataclass
class Served:
    runner: ServiceRunner
    kafka: KafkaSettings
    store: LocalArtifactStore
    v1: ArtifactRef
    v2: ArtifactRef
    http: httpx.AsyncClient

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.runner.grpc_port}"

    async def metric(self, name: str, labels: dict[str, str]) -> float:
        for line in (await self.http.get("/metrics")).text.splitlines():
            if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    async def served_version(self) -> str:
        reply = await self.http.get(f"/v2/models/{MODEL}")
        return str(reply.json()["versions"][0]) if reply.status_code == 200 else ""


def alias_event(ref: ArtifactRef | None, version: int, *, model: str = MODEL, sha256: str | None = None,
                uri: str | None = None) -> events_pb2.RegistryEvent:
    event = events_pb2.RegistryEvent(kind=ALIAS_SET, model_name=model, version=version, alias="production")
    if ref is not None or uri is not None:
        event.artifact.CopyFrom(common_pb2.ArtifactRef(
            uri=uri if uri is not None else ref.uri if ref else "",
            sha256=sha256 if sha256 is not None else ref.sha256 if ref else "", format="skops"))
    return event


@pytest.fixture
async def served(bootstrap_servers: str, unique: str, tmp_path: Path) -> AsyncIterator[Served]:
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=f"r{unique}.", linger_ms=1)
    x = np.random.default_rng(0).normal(size=(200, 3))
    store = LocalArtifactStore(tmp_path / "artifacts")
    v1 = store.put(sio.dumps(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))))
    v2 = store.put(sio.dumps(LogisticRegression(C=0.5).fit(x, (x[:, 1] > 0).astype(int))))
    serving_settings = ServingSettings(
        http_port=0, grpc_port=0, readiness_interval_s=0.1, shutdown_grace_s=3, registry_address="",
        spool_dir=str(tmp_path / "spool"), load_attempts=1, max_tensor_elements=MAX_ELEMENTS, max_batch_rows=64)
    runner = ServiceRunner(SPEC, partial(bootstrap, artifacts=ArtifactSettings(root=str(tmp_path / "artifacts"))),
                           settings=serving_settings, kafka=kafka, telemetry_settings=TelemetrySettings())
    await runner.start()
    try:
        assert runner.context is not None
        readiness = runner.context.readiness
        await wait_until(lambda: readiness.is_ready, what="serving ready")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.http_port}", timeout=10) as http, \
                Publisher(kafka, service="registry") as publisher:
            await publisher.publish(REGISTRY_EVENTS, alias_event(v1, 1), key=MODEL)
            result = Served(runner, kafka, store, v1, v2, http)
            await wait_until(lambda: _is(result.served_version(), "1"), what="v1 served")
            yield result
    finally:
        await runner.stop()


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)


# -- fuzzed requests -----------------------------------------------------------------------------

names = st.sampled_from(["input-0", "f0", "f1", "f2", "x", ""])
datatypes = st.one_of(st.sampled_from(DATATYPES), st.just("FP64"), st.text(max_size=5))
dimension = st.one_of(st.integers(min_value=0, max_value=4), st.just(3), st.integers(min_value=-2, max_value=-1),
                      st.sampled_from([2**31, 2**62, 2**63 - 1]))
shapes = st.lists(dimension, min_size=0, max_size=4)
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-(2**31), 2**31 - 1))


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, str, list[int], list[Any]]:
    """(name, datatype, shape, flat values); the values mostly fit the shape, and a third of the
    tensors are the model's own input ([rows, 3] of FP32/FP64), so many calls reach the model."""
    if draw(st.integers(0, 2)) == 0:
        rows = draw(st.integers(0, 5))
        values = draw(st.lists(numbers, min_size=rows * 3, max_size=rows * 3))
        return "input-0", draw(st.sampled_from(["FP64", "FP32"])), [rows, 3], values
    shape = draw(shapes)
    count = math.prod(max(d, 0) for d in shape) if shape else 0
    count = count if count <= 64 and draw(st.integers(0, 4)) else draw(st.integers(0, 8))
    return draw(names), draw(datatypes), shape, draw(st.lists(numbers, min_size=count, max_size=count))


def _grpc_request(inputs: list[tuple[str, str, list[int], list[Any]]], raw: bool) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL)
    for name, datatype, shape, data in inputs:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw:
            request.raw_input_contents.append(np.asarray(data, dtype="<f8").tobytes())
        elif datatype in ("FP32", "FP64"):
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(float(v) for v in data)
        else:
            tensor.contents.int64_contents.extend(int(v) if math.isfinite(v) and abs(v) < 2**62 else 0 for v in data)
    return request


async def test_fuzzed_requests_never_answer_unknown_internal_or_5xx(served: Served) -> None:
    seen: dict[str, int] = {}

    def fuzz() -> None:
        """Sync clients in a worker thread: Hypothesis drives plain functions, the server runs on the loop."""
        with grpc.insecure_channel(served.grpc_target) as channel, \
                httpx.Client(base_url=str(served.http.base_url), timeout=10) as http:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)

            @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                      database=None)
            @given(inputs=st.lists(tensors(), min_size=0, max_size=3), raw=st.booleans(), rest=st.booleans())
            # One well-formed call each way always runs, so the coverage check below never depends on
            # what the random draws happened to reach (it failed once when no REST call succeeded).
            @example(inputs=[("input-0", "FP64", [1, 3], [0.1, 0.2, 0.3])], raw=False, rest=True)
            @example(inputs=[("input-0", "FP64", [1, 3], [0.1, 0.2, 0.3])], raw=False, rest=False)
            def one_call(inputs: list[tuple[str, str, list[int], list[Any]]], raw: bool, rest: bool) -> None:
                if rest:
                    body = {"inputs": [{"name": n, "datatype": d, "shape": s, "data": v} for n, d, s, v in inputs]}
                    response = http.post(f"/v2/models/{MODEL}/infer",
                                         content=json.dumps(body, allow_nan=True).encode(),
                                         headers={"content-type": "application/json"})
                    assert response.status_code < 500, response.text
                    seen[str(response.status_code)] = seen.get(str(response.status_code), 0) + 1
                    return
                try:
                    stub.ModelInfer(_grpc_request(inputs, raw), timeout=10)
                    seen["OK"] = seen.get("OK", 0) + 1
                except grpc.RpcError as exc:
                    code = exc.code()  # type: ignore[attr-defined]
                    assert code in CLIENT_GRPC_CODES, (code, exc.details())  # type: ignore[attr-defined]
                    seen[code.name] = seen.get(code.name, 0) + 1

            one_call()

    await asyncio.to_thread(fuzz)
    assert {"OK", "INVALID_ARGUMENT", "200", "400"} <= set(seen), seen

    # The reported case, both ways.
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input-0", datatype="FP32", shape=[0, 2**62])
    request.raw_input_contents.append(b"")
    async with grpc.aio.insecure_channel(served.grpc_target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 4096 elements" in (refused.value.details() or "")
    response = await served.http.post(f"/v2/models/{MODEL}/infer", json={"inputs": [
        {"name": "input-0", "datatype": "FP32", "shape": [0, 2**62], "data": []}]})
    assert response.status_code == 400 and "at most 4096 elements" in response.json()["error"]


# -- registry events that cannot be used ---------------------------------------------------------


async def test_registry_events_that_cannot_be_used_are_counted_and_skipped(served: Served) -> None:
    kafka = served.kafka
    topic = full_name(REGISTRY_EVENTS, kafka.topic_prefix)
    undecodable = await served.metric("gyre_serving_registry_events_total", {"outcome": "undecodable"})
    invalid = await served.metric("gyre_serving_registry_events_total", {"outcome": "invalid"})
    not_a_model = served.store.put(b"these bytes are no skops file")
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    await producer.start()
    try:
        proto = [("content-type", b"application/protobuf")]
        poison: list[tuple[bytes | None, list[tuple[str, bytes]]]] = [
            (b"\xff\xfe not protobuf", proto),
            (b"", [("ce_type", b"gyre.events.v1.InferenceEvent"), *proto]),
            (alias_event(served.v2, 2).SerializeToString(), [("ce_time", b"yesterday"), *proto]),
            (b'{"kind": 2}', [("content-type", b"application/json")]),
            (b"x", [("content-type", b"text/plain")]),
            (None, []),  # a tombstone
        ]
        for value, headers in poison:
            await producer.send_and_wait(topic, value, key=MODEL.encode(), headers=headers)
        # A valid event whose record time no calendar holds (no ce_time header: the record's is used).
        await producer.send_and_wait(topic, alias_event(served.v2, 2).SerializeToString(), key=MODEL.encode(),
                                     headers=proto, timestamp_ms=2**62)
    finally:
        await producer.stop()

    async with Publisher(kafka, service="registry") as publisher:
        for event in [
            alias_event(None, 7, model="nobody-knows"),  # no artifact, no registry to ask
            alias_event(served.v2, 3, uri="file:///nowhere/missing.skops"),  # missing artifact
            alias_event(served.v2, 4, sha256="not-a-sha256"),  # malformed sha256
            alias_event(served.v2, 5, sha256="0" * 64),  # sha256 of other bytes
            alias_event(not_a_model, 6),  # loads nothing
            alias_event(served.v2, -1),  # no such version number
        ]:
            await publisher.publish(REGISTRY_EVENTS, event, key=event.model_name)
        # Everything above was skipped, v1 still answers; then a good event is still applied.
        await publisher.publish(REGISTRY_EVENTS, alias_event(served.v2, 2), key=MODEL)
    await wait_until(lambda: _is(served.served_version(), "2"), what="v2 served after the poison")

    assert not served.runner._stop_requested.is_set() and served.runner.exit_code == 0
    assert await served.metric("gyre_serving_registry_events_total", {"outcome": "undecodable"}) \
        >= undecodable + 5
    assert await served.metric("gyre_serving_registry_events_total", {"outcome": "invalid"}) >= invalid + 2
    refusals = [await served.metric("gyre_serving_model_loads_total", {"model": MODEL, "outcome": outcome})
                for outcome in ("not_found", "integrity", "deserialise")]
    assert served.runner.context is not None and served.runner.context.readiness.is_ready
    assert all(count >= 1 for count in refusals), refusals
    assert await served.metric("gyre_serving_model_loads_total",
                               {"model": "nobody-knows", "outcome": "no_artifact"}) >= 1
