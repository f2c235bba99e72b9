"""NVIDIA's tritonclient (gRPC and HTTP, unchanged, in its own environment and process) against Gyre
serving: health, metadata, inference with every datatype, raw/binary contents, requested outputs,
parameters, versions in the path, and the errors its users expect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from support.tritonclient_env import run_plan
from support.waiting import wait_until

from gyre_common.artifacts import ArtifactRef, ArtifactSettings, LocalArtifactStore
from gyre_common.bus import Publisher
from gyre_common.runner import ServiceRunner
from gyre_common.settings import KafkaSettings, TelemetrySettings
from gyre_common.topics import REGISTRY_EVENTS
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_serving.bootstrap import bootstrap
from gyre_serving.service import SPEC
from gyre_serving.settings import ServingSettings

pytestmark = pytest.mark.integration

# One feature per datatype the protocol has for numbers, booleans and strings.
NUMERIC = {"f_int8": "INT8", "f_int16": "INT16", "f_int32": "INT32", "f_int64": "INT64", "f_uint8": "UINT8",
           "f_uint16": "UINT16", "f_uint32": "UINT32", "f_uint64": "UINT64", "f_fp32": "FP32", "f_fp64": "FP64",
           "f_bool": "BOOL"}
FEATURES = {**NUMERIC, "f_bytes": "BYTES"}
ROWS = 40
MAX_ROWS = 50


def training_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = {name: rng.integers(0, 100, rows) for name in NUMERIC}
    frame["f_fp32"] = rng.normal(size=rows).astype(np.float32)
    frame["f_fp64"] = rng.normal(size=rows)
    frame["f_bool"] = rng.integers(0, 2, rows).astype(bool)
    frame["f_bytes"] = rng.choice(["red", "green", "blue"], rows)
    return pd.DataFrame(frame)


@pytest.fixture(scope="module")
def model() -> Pipeline:
    frame = training_frame(300, 0)
    target = ((frame["f_fp64"] > 0) ^ (frame["f_bytes"] == "red")).astype(int)
    pipeline = Pipeline([
        ("columns", ColumnTransformer([("num", "passthrough", list(NUMERIC)),
                                       ("cat", OneHotEncoder(handle_unknown="ignore"), ["f_bytes"])])),
        ("classify", LogisticRegression(max_iter=2000)),
    ])
    return pipeline.fit(frame, target)


def signature() -> common_pb2.ModelSignature:
    return common_pb2.ModelSignature(
        inputs=[common_pb2.TensorSpec(name=name, datatype=dt, shape=[-1]) for name, dt in FEATURES.items()],
        outputs=[common_pb2.TensorSpec(name="predict", datatype="INT64", shape=[-1]),
                 common_pb2.TensorSpec(name="proba", datatype="FP64", shape=[-1, 2])],
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model: Pipeline) -> tuple[Path, ArtifactRef]:
    root = tmp_path_factory.mktemp("artifacts")
    return root, LocalArtifactStore(root).put(sio.dumps(model))


@pytest.fixture
async def endpoints(bootstrap_servers: str, unique: str, served: tuple[Path, ArtifactRef],
                    tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    root, ref = served
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=f"t{unique}.", linger_ms=1)
    settings = ServingSettings(http_port=0, grpc_port=0, readiness_interval_s=0.1, shutdown_grace_s=3,
                               registry_address="", models=("alltypes", "copy"), max_batch_rows=MAX_ROWS,
                               spool_dir=str(tmp_path / "spool"),
                               trusted_types=("sklearn.tree._tree.Tree", "numpy.dtype"))
    runner = ServiceRunner(SPEC, partial(bootstrap, artifacts=ArtifactSettings(root=str(root))),
                           settings=settings, kafka=kafka, telemetry_settings=TelemetrySettings())
    await runner.start()
    try:
        assert runner.context is not None
        readiness = runner.context.readiness
        async with Publisher(kafka, service="registry") as publisher:

            async def announce_and_check() -> bool:
                # Announced until seen: the follower starts at the topic's end once it is positioned,
                # and serving the same version again is a no-op.
                for name in ("alltypes", "copy"):  # many models in one server, each from the registry by alias
                    await publisher.publish(REGISTRY_EVENTS, events_pb2.RegistryEvent(
                        kind=events_pb2.REGISTRY_EVENT_KIND_ALIAS_SET, model_name=name, version=1,
                        alias="production", artifact=common_pb2.ArtifactRef(
                            uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size, format="skops"),
                        signature=signature(), actor="test"), key=name)
                for _ in range(20):
                    if readiness.is_ready:
                        return True
                    await asyncio.sleep(0.05)
                return False

            await wait_until(announce_and_check, within_s=30, what="both models loaded and warmed up")
        yield {"grpc": f"127.0.0.1:{runner.grpc_port}", "http": f"127.0.0.1:{runner.http_port}"}
    finally:
        await runner.stop()


def request_inputs(frame: pd.DataFrame) -> list[dict[str, Any]]:
    inputs = []
    for name, datatype in FEATURES.items():
        column = frame[name]
        data = [str(v) for v in column] if datatype == "BYTES" else column.tolist()
        inputs.append({"name": name, "datatype": datatype, "shape": [len(frame)], "data": data})
    return inputs


async def plan(endpoints: dict[str, str], calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return await asyncio.to_thread(run_plan, {**endpoints, "calls": calls})


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_tritonclient_health_metadata_and_inference(endpoints: dict[str, str], model: Pipeline,
                                                          protocol: str) -> None:
    frame = training_frame(ROWS, 1)
    inputs = request_inputs(frame)
    calls: list[dict[str, Any]] = [
        {"op": "server_live"}, {"op": "server_ready"}, {"op": "server_metadata"},
        {"op": "model_ready", "model": "alltypes"}, {"op": "model_ready", "model": "alltypes", "version": "1"},
        {"op": "model_ready", "model": "alltypes", "version": "7"}, {"op": "model_ready", "model": "nope"},
        {"op": "model_metadata", "model": "alltypes"}, {"op": "model_metadata", "model": "alltypes", "version": "1"},
        {"op": "model_metadata", "model": "nope"},
        # Every datatype at once; all outputs.
        {"op": "infer", "model": "alltypes", "inputs": inputs, "request_id": "req-all",
         "parameters": {"request_key": "customer-7"}},
        # A version in the path; one requested output; JSON data instead of binary over HTTP.
        {"op": "infer", "model": "copy", "version": "1", "inputs": inputs, "outputs": ["proba"], "binary": False},
        # Errors.
        {"op": "infer", "model": "alltypes", "version": "9", "inputs": inputs},
        {"op": "infer", "model": "nope", "inputs": inputs},
        {"op": "infer", "model": "alltypes",
         "inputs": [{**inputs[0], "shape": [ROWS, 2], "data": inputs[0]["data"] * 2}, *inputs[1:]]},
        {"op": "infer", "model": "alltypes",
         "inputs": [{**inputs[0], "datatype": "FP64", "data": [0.5] * ROWS}, *inputs[1:]]},
        {"op": "infer", "model": "alltypes", "inputs": request_inputs(training_frame(MAX_ROWS + 1, 2))},
        {"op": "infer", "model": "alltypes", "inputs": inputs, "outputs": ["nope"]},
    ]
    answers = await plan(endpoints, [{"protocol": protocol, **call} for call in calls])
    (live, ready, server_meta, ready_any, ready_v1, ready_v7, ready_unknown, meta, meta_v1, meta_unknown,
     full, selected, wrong_version, unknown, wrong_shape, wrong_type, too_many, unknown_output) = answers

    assert live == ready == ready_any == ready_v1 == {"ok": True}
    assert ready_v7 == ready_unknown == {"ok": False}
    assert server_meta["ok"]["name"] == "gyre-serving" and server_meta["ok"]["version"]
    for answer in (meta, meta_v1):
        got = answer["ok"]
        assert got["name"] == "alltypes" and got["versions"] == ["1"] and got["platform"] == "sklearn"
        assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in got["inputs"]] == [
            (name, dt, [-1]) for name, dt in FEATURES.items()]
        assert [(t["name"], t["datatype"]) for t in got["outputs"]] == [("predict", "INT64"), ("proba", "FP64")]

    expected = model.predict(frame)
    expected_proba = model.predict_proba(frame)
    result = full["ok"]
    assert result["id"] == "req-all" and result["model_name"] == "alltypes" and result["model_version"] == "1"
    assert result["parameters"]["prediction_ids"].split(",") == [f"req-all:{i}" for i in range(ROWS)]
    assert result["outputs"]["predict"]["datatype"] == "INT64" and result["outputs"]["predict"]["shape"] == [ROWS]
    assert result["outputs"]["predict"]["data"] == expected.tolist()
    assert result["outputs"]["proba"]["shape"] == [ROWS, 2]
    np.testing.assert_allclose(result["outputs"]["proba"]["data"], expected_proba.reshape(-1), rtol=1e-12)
    assert "ok" in selected, selected
    assert list(selected["ok"]["outputs"]) == ["proba"] and selected["ok"]["model_name"] == "copy"
    np.testing.assert_allclose(selected["ok"]["outputs"]["proba"]["data"], expected_proba.reshape(-1), rtol=1e-12)

    not_found, invalid, too_large = (("StatusCode.NOT_FOUND", "StatusCode.INVALID_ARGUMENT",
                                      "StatusCode.RESOURCE_EXHAUSTED") if protocol == "grpc" else ("404", "400", "413"))
    for answer in (meta_unknown, wrong_version, unknown):
        assert answer["error"]["status"] == not_found, answer
    assert "version 9" in wrong_version["error"]["message"] and "'nope'" in unknown["error"]["message"]
    assert wrong_shape["error"]["status"] == invalid and "[40, 2]" in wrong_shape["error"]["message"]
    assert wrong_type["error"]["status"] == invalid
    assert "INT8" in wrong_type["error"]["message"] and "FP64" in wrong_type["error"]["message"]
    assert too_many["error"]["status"] == too_large and str(MAX_ROWS) in too_many["error"]["message"]
    assert unknown_output["error"]["status"] == invalid and "predict" in unknown_output["error"]["message"]


# -- a torch text model: BYTES in, labels and probabilities out ------------------------------------------

TEXTS = ["a wonderful, warm film", "dull and far too long", "", "café crème ☕ — ünïcödé",
         "the plot made no sense at all but the music was lovely"]
MAX_TEXT_BYTES = 200


@pytest.fixture(scope="module")
def text_model() -> Any:
    # Imported here: torch takes seconds to import and only these tests need it. Random head weights
    # (seeded): the test checks the wire, not accuracy.
    from gyre_ml.text_model import TextModelConfig, new_text_model

    return new_text_model(TextModelConfig(task="classification", labels=("neg", "pos"),
                                          extra={"input_name": "review"}), seed=3)


@pytest.fixture
async def text_endpoints(bootstrap_servers: str, unique: str, text_model: Any, tmp_path: Path,
                         ) -> AsyncIterator[dict[str, str]]:
    from gyre_ml.text_model import MODEL_FORMAT, save_text_model

    root = tmp_path / "artifacts"
    ref = LocalArtifactStore(root).put(save_text_model(text_model))
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=f"t{unique}.", linger_ms=1)
    settings = ServingSettings(http_port=0, grpc_port=0, readiness_interval_s=0.1, shutdown_grace_s=3,
                               registry_address="", models=("reviews",), spool_dir=str(tmp_path / "spool"),
                               max_text_bytes=MAX_TEXT_BYTES, torch_threads=1,
                               batching={"reviews": {"max_batch_rows": 8, "max_wait_ms": 2}})
    runner = ServiceRunner(SPEC, partial(bootstrap, artifacts=ArtifactSettings(root=str(root))),
                           settings=settings, kafka=kafka, telemetry_settings=TelemetrySettings())
    await runner.start()
    try:
        assert runner.context is not None
        readiness = runner.context.readiness
        signature = common_pb2.ModelSignature(
            inputs=[common_pb2.TensorSpec(name="review", datatype="BYTES", shape=[-1])],
            outputs=[common_pb2.TensorSpec(name="predict", datatype="BYTES", shape=[-1]),
                     common_pb2.TensorSpec(name="proba", datatype="FP32", shape=[-1, 2])])
        async with Publisher(kafka, service="registry") as publisher:

            async def announce_and_check() -> bool:
                await publisher.publish(REGISTRY_EVENTS, events_pb2.RegistryEvent(
                    kind=events_pb2.REGISTRY_EVENT_KIND_ALIAS_SET, model_name="reviews", version=1,
                    alias="production", artifact=common_pb2.ArtifactRef(
                        uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size, format=MODEL_FORMAT),
                    signature=signature, actor="test"), key="reviews")
                for _ in range(40):
                    if readiness.is_ready:
                        return True
                    await asyncio.sleep(0.05)
                return False

            await wait_until(announce_and_check, within_s=60, what="the text model loaded and warmed up")
        yield {"grpc": f"127.0.0.1:{runner.grpc_port}", "http": f"127.0.0.1:{runner.http_port}"}
    finally:
        await runner.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_tritonclient_sends_bytes_to_a_text_model(text_endpoints: dict[str, str], text_model: Any,
                                                        protocol: str) -> None:
    texts = {"name": "review", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}
    calls: list[dict[str, Any]] = [
        {"op": "model_metadata", "model": "reviews"},
        {"op": "infer", "model": "reviews", "inputs": [texts], "request_id": "t-1",
         "parameters": {"entity_id": "cust-1", "event_time": "2026-05-01T12:00:00Z"}},
        # JSON strings over HTTP instead of the binary extension; one text, one output.
        {"op": "infer", "model": "reviews", "inputs": [{**texts, "shape": [1, 1], "data": TEXTS[:1]}],
         "outputs": ["predict"], "binary": False},
        {"op": "infer", "model": "reviews", "inputs": [{**texts, "shape": [1], "data": ["x" * (MAX_TEXT_BYTES + 1)]}]},
        {"op": "infer", "model": "reviews", "inputs": [{**texts, "datatype": "FP32", "data": [1.0] * len(TEXTS)}]},
    ]
    meta, full, single, too_long, not_text = await plan(text_endpoints, [{"protocol": protocol, **c} for c in calls])

    got = meta["ok"]
    assert got["platform"] == "torch"
    assert [(t["name"], t["datatype"]) for t in got["inputs"]] == [("review", "BYTES")]
    assert [(t["name"], t["datatype"]) for t in got["outputs"]] == [("predict", "BYTES"), ("proba", "FP32")]

    expected = text_model.predict(TEXTS)
    labels = ["neg", "pos"]
    result = full["ok"]
    assert result["model_name"] == "reviews" and result["id"] == "t-1"
    assert result["outputs"]["predict"] == {"datatype": "BYTES", "shape": [len(TEXTS)],
                                            "data": [labels[i] for i in expected.argmax(axis=1)]}
    assert result["outputs"]["proba"]["datatype"] == "FP32" and result["outputs"]["proba"]["shape"] == [len(TEXTS), 2]
    # Padding differs with the batch (texts of other callers); masked positions do not change the answer.
    np.testing.assert_allclose(result["outputs"]["proba"]["data"], expected.reshape(-1), atol=1e-5)
    assert single["ok"]["outputs"]["predict"]["data"] == [labels[int(expected[0].argmax())]]
    assert list(single["ok"]["outputs"]) == ["predict"]

    invalid = "StatusCode.INVALID_ARGUMENT" if protocol == "grpc" else "400"
    assert too_long["error"]["status"] == invalid and f"at most {MAX_TEXT_BYTES}" in too_long["error"]["message"]
    assert not_text["error"]["status"] == invalid and "expected BYTES" in not_text["error"]["message"]
