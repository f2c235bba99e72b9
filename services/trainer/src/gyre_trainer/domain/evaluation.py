"""Metrics of a fitted model on labelled rows (cross-validation folds, the holdout)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from gyre_trainer.domain.task import Task


def evaluate(model: Any, features: pd.DataFrame, label: pd.Series, task: Task) -> dict[str, float]:
    """Metrics of ``model`` on ``features``/``label``.

    Classification: ``accuracy``; ``f1`` (binary: of the positive class, the second of the sorted
    classes; multiclass: macro); ``roc_auc`` (binary, or one-vs-rest macro); ``log_loss``.
    Regression: ``rmse``, ``mae``, ``r2``. A metric that is undefined on these rows (e.g. ROC AUC
    with a single class present) is left out rather than reported as NaN.
    """
    y = label.to_numpy()
    if task is Task.REGRESSION:
        predicted = np.asarray(model.predict(features), dtype="float64")
        truth = y.astype("float64")
        return _finite({
            "rmse": math.sqrt(mean_squared_error(truth, predicted)),
            "mae": float(mean_absolute_error(truth, predicted)),
            "r2": float(r2_score(truth, predicted)) if len(truth) > 1 else float("nan"),
        })
    predicted = model.predict(features)
    classes = np.asarray(model.classes_)
    out: dict[str, float] = {"accuracy": float(accuracy_score(y, predicted))}
    with warnings.catch_warnings():
        # Undefined metrics (a class absent from these rows) are dropped below, not warned about.
        warnings.simplefilter("ignore")
        if len(classes) == 2:
            out["f1"] = _safe(lambda: f1_score(y, predicted, pos_label=classes[1], zero_division=0.0))
        else:
            out["f1"] = _safe(lambda: f1_score(y, predicted, average="macro", zero_division=0.0))
        proba = model.predict_proba(features)
        if len(classes) == 2:
            out["roc_auc"] = _safe(lambda: roc_auc_score(y == classes[1], proba[:, 1]))
        else:
            out["roc_auc"] = _safe(lambda: roc_auc_score(y, proba, multi_class="ovr", average="macro",
                                                         labels=classes))
        out["log_loss"] = _safe(lambda: log_loss(y, proba, labels=classes))
    return _finite(out)


def _safe(compute: Any) -> float:
    try:
        return float(compute())
    except ValueError:
        return float("nan")


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in metrics.items() if math.isfinite(value)}


def mean_metrics(folds: list[dict[str, float]]) -> dict[str, float]:
    """Per metric, the mean over the folds that define it."""
    names = sorted({name for fold in folds for name in fold})
    return {name: float(np.mean([fold[name] for fold in folds if name in fold])) for name in names}
