"""Model artifacts: every family round-trips through skops with only the declared trusted types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from gyre_common.models import TRUSTED_SKOPS_TYPES as TRUSTED_TYPES
from gyre_common.models import UntrustedArtifactError, dump_model, load_model
from gyre_trainer.domain.dataset import FeatureKind
from gyre_trainer.domain.space import FAMILIES, build_pipeline
from gyre_trainer.domain.task import Task

SMALL = {
    "logistic_regression": {"C": 1.0, "class_weight": None},
    "ridge": {"alpha": 1.0},
    "random_forest": {"n_estimators": 5, "max_depth": 3, "min_samples_leaf": 1, "max_features": "sqrt"},
    "extra_trees": {"n_estimators": 5, "max_depth": 3, "min_samples_leaf": 1, "max_features": 1.0},
    "gradient_boosting": {"n_estimators": 5, "learning_rate": 0.1, "max_depth": 2, "subsample": 0.8},
}


def frame(rows: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.normal(size=rows), "n": rng.integers(0, 5, size=rows),
                         "c": rng.choice(["red", "green", None], size=rows)})


@pytest.mark.parametrize("task", list(Task))
@pytest.mark.parametrize("mixed", [False, True])
def test_every_family_round_trips_with_the_declared_trusted_types(task: Task, mixed: bool) -> None:
    features = frame() if mixed else frame()[["x", "n"]]
    kinds = {"x": FeatureKind.NUMERICAL, "n": FeatureKind.NUMERICAL}
    if mixed:
        kinds["c"] = FeatureKind.CATEGORICAL
    rng = np.random.default_rng(1)
    label = (pd.Series(rng.choice(["yes", "no"], size=len(features))) if task is Task.CLASSIFICATION
             else pd.Series(rng.normal(size=len(features))))
    for family in FAMILIES[task]:
        model = build_pipeline(task, {"family": family, **SMALL[family]}, kinds, seed=5).fit(features, label)
        blob = dump_model(model)
        assert set(sio.get_untrusted_types(data=blob)) <= set(TRUSTED_TYPES), family
        loaded = load_model(blob)
        assert (loaded.predict(features) == model.predict(features)).all(), family


def test_an_artifact_with_other_types_is_refused() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    features = frame()[["x", "n"]]
    model = HistGradientBoostingClassifier(max_iter=3).fit(features, (features["x"] > 0).astype(int))
    with pytest.raises(UntrustedArtifactError, match="TreePredictor"):
        load_model(dump_model(model))
