"""Serving's signatures, loaded models, data plane, inference events and model manager (no I/O)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_serving.convert import change_from_event, inference_events, source_from_event
from gyre_serving.domain.errors import InvalidRequestError, ModelLoadError, ModelNotFoundError, RequestTooLargeError
from gyre_serving.domain.events import ServedBatch
from gyre_serving.domain.model import LoadedModel, ModelSource
from gyre_serving.domain.registry import RegistryChange
from gyre_serving.domain.signature import InputLayout, Signature, TensorSpec, assemble_features, dummy_inputs
from gyre_serving.domain.tensors import Tensor
from gyre_serving.handlers import DataPlane, InferenceRequest
from gyre_serving.models import ModelManager
from gyre_serving.repository import ModelRepository

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 3))
Y = (X[:, 0] + X[:, 1] > 0).astype(int)
COLUMNS = Signature(
    tuple(TensorSpec(name, "FP64", (-1,)) for name in ("a", "b", "c")),
    (TensorSpec("predict", "INT64", (-1,)), TensorSpec("proba", "FP32", (-1, 2))),
)
MATRIX = Signature((TensorSpec("x", "FP32", (-1, 3)),), COLUMNS.outputs)


def loaded(signature: Signature | None = COLUMNS, version: int = 1, estimator: Any = None) -> LoadedModel:
    model = estimator if estimator is not None else LogisticRegression().fit(X, Y)
    return LoadedModel.build(ModelSource("m", version, "file:///m", "ab" * 32, "skops", signature), model)


def column_inputs(rows: np.ndarray, datatype: str = "FP64") -> list[Tensor]:
    return [Tensor(name, datatype, rows[:, j].astype("<f8" if datatype == "FP64" else "<i8"))
            for j, name in enumerate("abc")]


# -- signatures --------------------------------------------------------------------------------------


def test_layout_follows_the_signature() -> None:
    assert COLUMNS.layout is InputLayout.COLUMNS and MATRIX.layout is InputLayout.MATRIX
    one_feature = Signature((TensorSpec("a", "FP64", (-1, 1)),), ())
    assert one_feature.layout is InputLayout.COLUMNS


def test_columns_by_name_in_any_order_or_one_2d_input() -> None:
    by_name = assemble_features(COLUMNS, list(reversed(column_inputs(X[:4]))))
    assert by_name.names == ("a", "b", "c") and by_name.rows == 4
    np.testing.assert_array_equal(by_name.as_matrix(), X[:4])
    matrix = assemble_features(COLUMNS, [Tensor("anything", "FP64", X[:4])])
    np.testing.assert_array_equal(matrix.as_matrix(), X[:4])
    assert matrix.names == ("a", "b", "c")


def test_matrix_input_and_feature_names() -> None:
    batch = assemble_features(MATRIX, [Tensor("x", "FP32", X[:2].astype("<f4"))])
    assert batch.names == ("x_0", "x_1", "x_2")
    named = assemble_features(MATRIX, [Tensor("x", "FP32", X[:2].astype("<f4"))], ["p", "q", "r"])
    assert named.names == ("p", "q", "r")


def test_safe_widening_is_accepted_narrowing_is_not() -> None:
    ints = assemble_features(COLUMNS, column_inputs(np.ones((2, 3)), "INT64"))
    assert ints.columns[0].dtype == np.float64
    with pytest.raises(InvalidRequestError, match="input 'x' is FP64; expected FP32"):
        assemble_features(MATRIX, [Tensor("x", "FP64", X[:2])])


@pytest.mark.parametrize(("inputs", "message"), [
    ([], "no inputs; expected 'a' \\(FP64 \\[-1\\]\\)"),
    ([Tensor("a", "FP64", np.zeros(2))], "missing input\\(s\\) 'b' \\(FP64 \\[-1\\]\\), 'c'"),
    ([*column_inputs(X[:2]), Tensor("d", "FP64", np.zeros(2))], "unknown input\\(s\\) \\['d'\\]"),
    ([Tensor("a", "FP64", np.zeros(2)), Tensor("a", "FP64", np.zeros(2))], "must be unique"),
    ([Tensor("x", "FP64", np.zeros((2, 4)))], "needs \\[batch, 3\\]"),
    ([Tensor("a", "FP64", np.zeros((2, 2))), *column_inputs(X[:2])[1:]], "expected \\[batch\\] or \\[batch, 1\\]"),
    ([Tensor("a", "FP64", np.zeros(3)), *column_inputs(X[:2])[1:]], "has 2 rows but 'a' has 3"),
    ([Tensor("a", "BYTES", np.array([b"x", b"y"], dtype=object)), *column_inputs(X[:2])[1:]],
     "input 'a' is BYTES; expected FP64"),
])
def test_bad_inputs_say_what_was_expected(inputs: list[Tensor], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        assemble_features(COLUMNS, inputs)


def test_dummy_inputs_fit_their_signature() -> None:
    assert assemble_features(COLUMNS, dummy_inputs(COLUMNS)).rows == 1
    assert assemble_features(MATRIX, dummy_inputs(MATRIX, rows=3)).as_matrix().shape == (3, 3)


# -- loaded models -------------------------------------------------------------------------------------


def test_outputs_follow_the_signature_and_equal_the_estimator() -> None:
    model = loaded()
    prediction = model.predict(model.features(column_inputs(X[:5])))
    predict, proba = prediction.outputs
    assert (predict.datatype, predict.shape) == ("INT64", (5,))
    np.testing.assert_array_equal(predict.data, model.estimator.predict(X[:5]))
    assert (proba.datatype, proba.shape) == ("FP32", (5, 2))
    assert [name for name, _ in prediction.event_columns] == ["predict", "proba_0", "proba_1"]


def test_signatures_the_estimator_cannot_honour_are_refused() -> None:
    with pytest.raises(ModelLoadError, match="fitted on 3") as wrong_width:
        loaded(Signature((TensorSpec("x", "FP64", (-1, 4)),), COLUMNS.outputs))
    assert wrong_width.value.reason == "signature"
    regressor = LinearRegression().fit(X, X[:, 0])
    with pytest.raises(ModelLoadError, match="needs predict_proba"):
        loaded(COLUMNS, estimator=regressor)
    with pytest.raises(ModelLoadError, match="3 columns but the model has 2 classes"):
        loaded(Signature(COLUMNS.inputs, (TensorSpec("proba", "FP32", (-1, 3)),)))


def test_a_missing_signature_is_inferred_from_the_estimator() -> None:
    model = loaded(None)
    assert model.signature.inputs == (TensorSpec("input-0", "FP64", (-1, 3)),)
    assert [(s.name, s.datatype) for s in model.signature.outputs] == [("predict", "INT64"), ("proba", "FP32")]
    regressor = loaded(None, estimator=LinearRegression().fit(X, X[:, 0]))
    assert [(s.name, s.datatype) for s in regressor.signature.outputs] == [("predict", "FP64")]


def test_dataframe_models_get_named_columns_and_string_categories() -> None:
    frame = pd.DataFrame({"colour": ["red", "blue", "red", "green"] * 5, "size": np.arange(20.0)})
    labels = np.array(["no", "yes"] * 10)
    pipeline = Pipeline([("prep", ColumnTransformer([("c", OneHotEncoder(handle_unknown="ignore"), ["colour"])],
                                                    remainder="passthrough")),
                         ("clf", LogisticRegression())]).fit(frame, labels)
    signature = Signature((TensorSpec("size", "FP64", (-1,)), TensorSpec("colour", "BYTES", (-1,))),
                          (TensorSpec("predict", "BYTES", (-1,)),))
    model = loaded(signature, estimator=pipeline)
    inputs = [Tensor("colour", "BYTES", np.array([b"red", b"blue"], dtype=object)),
              Tensor("size", "FP64", np.array([1.0, 2.0]))]
    (predict,) = model.predict(model.features(inputs)).outputs
    expected = pipeline.predict(pd.DataFrame({"colour": ["red", "blue"], "size": [1.0, 2.0]}))
    assert predict.data.tolist() == [label.encode() for label in expected]


def test_values_the_estimator_rejects_are_invalid_requests() -> None:
    model = loaded()
    rows = X[:2].copy()
    rows[0, 0] = np.nan
    with pytest.raises(InvalidRequestError, match="rejected the input"):
        model.predict(model.features(column_inputs(rows)))


# -- data plane ------------------------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.batches: list[ServedBatch] = []

    def emit(self, batch: ServedBatch) -> bool:
        self.batches.append(batch)
        return True


def dataplane(*models: LoadedModel, max_rows: int = 100) -> tuple[DataPlane, Sink]:
    repository = ModelRepository("production")
    for model in models:
        repository.put(model)
    sink = Sink()
    return DataPlane(repository, sink, server_name="gyre-serving", server_version="0.1.0", ready=lambda: True,
                     max_batch_rows=max_rows), sink


async def test_infer_returns_requested_outputs_and_records_events() -> None:
    plane, sink = dataplane(loaded())
    response = await plane.infer(InferenceRequest("m", id="req-1", inputs=column_inputs(X[:3]), outputs=["proba"],
                                                  parameters={"request_key": "e-9"}))
    assert response.id == "req-1" and response.model_version == "1"
    assert [t.name for t in response.outputs] == ["proba"]
    assert response.prediction_ids == ("req-1:0", "req-1:1", "req-1:2")
    assert response.parameters == {"prediction_ids": "req-1:0,req-1:1,req-1:2"}
    (batch,) = sink.batches
    assert batch.alias == "production" and batch.request_key == "e-9" and batch.rows == 3
    # Events carry every output, whatever the client asked for.
    assert [name for name, _ in batch.output_columns] == ["predict", "proba_0", "proba_1"]

    single = await plane.infer(InferenceRequest("m", model_version="1", inputs=column_inputs(X[:1])))
    assert len(single.id) == 36 and single.prediction_ids == (single.id,)
    assert sink.batches[-1].alias == ""


async def test_infer_errors() -> None:
    plane, _ = dataplane(loaded(), max_rows=2)
    with pytest.raises(ModelNotFoundError, match="model 'x' is not served here \\(serving: m\\)"):
        await plane.infer(InferenceRequest("x"))
    with pytest.raises(ModelNotFoundError, match="version 2 of model 'm' is not served here; 'production' is v"):
        await plane.infer(InferenceRequest("m", model_version="2", inputs=column_inputs(X[:1])))
    with pytest.raises(InvalidRequestError, match="neither a version number nor the served alias"):
        await plane.infer(InferenceRequest("m", model_version="staging", inputs=column_inputs(X[:1])))
    with pytest.raises(RequestTooLargeError, match="at most 2 per request"):
        await plane.infer(InferenceRequest("m", inputs=column_inputs(X[:3])))
    with pytest.raises(InvalidRequestError, match="unknown output\\(s\\) \\['label'\\]"):
        await plane.infer(InferenceRequest("m", inputs=column_inputs(X[:1]), outputs=["label"]))
    with pytest.raises(InvalidRequestError, match="at most 128"):
        await plane.infer(InferenceRequest("m", id="x" * 129, inputs=column_inputs(X[:1])))


def test_metadata_and_readiness() -> None:
    plane, _ = dataplane(loaded(version=4))
    meta = plane.model_metadata("m")
    assert meta.versions == ("4",) and meta.platform == "sklearn" and meta.inputs == COLUMNS.inputs
    assert plane.model_ready("m") and plane.model_ready("m", "4") and plane.model_ready("m", "production")
    assert not plane.model_ready("m", "3") and not plane.model_ready("other")
    assert plane.server_metadata().name == "gyre-serving"


async def test_inference_events_one_per_row_with_named_values() -> None:
    plane, sink = dataplane(loaded())
    rows = X[:2].copy()
    rows[1, 2] = np.nan
    model = plane.repository.resolve("m")
    # NaN is a missing value in events (the estimator itself would refuse it, so build the batch directly).
    batch = model.features(column_inputs(rows))
    served = ServedBatch("m", 1, "production", "r", ("r:0", "r:1"), batch.names, batch.columns,
                         (("predict", np.array([1, 0])), ("proba_1", np.array([0.5, 0.25]))),
                         datetime(2025, 1, 1, tzinfo=UTC), 1.5, "k")
    events = inference_events(served)
    assert [e.prediction_id for e in events] == ["r:0", "r:1"] and [e.row_index for e in events] == [0, 1]
    assert events[0].inputs["a"].double_value == pytest.approx(rows[0, 0])
    assert events[1].inputs["c"].WhichOneof("kind") is None
    assert events[1].outputs["predict"].int64_value == 0 and events[1].outputs["proba_1"].double_value == 0.25
    assert events[0].served_at.ToDatetime().year == 2025 and events[0].latency_ms == 1.5
    assert sink.batches == []


# -- model manager -----------------------------------------------------------------------------------------


def event(kind: int, version: int, *, alias: str = "", artifact: bool = True,
          name: str = "m") -> events_pb2.RegistryEvent:
    message = events_pb2.RegistryEvent(kind=kind, model_name=name, version=version, alias=alias)  # type: ignore[arg-type]
    if artifact:
        message.artifact.CopyFrom(common_pb2.ArtifactRef(uri=f"file:///v{version}", sha256="AB" * 32, format="skops"))
    return message


class FakeLoader:
    """Loads any version; refuses those listed, fails ``flaky`` times with a retryable error first."""

    def __init__(self, refuse: dict[int, str] | None = None, flaky: int = 0) -> None:
        self.refuse = refuse or {}
        self.flaky = flaky
        self.calls: list[int] = []

    def __call__(self, source: ModelSource) -> LoadedModel:
        self.calls.append(source.version)
        if self.flaky:
            self.flaky -= 1
            raise ModelLoadError("not_found", "not there yet", retryable=True)
        if source.version in self.refuse:
            raise ModelLoadError(self.refuse[source.version], "refused")
        return LoadedModel.build(ModelSource(source.name, source.version, source.artifact_uri, source.sha256,
                                             source.format, COLUMNS), LogisticRegression().fit(X, Y))


def manager(loader: FakeLoader, **kwargs: Any) -> ModelManager:
    return ModelManager(ModelRepository("production"), loader, alias="production", retry_delay_s=0.001, **kwargs)


K = events_pb2.RegistryEventKind


def change(*args: Any, **kwargs: Any) -> RegistryChange:
    """A registry event as the follower hands it to the manager."""
    return change_from_event(event(*args, **kwargs))


async def test_alias_events_load_and_swap_bad_versions_keep_the_old() -> None:
    loader = FakeLoader(refuse={3: "integrity"})
    mgr = manager(loader)
    assert not await mgr.apply(change(K.REGISTRY_EVENT_KIND_VERSION_CREATED, 1))
    assert mgr.repository.get("m") is None
    assert not await mgr.apply(change(K.REGISTRY_EVENT_KIND_ALIAS_SET, 1, alias="challenger"))
    # An alias event without an artifact falls back on what VERSION_CREATED said.
    assert await mgr.apply(change(K.REGISTRY_EVENT_KIND_ALIAS_SET, 1, alias="production", artifact=False))
    assert mgr.repository.resolve("m").version == 1
    await mgr.apply(change(K.REGISTRY_EVENT_KIND_ALIAS_SET, 2, alias="production"))
    assert mgr.repository.resolve("m").version == 2
    await mgr.apply(change(K.REGISTRY_EVENT_KIND_ALIAS_SET, 3, alias="production"))
    assert mgr.repository.resolve("m").version == 2 and mgr.stats.refused == {"integrity": 1}
    # The same version again is a no-op.
    calls = len(loader.calls)
    await mgr.apply(change(K.REGISTRY_EVENT_KIND_ALIAS_SET, 2, alias="production"))
    assert len(loader.calls) == calls
    await mgr.apply(change(K.REGISTRY_EVENT_KIND_ALIAS_REMOVED, 0, alias="production", artifact=False))
    assert mgr.repository.get("m") is None


async def test_unknown_artifacts_are_looked_up_in_the_registry() -> None:
    asked: list[tuple[str, int]] = []

    async def lookup(name: str, version: int) -> ModelSource | None:
        asked.append((name, version))
        return ModelSource(name, version, "file:///x", "cd" * 32)

    mgr = manager(FakeLoader(), lookup=lookup)
    await mgr.apply(change(K.REGISTRY_EVENT_KIND_ALIAS_SET, 5, alias="production", artifact=False))
    assert asked == [("m", 5)] and mgr.repository.resolve("m").version == 5


async def test_retryable_failures_are_retried_then_given_up() -> None:
    mgr = manager(FakeLoader(flaky=2), load_attempts=3)
    assert await mgr.serve(ModelSource("m", 1, "file:///x", "ab" * 32))
    stubborn = manager(FakeLoader(flaky=5), load_attempts=2)
    assert not await stubborn.serve(ModelSource("m", 1, "file:///x", "ab" * 32))
    assert stubborn.stats.refused == {"not_found": 1}


async def test_configured_models_filter_events_and_gate_readiness() -> None:
    mgr = manager(FakeLoader(), models=("m",))
    assert mgr.missing() == ["m"]
    assert not await mgr.apply(change(K.REGISTRY_EVENT_KIND_ALIAS_SET, 1, alias="production", name="other"))
    await mgr.apply(change(K.REGISTRY_EVENT_KIND_ALIAS_SET, 1, alias="production"))
    assert mgr.missing() == []


async def test_a_complete_snapshot_unloads_models_that_lost_the_alias() -> None:
    mgr = manager(FakeLoader())
    await mgr.sync({"m": ModelSource("m", 1, "file:///x", "ab" * 32),
                    "n": ModelSource("n", 2, "file:///y", "ab" * 32)}, complete=True)
    assert [m.name for m in mgr.repository.models()] == ["m", "n"]
    await mgr.sync({"n": ModelSource("n", 2, "file:///y", "ab" * 32)}, complete=True)
    assert [m.name for m in mgr.repository.models()] == ["n"]
    await mgr.sync({"n": None}, complete=False)
    assert mgr.repository.models() == []


async def test_requests_in_flight_finish_on_the_model_they_started_with() -> None:
    plane, _ = dataplane(loaded(version=1))
    model = plane.repository.resolve("m")
    plane.repository.put(loaded(version=2))
    assert model.version == 1 and plane.repository.resolve("m").version == 2
    responses = await asyncio.gather(*(plane.infer(InferenceRequest("m", inputs=column_inputs(X[:1])))
                                       for _ in range(3)))
    assert {r.model_version for r in responses} == {"2"}


def test_events_convert_to_sources() -> None:
    message = event(K.REGISTRY_EVENT_KIND_ALIAS_SET, 7, alias="production")
    message.signature.inputs.add(name="a", datatype="FP64", shape=[-1])
    source = source_from_event(message)
    assert source is not None and source.sha256 == "ab" * 32 and source.version == 7
    assert source.signature is not None and source.signature.inputs == (TensorSpec("a", "FP64", (-1,)),)
    assert source_from_event(event(K.REGISTRY_EVENT_KIND_ALIAS_SET, 7, artifact=False)) is None
