"""The scikit-learn runtime: a loaded estimator, its signature, and how a request becomes its outputs.

:class:`LoadedModel` is the :class:`~gyre_serving.domain.runtime.Runtime` adapter of ``skops``
artifacts. When the model converts exactly it hands finite rows to ONNX Runtime (the ONNX adapter,
:mod:`gyre_serving.domain.compiled`) and keeps scikit-learn for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from gyre_serving.domain.compiled import CompiledModel, compile_model, type_name, why_not_compilable
from gyre_serving.domain.errors import InvalidRequestError, ModelLoadError, PredictionError
from gyre_serving.domain.runtime import ModelSource, Prediction, Runtime
from gyre_serving.domain.signature import (
    MATRIX_INPUT,
    PREDICT_OUTPUT,
    PROBA_OUTPUT,
    FeatureBatch,
    InputLayout,
    OutputKind,
    Signature,
    TensorSpec,
    assemble_features,
    dummy_inputs,
    output_kind,
    validate_signature,
)
from gyre_serving.domain.tensors import Tensor, cast, datatype_of

PLATFORM = "sklearn"
"""``ModelMetadata.platform`` of the models serving loads today."""


__all__ = ["PLATFORM", "LoadedModel", "ModelSource", "Prediction", "predicts_most_probable_class"]


@dataclass(frozen=True)
class LoadedModel(Runtime):
    """A scikit-learn model version ready to predict. Build it with :meth:`build`.

    Attributes:
        source: where it came from (name, version, artifact, declared signature).
        estimator: the scikit-learn estimator or pipeline.
        signature: the signature requests are checked against (declared, or inferred).
        classes: class labels as strings in ``predict_proba`` column order; empty for regressors.
        feature_names_in: column names the estimator was fitted with, when it was fitted on a
            DataFrame (it then predicts on a DataFrame with those columns).
        loaded_at: when the version was loaded, UTC.
        labels_from_proba: the predicted labels are read off ``predict_proba`` (the most probable
            class) instead of a second ``predict`` call: see :func:`predicts_most_probable_class`.
        compiled: the ONNX Runtime form that answers finite rows (:mod:`gyre_serving.domain.compiled`),
            or None: scikit-learn answers everything.
        runtime_note: why the model was not compiled (empty when it was, or when not asked to).
    """

    source: ModelSource
    estimator: Any
    signature: Signature
    classes: tuple[str, ...] = ()
    feature_names_in: tuple[str, ...] | None = None
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    labels_from_proba: bool = False
    compiled: CompiledModel | None = None
    runtime_note: str = ""

    @property
    def platform(self) -> str:
        return PLATFORM

    @property
    def runtime(self) -> str:
        """What computes the answers: ``onnxruntime`` (finite rows) or ``sklearn``."""
        return "onnxruntime" if self.compiled is not None else "sklearn"

    @classmethod
    def build(cls, source: ModelSource, estimator: Any, *, compile: bool = False) -> LoadedModel:
        """Check the estimator against the (declared or inferred) signature.

        Args:
            compile: try to compile the model for ONNX Runtime (:mod:`gyre_serving.domain.compiled`);
                a model that cannot be, or whose compiled answers differ, is served by scikit-learn.

        Raises:
            ModelLoadError: ``signature`` when the estimator cannot honour the signature (wrong
                number of features, probabilities from a model without ``predict_proba``, ...).
        """
        if not hasattr(estimator, "predict"):
            raise ModelLoadError("signature", f"{type(estimator).__name__} has no predict()")
        names_in = getattr(estimator, "feature_names_in_", None)
        feature_names_in = tuple(str(n) for n in names_in) if names_in is not None else None
        raw_classes = getattr(estimator, "classes_", None)
        classes = tuple(str(c) for c in raw_classes) if raw_classes is not None else ()
        declared = source.signature
        if declared is None or not declared.inputs:
            signature = _inferred_signature(estimator, feature_names_in, raw_classes)
        elif not declared.outputs:
            signature = Signature(declared.inputs, _default_outputs(estimator, raw_classes))
        else:
            signature = declared
        try:
            validate_signature(signature)
        except ValueError as exc:
            raise ModelLoadError("signature", f"{source.name} v{source.version}: {exc}") from None
        width = (signature.inputs[0].shape[1] if signature.layout is InputLayout.MATRIX
                 else len(signature.inputs))
        n_in = getattr(estimator, "n_features_in_", None)
        if n_in is not None and int(n_in) != width:
            raise ModelLoadError("signature", f"{source.name} v{source.version}: the signature gives {width} "
                                              f"features but the model was fitted on {int(n_in)}")
        for spec in signature.outputs:
            if output_kind(spec) is OutputKind.PROBA:
                if not hasattr(estimator, "predict_proba"):
                    raise ModelLoadError("signature", f"output {spec.describe()} needs predict_proba(), which "
                                                      f"{type(estimator).__name__} does not have")
                if spec.shape[1] >= 0 and classes and spec.shape[1] != len(classes):
                    raise ModelLoadError("signature", f"output {spec.describe()} has {spec.shape[1]} columns but "
                                                      f"the model has {len(classes)} classes")
        kinds = {output_kind(spec) for spec in signature.outputs}
        labels_from_proba = kinds == {OutputKind.PREDICT, OutputKind.PROBA} and predicts_most_probable_class(estimator)
        model = cls(source, estimator, signature, classes, feature_names_in, labels_from_proba=labels_from_proba)
        if not compile:
            return model
        numeric = all(spec.datatype != "BYTES" for spec in signature.inputs)
        reason = why_not_compilable(estimator, width, feature_names_in is not None, numeric)
        if not reason:
            warm_up_row = model.features(dummy_inputs(signature)).as_matrix()
            result = compile_model(estimator, width, warm_up_row)
            if isinstance(result, CompiledModel):
                # A compiled classifier answers probabilities only; its labels were checked at
                # compile time to be their most probable class (compiled._verify).
                return replace(model, compiled=result, labels_from_proba=labels_from_proba or result.classifier)
            reason = result
        return replace(model, runtime_note=reason)

    def features(self, inputs: Sequence[Tensor]) -> FeatureBatch:
        """Check request inputs against the signature. Raises :class:`InvalidRequestError`."""
        return assemble_features(self.signature, inputs, self.feature_names_in)

    def predict(self, batch: FeatureBatch) -> Prediction:
        """Run the estimator on ``batch`` and return every signature output.

        Raises:
            InvalidRequestError: the estimator rejected the values (e.g. NaN without an imputer).
            PredictionError: anything else went wrong inside the estimator.
        """
        if batch.rows == 0:
            return self._empty_prediction()
        frame = self._model_input(batch)
        outputs: list[Tensor] = []
        events: list[tuple[str, np.ndarray[Any, Any]]] = []
        proba: np.ndarray[Any, Any] | None = None
        values: np.ndarray[Any, Any] | None = None
        try:
            if self.compiled is not None:
                matrix = np.ascontiguousarray(frame, dtype=np.float64)
                # Non-finite rows go to scikit-learn: its imputer fills them, or it refuses them
                # with its own message.
                if np.isfinite(matrix).all():
                    if self.compiled.classifier:
                        proba = self.compiled.run(matrix)
                    else:
                        values = self.compiled.run(matrix)
            for spec in self.signature.outputs:
                if output_kind(spec) is OutputKind.PROBA:
                    if proba is None:
                        proba = np.asarray(self.estimator.predict_proba(frame))
                    tensor = cast(spec.name, proba, spec.datatype)
                    outputs.append(tensor)
                    labels = self.classes or tuple(str(j) for j in range(proba.shape[1]))
                    events.extend((f"{spec.name}_{label}", tensor.data[:, j]) for j, label in enumerate(labels))
                else:
                    if values is not None:
                        predicted = values
                    elif self.labels_from_proba:
                        # One estimator call instead of two: for a small model nearly all of a
                        # call's time is sklearn's input validation, which predict() would repeat.
                        if proba is None:
                            proba = np.asarray(self.estimator.predict_proba(frame))
                        predicted = self.estimator.classes_.take(np.argmax(proba, axis=1))
                    else:
                        predicted = np.asarray(self.estimator.predict(frame))
                    tensor = cast(spec.name, predicted.reshape((batch.rows, *[1] * (len(spec.shape) - 1))),
                                  spec.datatype)
                    outputs.append(tensor)
                    events.append((spec.name, tensor.data.reshape(-1)))
        except ValueError as exc:
            raise InvalidRequestError(f"model {self.name} v{self.version} rejected the input: {exc}") from None
        except Exception as exc:
            raise PredictionError(f"model {self.name} v{self.version} failed: {type(exc).__name__}: {exc}") from exc
        return Prediction(tuple(outputs), tuple(events))

    def _model_input(self, batch: FeatureBatch) -> Any:
        columns = [_as_model_column(column) for column in batch.columns]
        names_in = self.feature_names_in
        if names_in is None:
            if batch.matrix is not None and batch.matrix.dtype != object:
                return batch.matrix
            return np.column_stack(columns) if columns else np.empty((batch.rows, 0))
        # Fitted on a DataFrame: name the columns as at fit time (by name when the signature uses the
        # same names, else by position), so column transformers find their columns.
        if set(batch.names) == set(names_in):
            by_name = dict(zip(batch.names, columns, strict=True))
            return pd.DataFrame({name: by_name[name] for name in names_in}, copy=False)
        return pd.DataFrame(dict(zip(names_in, columns, strict=True)), copy=False)

    def _empty_prediction(self) -> Prediction:
        outputs = []
        for spec in self.signature.outputs:
            width = len(self.classes) if output_kind(spec) is OutputKind.PROBA else 1
            shape = (0, width) if len(spec.shape) == 2 else (0,)
            outputs.append(cast(spec.name, np.empty(shape), spec.datatype))
        return Prediction(tuple(outputs), ())


MOST_PROBABLE_CLASS_ESTIMATORS = frozenset({
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._logistic.LogisticRegressionCV",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.ensemble._gb.GradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.ExtraTreeClassifier",
    "sklearn.naive_bayes.GaussianNB",
})
"""Classifiers whose ``predict`` is the class ``predict_proba`` ranks first (argmax of the
probabilities, or of a score the probabilities are a monotonic function of). Exact types only: a
subclass may predict otherwise (a tuned threshold, say). Not listed on purpose: SVC (its Platt
probabilities can disagree with its decision) and nearest neighbours (ties are broken differently)."""


def predicts_most_probable_class(estimator: Any) -> bool:
    """Whether ``estimator`` (or a pipeline's last step) is a single-output classifier whose labels
    can be read off ``predict_proba``, so serving calls the estimator once per request.

    Labels then agree with the returned probabilities by construction; the two ways differ only
    where two classes' probabilities are equal to the last bit (a score exactly on the boundary).
    """
    final = estimator
    while isinstance(final, Pipeline):
        final = final[-1]
    classes = getattr(final, "classes_", None)
    return (type_name(final) in MOST_PROBABLE_CLASS_ESTIMATORS
            and isinstance(classes, np.ndarray) and classes.ndim == 1 and hasattr(estimator, "classes_"))


def _as_model_column(column: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # BYTES inputs arrive as bytes; estimators were fitted on str categories.
    if column.dtype == object:
        return np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in column], dtype=object)
    return column


def _default_outputs(estimator: Any, classes: Any) -> tuple[TensorSpec, ...]:
    if classes is None:
        return (TensorSpec(PREDICT_OUTPUT, "FP64", (-1,)),)
    label_type = _label_datatype(np.asarray(classes).dtype)
    outputs = [TensorSpec(PREDICT_OUTPUT, label_type, (-1,))]
    if hasattr(estimator, "predict_proba"):
        outputs.append(TensorSpec(PROBA_OUTPUT, "FP32", (-1, len(classes))))
    return tuple(outputs)


def _label_datatype(dtype: np.dtype[Any]) -> str:
    if dtype.kind in "iu":
        return "INT64"
    if dtype.kind == "f":
        return "FP64"
    return datatype_of(dtype)


def _inferred_signature(estimator: Any, names_in: tuple[str, ...] | None, classes: Any) -> Signature:
    outputs = _default_outputs(estimator, classes)
    if names_in:
        return Signature(tuple(TensorSpec(name, "FP64", (-1,)) for name in names_in), outputs)
    n_in = getattr(estimator, "n_features_in_", None)
    if n_in is None:
        raise ModelLoadError("signature", "the version has no signature and the model does not say how many "
                                          "features it takes (n_features_in_)")
    return Signature((TensorSpec(MATRIX_INPUT, "FP64", (-1, int(n_in))),), outputs)

