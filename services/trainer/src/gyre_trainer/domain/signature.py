"""The model signature: the inputs a model version takes and the outputs it returns, in Open
Inference Protocol terms, so serving can answer ModelMetadata and validate requests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gyre_trainer.domain.dataset import FeatureKind, TrainingSet
from gyre_trainer.domain.task import Task

PREDICT_OUTPUT = "predict"
"""Name of the output holding the predicted class (classification) or value (regression)."""
PROBA_OUTPUT = "proba"
"""Name of the output holding class probabilities, shape [-1, n_classes], classes in sorted order."""


@dataclass(frozen=True)
class Tensor:
    """One input or output: name, OIP datatype (FP64, INT64, BOOL, BYTES) and shape (-1 = any)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    """Inputs in the order the model takes them, then outputs; ``classes`` lists the class labels
    (as strings, in the order of the ``proba`` columns) for classifiers, empty for regressors."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    classes: tuple[str, ...] = ()


def oip_datatype(column: pd.Series, kind: FeatureKind | None = None) -> str:
    """OIP datatype of a column: BOOL, INT64, FP64 or BYTES (text)."""
    if kind is FeatureKind.CATEGORICAL:
        return "BYTES"
    if pd.api.types.is_bool_dtype(column):
        return "BOOL"
    if pd.api.types.is_integer_dtype(column):
        return "INT64"
    if pd.api.types.is_numeric_dtype(column):
        return "FP64"
    return "BYTES"


def signature_of(data: TrainingSet, task: Task, classes: np.ndarray | None) -> Signature:
    """The signature of a model trained on ``data``: one ``[-1]`` input per feature (one row per
    batch element), ``predict`` with the label's datatype, and for classifiers ``proba``."""
    inputs = tuple(Tensor(name, oip_datatype(data.features[name], data.kinds[name]), (-1,))
                   for name in data.feature_names)
    if task is Task.REGRESSION:
        return Signature(inputs, (Tensor(PREDICT_OUTPUT, "FP64", (-1,)),))
    labels = tuple(str(c) for c in (classes if classes is not None else []))
    return Signature(
        inputs,
        (Tensor(PREDICT_OUTPUT, oip_datatype(data.label), (-1,)),
         Tensor(PROBA_OUTPUT, "FP64", (-1, len(labels)))),
        labels,
    )
