"""The torch text runtime behind serving's Runtime interface, with a stand-in for the torch model:
BYTES decoding and limits, outputs like a scikit-learn classifier's, batching off the event loop with
each caller's own rows, events with the text or only its hash, entity id and event time."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import threading
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from support.waiting import wait_until

from gyre_serving.batching import AdaptiveBatcher, BatchingPolicy
from gyre_serving.convert import inference_events
from gyre_serving.domain.errors import InvalidRequestError, ModelLoadError
from gyre_serving.domain.events import ServedBatch
from gyre_serving.domain.runtime import ModelSource
from gyre_serving.domain.signature import Signature, TensorSpec
from gyre_serving.domain.tensors import Tensor
from gyre_serving.domain.text import TextRuntime, check_text_signature, load_text_runtime, text_signature
from gyre_serving.handlers import DataPlane, InferenceRequest
from gyre_serving.repository import ModelRepository

LABELS = ("neg", "pos")
SOURCE = ModelSource("reviews", 3, "file:///m", "ab" * 32, "safetensors-text")


class FakeTextModel:
    """Stands in for gyre_ml's TextModel: P(pos) grows with the text's length; records batch sizes."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.config = SimpleNamespace(task="classification", labels=LABELS, extra={})
        self.calls: list[int] = []
        self.threads: set[str] = set()
        self.gate = gate

    def predict(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        assert all(isinstance(text, str) for text in texts)
        self.calls.append(len(texts))
        self.threads.add(threading.current_thread().name)
        if self.gate is not None:
            self.gate.wait(5)
        pos = np.array([min(len(text), 10) / 10 for text in texts], dtype=np.float32)
        return np.stack([1 - pos, pos], axis=1) if texts else np.zeros((0, 2), dtype=np.float32)


def runtime(model: Any = None, *, max_text_bytes: int = 100, signature: Signature | None = None) -> TextRuntime:
    sig = signature or text_signature(None, LABELS, {"input_name": "review"})
    return TextRuntime(SOURCE, sig, model or FakeTextModel(), LABELS, max_text_bytes,
                       text_inputs=frozenset({sig.inputs[0].name}))


def texts(*values: bytes | str) -> Tensor:
    data = np.empty(len(values), dtype=object)
    data[:] = [v.encode() if isinstance(v, str) else v for v in values]
    return Tensor("review", "BYTES", data)


def test_signature_inferred_from_the_model_mirrors_a_classifier() -> None:
    sig = text_signature(None, LABELS, {"input_name": "review"})
    assert sig.inputs == (TensorSpec("review", "BYTES", (-1,)),)
    assert sig.outputs == (TensorSpec("predict", "BYTES", (-1,)), TensorSpec("proba", "FP32", (-1, 2)))
    assert text_signature(None, LABELS, {}).inputs[0].name == "text"
    assert text_signature(None, (), {}).outputs == (TensorSpec("predict", "FP32", (-1,)),)


@pytest.mark.parametrize(("inputs", "outputs", "message"), [
    ((TensorSpec("t", "FP64", (-1,)),), (), "must be BYTES"),
    ((TensorSpec("a", "BYTES", (-1,)), TensorSpec("b", "BYTES", (-1,))), (), "one BYTES input"),
    ((TensorSpec("t", "BYTES", (-1,)),), (TensorSpec("proba", "FP32", (-1, 3)),), "3 columns but the model has 2"),
])
def test_signatures_a_text_model_cannot_honour(inputs: Any, outputs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_text_signature(Signature(inputs, outputs), LABELS)


def test_texts_are_decoded_and_checked() -> None:
    model = runtime()
    batch = model.features([texts("great", "café ☕", "")])
    assert batch.rows == 3 and list(batch.columns[0]) == ["great", "café ☕", ""]
    with pytest.raises(InvalidRequestError, match="input 'review' row 1 is not valid UTF-8"):
        model.features([texts("fine", b"\xff\xfe")])
    with pytest.raises(InvalidRequestError, match="row 0: the text has 101 bytes; at most 100"):
        model.features([texts("x" * 101)])
    with pytest.raises(InvalidRequestError, match="input 'review' is FP32; expected BYTES"):
        model.features([Tensor("review", "FP32", np.zeros(2, dtype=np.float32))])
    with pytest.raises(InvalidRequestError, match="unknown input"):
        model.features([Tensor("text", "BYTES", np.array([b"a"], dtype=object))])


def test_outputs_are_labels_and_probabilities_like_a_classifier() -> None:
    model = runtime()
    prediction = model.predict(model.features([texts("ok", "a long text")]))
    predict, proba = prediction.outputs
    assert (predict.name, predict.datatype, list(predict.data)) == ("predict", "BYTES", [b"neg", b"pos"])
    assert proba.datatype == "FP32" and proba.shape == (2, 2)
    np.testing.assert_allclose(proba.data, [[0.8, 0.2], [0.0, 1.0]], atol=1e-6)
    assert [name for name, _ in prediction.event_columns] == ["predict", "proba_neg", "proba_pos"]
    assert model.platform == "torch" and model.runtime == "torch" and model.blocking
    assert model.warm_up().outputs[1].shape == (2, 2)


def test_without_the_text_extra_a_text_model_is_refused_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_gyre_ml(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("gyre_ml"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gyre_ml)
    with pytest.raises(ModelLoadError, match=r"install gyre-serving\[text\]") as refused:
        load_text_runtime(SOURCE, b"")
    assert refused.value.reason == "format" and not refused.value.retryable


async def test_batches_run_off_the_event_loop_and_callers_get_their_own_rows() -> None:
    gate = threading.Event()
    fake = FakeTextModel(gate)
    model = runtime(fake)
    batcher = AdaptiveBatcher(BatchingPolicy(max_batch_rows=8, max_wait_s=0.001))

    async def call(i: int) -> list[float]:
        prediction = await batcher.predict(model, model.features([texts("x" * (i % 10), "y" * (i % 7))]))
        return prediction.outputs[1].data[:, 1].tolist()

    first = asyncio.ensure_future(call(0))
    # The first batch holds the worker thread until the gate opens ...
    await wait_until(lambda: fake.calls, within_s=5, what="the first batch running")
    others = [asyncio.ensure_future(call(i)) for i in range(1, 20)]
    # ... and meanwhile the event loop still takes requests: all of them queue up.
    await wait_until(lambda: sum(lane.rows for lane in batcher._lanes.values()) == 38, within_s=5,
                     what="every request queued")
    assert len(fake.calls) == 1
    gate.set()
    results = await asyncio.gather(first, *others)
    for i, got in enumerate(results):
        np.testing.assert_allclose(got, [(i % 10) / 10, (i % 7) / 10], atol=1e-6)
    # Requests queued while the model was busy formed full batches (4 requests of 2 rows).
    assert fake.calls == [2, 8, 8, 8, 8, 6]
    assert all(not name.startswith("MainThread") for name in fake.threads)


def dataplane(model: TextRuntime, *, event_text: str = "text") -> tuple[DataPlane, list[ServedBatch]]:
    repository = ModelRepository("production")
    repository.put(model)
    seen: list[ServedBatch] = []
    sink = SimpleNamespace(emit=lambda batch: seen.append(batch) or True)
    return DataPlane(repository, sink, server_name="gyre-serving", server_version="0", ready=lambda: True,
                     max_batch_rows=100, event_text=event_text), seen


@pytest.mark.parametrize("event_text", ["text", "hash"])
async def test_events_carry_the_text_or_its_hash_and_the_entity(event_text: str) -> None:
    plane, seen = dataplane(runtime(), event_text=event_text)
    try:
        response = await plane.infer(InferenceRequest("reviews", id="r1", inputs=[texts("héllo", "")],
                                                      parameters={"entity_id": "cust-7",
                                                                  "event_time": "2026-05-01T12:00:00+02:00"}))
    finally:
        plane.close()
    assert [t.name for t in response.outputs] == ["predict", "proba"]
    first, second = inference_events(seen[0])
    assert first.entity_id == second.entity_id == "cust-7"
    assert first.event_time.ToDatetime(tzinfo=UTC) == datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    assert first.outputs["predict"].string_value == "neg"
    assert first.outputs["proba_pos"].double_value == pytest.approx(0.5)
    if event_text == "text":
        assert first.inputs["review"].string_value == "héllo" and second.inputs["review"].string_value == ""
    else:
        digest = hashlib.sha256("héllo".encode()).hexdigest()
        assert first.inputs["review"].string_value == f"sha256:{digest}:5"
        assert second.inputs["review"].string_value == (
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855:0")


@pytest.mark.parametrize(("parameters", "message"), [
    ({"event_time": "2026-05-01T12:00:00"}, "needs a UTC offset"),
    ({"event_time": "yesterday"}, "RFC 3339"),
    ({"event_time": 5}, "RFC 3339"),
    ({"entity_id": 7}, "must be a string"),
    ({"entity_id": "x" * 257}, "at most 256"),
])
async def test_bad_entity_parameters_are_invalid_requests(parameters: dict[str, Any], message: str) -> None:
    plane, seen = dataplane(runtime())
    try:
        with pytest.raises(InvalidRequestError, match=message):
            await plane.infer(InferenceRequest("reviews", inputs=[texts("a")], parameters=parameters))
    finally:
        plane.close()
    assert not seen
