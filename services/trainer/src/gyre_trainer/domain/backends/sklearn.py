"""The scikit-learn backend: preprocessing + an estimator family per point (:mod:`..space`),
each trial scored by stratified k-fold cross-validation, artifacts in skops (no pickle)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from gyre_common.models import SKOPS_FORMAT, TRUSTED_SKOPS_TYPES, dump_model, load_model
from gyre_common.profile import ReferenceProfile, build_reference_profile
from gyre_trainer.domain.backends.base import TrainerBackend
from gyre_trainer.domain.dataset import TrainingSet
from gyre_trainer.domain.evaluation import evaluate, mean_metrics
from gyre_trainer.domain.search import SearchConfig, TrialScore, cv_folds
from gyre_trainer.domain.signature import Signature, signature_of
from gyre_trainer.domain.space import build_pipeline, normalise_params, resolve_families, search_space
from gyre_trainer.domain.task import Task


class _Prepared:
    def __init__(self, development: TrainingSet, folds: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.development = development
        self.folds = folds


class SklearnBackend(TrainerBackend):
    """AutoML over scikit-learn estimator families (the trainer's original behaviour)."""

    name = "sklearn"
    model_format = SKOPS_FORMAT

    def check(self, data: TrainingSet, task: Task) -> None:
        pass  # every column kind has a preprocessing step (space.build_pipeline)

    def families(self, task: Task, requested: Sequence[str]) -> tuple[str, ...]:
        return resolve_families(task, list(requested))

    def search_space(self, config: SearchConfig) -> Any:
        return search_space(config.task, config.families)

    def normalise(self, point: Mapping[str, Any]) -> dict[str, Any]:
        return normalise_params(point)

    def prepare(self, development: TrainingSet, config: SearchConfig) -> _Prepared:
        return _Prepared(development, cv_folds(development, config))

    def score_trial(self, prepared: Any, params: Mapping[str, Any], config: SearchConfig) -> TrialScore:
        development: TrainingSet = prepared.development
        features, label = development.features, development.label
        scores = []
        for train_idx, valid_idx in prepared.folds:
            model = build_pipeline(config.task, params, development.kinds, config.seed)
            model.fit(features.iloc[train_idx], label.iloc[train_idx])
            scores.append(evaluate(model, features.iloc[valid_idx], label.iloc[valid_idx], config.task))
        return TrialScore(mean_metrics(scores))

    def fit_final(self, prepared: Any, params: Mapping[str, Any], config: SearchConfig) -> Any:
        development: TrainingSet = prepared.development
        model = build_pipeline(config.task, params, development.kinds, config.seed)
        model.fit(development.features, development.label)
        return model

    def evaluate(self, model: Any, features: pd.DataFrame, label: pd.Series, task: Task) -> dict[str, float]:
        return evaluate(model, features, label, task)

    def serialise(self, model: Any) -> bytes:
        blob = dump_model(model)
        # Serving loads with the same trusted types: refuse to register what it could not load.
        load_model(blob)
        return blob

    def load(self, blob: bytes) -> Any:
        return load_model(blob)

    def input_names(self, data: TrainingSet) -> list[str]:
        return data.feature_names

    def signature(self, data: TrainingSet, task: Task, model: Any) -> Signature:
        return signature_of(data, task, getattr(model, "classes_", None))

    def reference_profile(self, inputs: pd.DataFrame, *, model_name: str, dataset_fingerprint: str,
                          max_values: int, seed: int) -> ReferenceProfile:
        return build_reference_profile(inputs, model_name=model_name, model_version=0,
                                       dataset_fingerprint=dataset_fingerprint, max_values=max_values, seed=seed)

    def describe(self, params: Mapping[str, Any]) -> str:
        return str(params["family"])

    def model_tags(self, model: Any) -> dict[str, str]:
        return {"gyre.skops.trusted_types": ",".join(TRUSTED_SKOPS_TYPES)}
