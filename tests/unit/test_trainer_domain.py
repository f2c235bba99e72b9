"""Trainer domain: fingerprint, holdout, task inference, the search (no I/O)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gyre_trainer.domain.dataset import DatasetError, TrainingSet, fingerprint
from gyre_trainer.domain.holdout import split_holdout
from gyre_trainer.domain.search import SearchCancelled, SearchConfig, TrialResult, run_search
from gyre_trainer.domain.space import FAMILIES, resolve_families
from gyre_trainer.domain.task import Task, check_objective, infer_task, is_better
from gyre_trainer.testing import breast_cancer_training_set


@pytest.fixture(scope="module")
def data() -> TrainingSet:
    return breast_cancer_training_set()


def shuffled(data: TrainingSet, seed: int) -> TrainingSet:
    order = np.random.default_rng(seed).permutation(data.rows)
    moved = data.take(order)
    # Column order must not matter either.
    columns = list(reversed(moved.feature_names))
    return TrainingSet(moved.features[columns], moved.label, moved.entity_ids, moved.event_times)


def test_fingerprint_is_deterministic_and_independent_of_row_and_column_order(data: TrainingSet) -> None:
    first = fingerprint(data)
    assert len(first) == 64 and first == first.lower()
    assert fingerprint(data) == first
    assert fingerprint(shuffled(data, 1)) == first


def test_fingerprint_changes_with_any_value(data: TrainingSet) -> None:
    changed = data.features.copy()
    changed.iloc[10, 3] += 1e-9
    assert fingerprint(TrainingSet(changed, data.label, data.entity_ids, data.event_times)) != fingerprint(data)
    relabelled = data.label.copy()
    relabelled.iloc[0] = "benign" if relabelled.iloc[0] == "malignant" else "malignant"
    assert fingerprint(TrainingSet(data.features, relabelled, data.entity_ids, data.event_times)) != fingerprint(data)
    later = data.event_times + pd.Timedelta(seconds=1)
    assert fingerprint(TrainingSet(data.features, data.label, data.entity_ids, later)) != fingerprint(data)


def test_fingerprint_treats_every_nan_alike() -> None:
    times = pd.Series(pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True))
    ids = pd.Series(["a", "b"])
    label = pd.Series([0, 1], name="y")
    one = TrainingSet(pd.DataFrame({"x": [np.nan, 1.0]}), label, ids, times)
    other_nan = np.frombuffer(np.uint64(0x7FF8000000000001).tobytes(), dtype=np.float64)[0]
    two = TrainingSet(pd.DataFrame({"x": [other_nan, 1.0]}), label, ids, times)
    assert fingerprint(one) == fingerprint(two)


def test_holdout_is_stratified_seeded_and_order_independent(data: TrainingSet) -> None:
    split = split_holdout(data, seed=7, fraction=0.2, stratify=True)
    assert split.holdout.rows == round(data.rows * 0.2) or abs(split.holdout.rows - data.rows * 0.2) < 1
    assert split.development.rows + split.holdout.rows == data.rows
    assert not set(split.development.entity_ids) & set(split.holdout.entity_ids)
    share = (split.holdout.label == "malignant").mean()
    assert share == pytest.approx((data.label == "malignant").mean(), abs=0.02)
    again = split_holdout(shuffled(data, 3), seed=7, fraction=0.2, stratify=True)
    assert list(again.holdout.entity_ids) == list(split.holdout.entity_ids)
    assert again.holdout_digest == split.holdout_digest
    other = split_holdout(data, seed=8, fraction=0.2, stratify=True)
    assert other.holdout_digest != split.holdout_digest


def test_holdout_refuses_a_class_with_one_row() -> None:
    rows = 10
    data = TrainingSet(pd.DataFrame({"x": np.arange(rows, dtype=float)}),
                       pd.Series(["a"] * (rows - 1) + ["b"], name="y"),
                       pd.Series([str(i) for i in range(rows)]),
                       pd.Series(pd.date_range("2026-01-01", periods=rows, freq="h", tz="UTC")))
    with pytest.raises(DatasetError, match="fewer than 2 rows"):
        split_holdout(data, seed=1, fraction=0.2, stratify=True)


@pytest.mark.parametrize(("values", "task"), [
    (["yes", "no"], Task.CLASSIFICATION),
    ([True, False], Task.CLASSIFICATION),
    ([0, 1, 1, 0], Task.CLASSIFICATION),
    ([0.0, 1.0, 1.0], Task.CLASSIFICATION),
    (list(np.linspace(0, 1, 50)), Task.REGRESSION),
])
def test_infer_task(values: list[object], task: Task) -> None:
    assert infer_task(pd.Series(values)) is task


def test_objective_and_direction() -> None:
    assert check_objective(Task.CLASSIFICATION, "") == "roc_auc"
    assert check_objective(Task.REGRESSION, "") == "rmse"
    with pytest.raises(DatasetError):
        check_objective(Task.CLASSIFICATION, "rmse")
    assert is_better("roc_auc", 0.9, 0.8) and not is_better("roc_auc", 0.8, 0.8)
    assert is_better("rmse", 1.0, 2.0)
    with pytest.raises(DatasetError):
        resolve_families(Task.CLASSIFICATION, ["ridge"])


def test_search_runs_every_trial_and_is_reproducible(data: TrainingSet) -> None:
    split = split_holdout(data, seed=42, fraction=0.2, stratify=True)
    config = SearchConfig(Task.CLASSIFICATION, ("logistic_regression", "extra_trees"), "roc_auc", max_evals=6,
                          seed=42)
    seen: list[TrialResult] = []
    first = run_search(split.development, config, on_trial=seen.append)
    assert [t.number for t in seen] == [1, 2, 3, 4, 5, 6]
    assert all(t.ok for t in first.trials)
    assert {"accuracy", "f1", "roc_auc", "log_loss"} <= set(first.trials[0].metrics)
    assert first.best is not None and first.best.loss == min(t.loss for t in first.trials)
    second = run_search(split.development, config)
    assert [t.params for t in second.trials] == [t.params for t in first.trials]
    assert [t.loss for t in second.trials] == pytest.approx([t.loss for t in first.trials])


def test_automl_space_spans_every_family() -> None:
    assert set(FAMILIES[Task.CLASSIFICATION]) == {"logistic_regression", "random_forest", "extra_trees",
                                                  "gradient_boosting"}
    assert resolve_families(Task.CLASSIFICATION, []) == FAMILIES[Task.CLASSIFICATION]


def test_search_stops_when_cancelled(data: TrainingSet) -> None:
    split = split_holdout(data, seed=1, fraction=0.2, stratify=True)
    config = SearchConfig(Task.CLASSIFICATION, ("logistic_regression",), "roc_auc", max_evals=10, seed=1)
    seen: list[TrialResult] = []
    with pytest.raises(SearchCancelled):
        run_search(split.development, config, on_trial=seen.append, should_stop=lambda: len(seen) >= 2)
    assert len(seen) == 2


def test_regression_search() -> None:
    rng = np.random.default_rng(0)
    rows = 120
    x = rng.normal(size=(rows, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.1, size=rows)
    data = TrainingSet(pd.DataFrame(x, columns=["a", "b", "c"]), pd.Series(y, name="y"),
                       pd.Series([str(i) for i in range(rows)]),
                       pd.Series(pd.date_range("2026-01-01", periods=rows, freq="h", tz="UTC")))
    split = split_holdout(data, seed=3, fraction=0.25, stratify=False)
    outcome = run_search(split.development, SearchConfig(Task.REGRESSION, ("ridge",), "rmse", 5, seed=3))
    assert outcome.best is not None and outcome.best.metrics["r2"] > 0.9
