"""Serving's compiled runtime (ONNX Runtime) answers exactly as scikit-learn, or is not used; labels
read off the probabilities equal the estimator's own predict()."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from gyre_serving.domain import compiled as compiled_module
from gyre_serving.domain.errors import InvalidRequestError
from gyre_serving.domain.model import LoadedModel, ModelSource, predicts_most_probable_class
from gyre_serving.domain.signature import Signature, TensorSpec
from gyre_serving.domain.tensors import Tensor

X, Y = load_iris(return_X_y=True)
RNG = np.random.default_rng(7)
ROWS = np.concatenate([X, RNG.normal(scale=5.0, size=(200, 4))])
SOURCE = ModelSource("m", 1, "file:///m", "ab" * 32)


def build(estimator: Any, *, compile: bool = True, signature: Signature | None = None) -> LoadedModel:
    source = SOURCE if signature is None else ModelSource("m", 1, "file:///m", "ab" * 32, "skops", signature)
    return LoadedModel.build(source, estimator, compile=compile)


def answers(model: LoadedModel, rows: np.ndarray) -> list[np.ndarray]:
    prediction = model.predict(model.features([Tensor("input-0", "FP64", np.ascontiguousarray(rows))]))
    return [tensor.data for tensor in prediction.outputs]


def assert_same_answers(compiled: LoadedModel, reference: LoadedModel, rows: np.ndarray) -> None:
    for got, expected in zip(answers(compiled, rows), answers(reference, rows), strict=True):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        if got.dtype.kind in "iub":
            np.testing.assert_array_equal(got, expected)
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("estimator", [
    LogisticRegression(max_iter=500).fit(X, Y),
    LogisticRegression(max_iter=500).fit(X, Y == 1),
    make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y),
    Ridge().fit(X, X[:, 0]),
    LinearRegression().fit(X, Y.astype(float)),
], ids=["multiclass", "binary", "scaler-pipeline", "ridge", "linear"])
def test_linear_models_run_on_onnx_runtime_with_scikit_learns_answers(estimator: Any) -> None:
    model = build(estimator)
    assert (model.runtime, model.runtime_note) == ("onnxruntime", "")
    assert_same_answers(model, build(estimator, compile=False), ROWS)
    if hasattr(estimator, "classes_"):
        labels = answers(model, ROWS)[0].reshape(-1)
        np.testing.assert_array_equal(labels, estimator.predict(ROWS))


def test_one_row_answers_match_too() -> None:
    estimator = LogisticRegression(max_iter=500).fit(X, Y)
    for row in ROWS[:50]:
        assert_same_answers(build(estimator), build(estimator, compile=False), row.reshape(1, 4))


@pytest.mark.parametrize(("estimator", "why"), [
    (RandomForestClassifier(n_estimators=5, random_state=0).fit(X, Y), "holds RandomForestClassifier"),
    (make_pipeline(StandardScaler(), SVC()).fit(X, Y), "holds SVC"),
    (LogisticRegression(max_iter=500).fit(pd.DataFrame(X, columns=list("abcd")), Y), "fitted on named columns"),
])
def test_models_that_do_not_convert_exactly_stay_on_scikit_learn(estimator: Any, why: str) -> None:
    model = build(estimator)
    assert model.runtime == "sklearn" and model.compiled is None
    assert model.runtime_note == why


def test_compilation_is_off_unless_asked() -> None:
    model = build(LogisticRegression(max_iter=500).fit(X, Y), compile=False)
    assert (model.runtime, model.runtime_note) == ("sklearn", "")


def test_a_converter_failure_keeps_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    import skl2onnx

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("unsupported")

    monkeypatch.setattr(skl2onnx, "to_onnx", refuse)
    model = build(LogisticRegression(max_iter=500).fit(X, Y))
    assert model.runtime == "sklearn"
    assert model.runtime_note == "skl2onnx could not convert it: RuntimeError: unsupported"


def test_answers_that_differ_on_the_verification_rows_keep_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    run = compiled_module.CompiledModel.run

    def off_by_a_little(self: compiled_module.CompiledModel, matrix: np.ndarray) -> np.ndarray:
        return run(self, matrix) + 1e-6

    monkeypatch.setattr(compiled_module.CompiledModel, "run", off_by_a_little)
    model = build(Ridge().fit(X, X[:, 0]))
    assert model.runtime == "sklearn"
    assert model.runtime_note.startswith("its answers differ from scikit-learn's on the verification rows")


def test_non_finite_rows_are_answered_by_scikit_learn_with_its_own_error() -> None:
    estimator = LogisticRegression(max_iter=500).fit(X, Y)
    bad = X[:2].copy()
    bad[1, 2] = np.nan
    errors = []
    for model in (build(estimator), build(estimator, compile=False)):
        with pytest.raises(InvalidRequestError) as caught:
            answers(model, bad)
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and "NaN" in errors[0]


def test_labels_are_read_off_the_probabilities_only_for_classifiers_that_predict_so() -> None:
    class Thresholded(LogisticRegression):
        """A subclass may predict otherwise (here: always the first class)."""

        def predict(self, X: Any) -> Any:
            return np.zeros(len(X), dtype=int)

    assert predicts_most_probable_class(LogisticRegression(max_iter=500).fit(X, Y))
    assert predicts_most_probable_class(make_pipeline(StandardScaler(), RandomForestClassifier(3)).fit(X, Y))
    assert not predicts_most_probable_class(SVC().fit(X, Y))
    assert not predicts_most_probable_class(Thresholded(max_iter=500).fit(X, Y))
    assert not predicts_most_probable_class(Ridge().fit(X, Y))

    both = Signature((TensorSpec("input-0", "FP64", (-1, 4)),),
                     (TensorSpec("predict", "INT64", (-1,)), TensorSpec("proba", "FP32", (-1, 3))))
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, Y)
    model = build(forest, compile=False, signature=both)
    assert model.labels_from_proba
    np.testing.assert_array_equal(answers(model, ROWS)[0], forest.predict(ROWS))
    odd = build(Thresholded(max_iter=500).fit(X, Y), compile=False, signature=both)
    assert not odd.labels_from_proba
    assert not answers(odd, ROWS)[0].any()
