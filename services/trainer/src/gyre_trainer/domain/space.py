"""The AutoML search space: estimator families with their hyperparameters, and the pipeline built
from one point of it.

Every family's estimator sits behind the same preprocessing: numerical columns are imputed
(median) and standardised (StandardScaler); categorical ones are imputed (most frequent) and
one-hot encoded, unknown categories ignored. Everything runs single-threaded (``n_jobs=1``) and
seeded, so a trial is reproducible and a search does not fight the service's event loop for cores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hyperopt import hp
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from gyre_trainer.domain.dataset import DatasetError, FeatureKind
from gyre_trainer.domain.task import Task

FAMILIES: dict[Task, tuple[str, ...]] = {
    Task.CLASSIFICATION: ("logistic_regression", "random_forest", "extra_trees", "gradient_boosting"),
    Task.REGRESSION: ("ridge", "random_forest", "extra_trees", "gradient_boosting"),
}
"""Estimator families the trainer knows, per task; AutoML searches all of them."""


def _trees(prefix: str) -> dict[str, Any]:
    return {
        "n_estimators": hp.quniform(f"{prefix}.n_estimators", 50, 300, 25),
        "max_depth": hp.quniform(f"{prefix}.max_depth", 2, 20, 1),
        "min_samples_leaf": hp.quniform(f"{prefix}.min_samples_leaf", 1, 10, 1),
        "max_features": hp.choice(f"{prefix}.max_features", ["sqrt", "log2", 1.0]),
    }


def _family_space(task: Task, family: str) -> dict[str, Any]:
    # Labels carry the task and family, so every hyperopt label in one space is unique.
    p = f"{task.value}.{family}"
    if family == "logistic_regression":
        return {"C": hp.loguniform(f"{p}.C", math.log(1e-3), math.log(1e2)),
                "class_weight": hp.choice(f"{p}.class_weight", [None, "balanced"])}
    if family == "ridge":
        return {"alpha": hp.loguniform(f"{p}.alpha", math.log(1e-3), math.log(1e3))}
    if family in ("random_forest", "extra_trees"):
        return _trees(p)
    if family == "gradient_boosting":
        return {
            "n_estimators": hp.quniform(f"{p}.n_estimators", 50, 300, 25),
            "learning_rate": hp.loguniform(f"{p}.learning_rate", math.log(0.01), math.log(0.3)),
            "max_depth": hp.quniform(f"{p}.max_depth", 2, 5, 1),
            "subsample": hp.uniform(f"{p}.subsample", 0.6, 1.0),
        }
    raise DatasetError(f"unknown estimator family {family!r} for {task.value}; "
                       f"known: {', '.join(FAMILIES[task])}")


def resolve_families(task: Task, requested: Sequence[str]) -> tuple[str, ...]:
    """The families to search: ``requested`` (validated), or every family of ``task`` when empty.

    Raises:
        DatasetError: a requested family is unknown for the task.
    """
    if not requested:
        return FAMILIES[task]
    unknown = [name for name in requested if name not in FAMILIES[task]]
    if unknown:
        raise DatasetError(f"unknown estimator families {unknown} for {task.value}; "
                           f"known: {', '.join(FAMILIES[task])}")
    return tuple(dict.fromkeys(requested))


def search_space(task: Task, families: Sequence[str]) -> Any:
    """The hyperopt space: a choice over ``families``, each point a dict with ``family`` and its params."""
    options = [{"family": family, **_family_space(task, family)} for family in families]
    return hp.choice("family", options)


_INT_PARAMS = frozenset({"n_estimators", "max_depth", "min_samples_leaf"})


def normalise_params(point: Mapping[str, Any]) -> dict[str, Any]:
    """A point of the space as plain Python values (quantised floats back to int)."""
    out: dict[str, Any] = {}
    for key, value in point.items():
        out[key] = int(value) if key in _INT_PARAMS else value
    return out


def build_estimator(task: Task, params: Mapping[str, Any], seed: int) -> BaseEstimator:
    """The estimator of one point of the space (``params`` as from :func:`normalise_params`)."""
    family = params["family"]
    kw = {k: v for k, v in params.items() if k != "family"}
    seed = seed % 2**32
    if task is Task.CLASSIFICATION:
        if family == "logistic_regression":
            return LogisticRegression(max_iter=2000, random_state=seed, **kw)
        if family == "random_forest":
            return RandomForestClassifier(random_state=seed, n_jobs=1, **kw)
        if family == "extra_trees":
            return ExtraTreesClassifier(random_state=seed, n_jobs=1, **kw)
        if family == "gradient_boosting":
            return GradientBoostingClassifier(random_state=seed, **kw)
    else:
        if family == "ridge":
            return Ridge(random_state=seed, **kw)
        if family == "random_forest":
            return RandomForestRegressor(random_state=seed, n_jobs=1, **kw)
        if family == "extra_trees":
            return ExtraTreesRegressor(random_state=seed, n_jobs=1, **kw)
        if family == "gradient_boosting":
            return GradientBoostingRegressor(random_state=seed, **kw)
    raise DatasetError(f"unknown estimator family {family!r} for {task.value}")


def build_pipeline(task: Task, params: Mapping[str, Any], kinds: Mapping[str, FeatureKind],
                   seed: int) -> Pipeline:
    """Preprocessing + the estimator of ``params``, for features of the given kinds (in order).

    With numerical features only, the pipeline takes a 2-D array or a DataFrame in signature
    order; with categorical features it needs a DataFrame whose columns carry the feature names.
    """
    model = build_estimator(task, params, seed)
    numerical = [name for name, kind in kinds.items() if kind is FeatureKind.NUMERICAL]
    categorical = [name for name, kind in kinds.items() if kind is FeatureKind.CATEGORICAL]
    if not categorical:
        return Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler()),
                         ("model", model)])
    transformers: list[tuple[str, Any, list[str]]] = []
    if numerical:
        transformers.append(("numerical", Pipeline([("impute", SimpleImputer(strategy="median")),
                                                    ("scale", StandardScaler())]), numerical))
    transformers.append(("categorical", Pipeline([
        ("impute", SimpleImputer(strategy="most_frequent")),
        ("encode", OneHotEncoder(handle_unknown="ignore")),
    ]), categorical))
    return Pipeline([("prepare", ColumnTransformer(transformers)), ("model", model)])
