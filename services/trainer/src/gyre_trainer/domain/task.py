"""The kind of problem, its metrics and which way each metric is better."""

from __future__ import annotations

from enum import StrEnum

import pandas as pd

from gyre_trainer.domain.dataset import DatasetError


class Task(StrEnum):
    """Supervised problem kinds the trainer searches for."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"


# Integer labels with at most this many distinct values are read as classes (0/1, 1..5 stars).
MAX_INTEGER_CLASSES = 20

CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
DEFAULT_OBJECTIVE = {Task.CLASSIFICATION: "roc_auc", Task.REGRESSION: "rmse"}


def metrics_of(task: Task) -> tuple[str, ...]:
    """Names of the metrics computed for ``task`` (validation and holdout alike)."""
    return CLASSIFICATION_METRICS if task is Task.CLASSIFICATION else REGRESSION_METRICS


def infer_task(label: pd.Series) -> Task:
    """Classification for text, boolean and few-valued integer labels; regression otherwise."""
    if pd.api.types.is_bool_dtype(label) or not pd.api.types.is_numeric_dtype(label):
        return Task.CLASSIFICATION
    if pd.api.types.is_integer_dtype(label) and label.nunique(dropna=True) <= MAX_INTEGER_CLASSES:
        return Task.CLASSIFICATION
    values = label.dropna()
    if len(values) and (values == values.round()).all() and values.nunique() <= MAX_INTEGER_CLASSES:
        return Task.CLASSIFICATION
    return Task.REGRESSION


def check_objective(task: Task, objective: str) -> str:
    """``objective`` if it is a metric of ``task`` (empty picks the default), else DatasetError."""
    if not objective:
        return DEFAULT_OBJECTIVE[task]
    if objective not in metrics_of(task):
        raise DatasetError(f"objective_metric {objective!r} is not one of {', '.join(metrics_of(task))} "
                           f"for {task.value}")
    return objective


def loss_of(metric: str, value: float) -> float:
    """What hyperopt minimises for ``metric``: the value itself, or its negation when higher is better."""
    return value if metric in LOWER_IS_BETTER else -value


def is_better(metric: str, candidate: float, incumbent: float) -> bool:
    """Whether ``candidate`` beats ``incumbent`` on ``metric`` (ties keep the incumbent)."""
    return candidate < incumbent if metric in LOWER_IS_BETTER else candidate > incumbent
