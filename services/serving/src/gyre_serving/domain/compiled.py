"""Compiled inference: a scikit-learn model converted to ONNX (skl2onnx) and run by ONNX Runtime.

Why: for a small model nearly all of a scikit-learn ``predict`` call is input validation (array-API
namespace lookup, dataframe detection, finiteness and feature checks), about 90% of a one-row
LogisticRegression call (docs/profiling/serving.md). Serving has already checked the request
against the signature, so that work is repeated for nothing; ONNX Runtime runs the same
arithmetic in one C++ call (measured ~20x less CPU per call for that model).

A model is compiled only when every answer is the same as scikit-learn's:

* only estimators and steps whose ONNX conversion keeps float64 arithmetic
  (:data:`COMPILABLE_TYPES`: linear models and numeric scalers, alone or in a pipeline). Trees are
  not: skl2onnx converts their thresholds to float32, which moves rows that sit near a threshold
  to the other branch;
* only models fitted on arrays whose inputs are all numeric (a float64 matrix in, no names);
* the converted model must agree with scikit-learn on verification rows (the warm-up row, zeros,
  ones and seeded random rows at several scales): the same labels, values within 1e-9 relative;
* rows with NaN or infinity never take the compiled path: scikit-learn answers them (an imputer
  fills them, or the model refuses them with its own error message).

Anything else is served by scikit-learn itself, as before. ``GYRE_SERVING_RUNTIME=sklearn`` turns
compilation off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

COMPILABLE_TYPES = frozenset({
    "sklearn.pipeline.Pipeline",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._base.LinearRegression",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.linear_model._coordinate_descent.Lasso",
    "sklearn.linear_model._coordinate_descent.ElasticNet",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._data.MinMaxScaler",
    "sklearn.preprocessing._data.MaxAbsScaler",
    "sklearn.preprocessing._data.RobustScaler",
})
"""Estimators and pipeline steps whose ONNX form computes what scikit-learn computes, in float64."""

RELATIVE_TOLERANCE = 1e-9
ABSOLUTE_TOLERANCE = 1e-12
VERIFICATION_ROWS = 64
"""Random rows per scale the compiled model is checked on, beside zeros, ones and the warm-up row."""
_INPUT = "X"


@dataclass(frozen=True)
class CompiledModel:
    """A model version's ONNX Runtime session.

    Attributes:
        session: the ``onnxruntime.InferenceSession`` (one thread: serving scales by processes).
        output: the output read: class probabilities (``classes_`` order) for a classifier, the
            predicted values for a regressor.
        classifier: whether :meth:`run` returns probabilities.
    """

    session: Any
    output: str
    classifier: bool

    def run(self, matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Probabilities ``[rows, classes]`` (classifier) or values ``[rows]`` (regressor) for a
        finite float64 ``[rows, features]`` matrix."""
        (result,) = self.session.run([self.output], {_INPUT: matrix})
        return result if self.classifier else result.reshape(-1)


def type_name(obj: Any) -> str:
    """``module.QualifiedName`` of ``obj``'s exact type (how the allowlists name estimators)."""
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _steps(estimator: Any) -> list[Any]:
    """The estimator and, for a pipeline, every step (recursively)."""
    found = [estimator]
    if type_name(estimator) == "sklearn.pipeline.Pipeline":
        for _, step in estimator.steps:
            found.extend(_steps(step))
    return found


def why_not_compilable(estimator: Any, n_features: int, fitted_on_names: bool, numeric_inputs: bool) -> str:
    """Why ``estimator`` cannot be compiled, or empty when it may be (before conversion and checks)."""
    if fitted_on_names:
        return "fitted on named columns"
    if not numeric_inputs:
        return "not all inputs are numeric"
    if n_features < 1:
        return "no features"
    others = sorted({type_name(step) for step in _steps(estimator)} - COMPILABLE_TYPES)
    if others:
        return f"holds {', '.join(name.rsplit('.', 1)[-1] for name in others)}"
    return ""


def compile_model(estimator: Any, n_features: int, warm_up_row: np.ndarray[Any, Any] | None = None,
                  ) -> CompiledModel | str:
    """Convert ``estimator`` to ONNX and check it answers as scikit-learn does.

    Returns:
        the compiled model, or why it was not compiled (conversion failed, or answers differed).
    """
    # Imported here: skl2onnx and onnx take a second to import and only loading needs them.
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType

    classifier = hasattr(estimator, "predict_proba") and getattr(estimator, "classes_", None) is not None
    options = {id(estimator): {"zipmap": False}} if classifier else None
    try:
        onnx_model = to_onnx(estimator, initial_types=[(_INPUT, DoubleTensorType([None, n_features]))],
                             options=options)
    except Exception as exc:  # the converter refuses what it does not know; serving keeps scikit-learn
        return f"skl2onnx could not convert it: {type(exc).__name__}: {exc}"
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = 1
    session_options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(onnx_model.SerializeToString(), session_options,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:
        return f"ONNX Runtime could not load the converted model: {type(exc).__name__}: {exc}"
    names = [output.name for output in session.get_outputs()]
    output = names[1] if classifier and len(names) > 1 else names[0]
    compiled = CompiledModel(session, output, classifier)
    mismatch = _verify(compiled, estimator, n_features, warm_up_row)
    return mismatch or compiled


def _verification_rows(n_features: int, warm_up_row: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(20261127)
    blocks = [np.zeros((1, n_features)), np.ones((1, n_features))]
    if warm_up_row is not None:
        blocks.append(np.asarray(warm_up_row, dtype=np.float64).reshape(-1, n_features))
    blocks.extend(rng.normal(scale=scale, size=(VERIFICATION_ROWS, n_features)) for scale in (1.0, 10.0, 1000.0))
    return np.ascontiguousarray(np.concatenate(blocks), dtype=np.float64)


def _verify(compiled: CompiledModel, estimator: Any, n_features: int,
            warm_up_row: np.ndarray[Any, Any] | None) -> str:
    """Empty when the compiled model answers the verification rows as scikit-learn does, else why not."""
    rows = _verification_rows(n_features, warm_up_row)
    try:
        got = compiled.run(rows)
        if compiled.classifier:
            expected = np.asarray(estimator.predict_proba(rows), dtype=np.float64)
            labels = np.asarray(estimator.predict(rows))
            if not np.array_equal(estimator.classes_.take(np.argmax(got, axis=1)), labels):
                return "its labels differ from scikit-learn's on the verification rows"
        else:
            expected = np.asarray(estimator.predict(rows), dtype=np.float64).reshape(-1)
    except Exception as exc:
        return f"checking it failed: {type(exc).__name__}: {exc}"
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=RELATIVE_TOLERANCE,
                                                      atol=ABSOLUTE_TOLERANCE):
        worst = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("nan")
        return f"its answers differ from scikit-learn's on the verification rows (by up to {worst:.3g})"
    return ""
