"""Trainer domain: fingerprint, holdout, task inference, the search (no I/O)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gyre_trainer.domain.dataset import DatasetError, TrainingSet, fingerprint
from gyre_trainer.domain.holdout import HoldoutSplit, entity_bucket, holdout_id, split_holdout
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


def split_of(data: TrainingSet, fraction: float = 0.2, classification: bool = True) -> HoldoutSplit:
    return split_holdout(data, fraction=fraction, feature_view="patients", label="diagnosis",
                         classification=classification)


def test_holdout_is_an_entity_hash_rule_independent_of_order_and_window(data: TrainingSet) -> None:
    whole = split_of(data)
    assert abs(whole.holdout.rows - data.rows * 0.2) < data.rows * 0.06  # ~20% of the entities
    assert whole.development.rows + whole.holdout.rows == data.rows
    assert not set(whole.development.entity_ids) & set(whole.holdout.entity_ids)
    assert all(entity_bucket(str(e)) < 2000 for e in whole.holdout.entity_ids)
    again = split_of(shuffled(data, 3))
    assert list(again.holdout.entity_ids) == list(whole.holdout.entity_ids)
    assert again.rows_digest == whole.rows_digest
    # Another window of the same data: other rows, the same rule and id, and an entity held out in
    # one window is held out in every window (no version trains on a holdout entity).
    newer = split_of(data.take(np.arange(200, data.rows)))
    assert newer.holdout_id == whole.holdout_id and newer.rows_digest != whole.rows_digest
    assert set(newer.holdout.entity_ids) <= set(whole.holdout.entity_ids)
    assert not set(newer.development.entity_ids) & set(whole.holdout.entity_ids)
    # The id names the definition: fraction, view and label change it.
    assert holdout_id(feature_view="patients", label="diagnosis", fraction=0.2) == whole.holdout_id
    assert len({whole.holdout_id, split_of(data, 0.3).holdout_id,
                holdout_id(feature_view="other", label="diagnosis", fraction=0.2),
                holdout_id(feature_view="patients", label="other", fraction=0.2)}) == 4


def test_holdout_refuses_a_class_without_two_development_rows() -> None:
    rows = 40
    data = TrainingSet(pd.DataFrame({"x": np.arange(rows, dtype=float)}),
                       pd.Series(["a"] * (rows - 1) + ["b"], name="y"),
                       pd.Series([str(i) for i in range(rows)]),
                       pd.Series(pd.date_range("2026-01-01", periods=rows, freq="h", tz="UTC")))
    with pytest.raises(DatasetError, match="fewer than 2"):
        split_of(data)


def test_holdout_refuses_too_few_entities() -> None:
    data = TrainingSet(pd.DataFrame({"x": [1.0, 2.0]}), pd.Series([1.0, 2.0], name="y"),
                       pd.Series(["same", "same"]),
                       pd.Series(pd.date_range("2026-01-01", periods=2, freq="h", tz="UTC")))
    with pytest.raises(DatasetError, match="more entities"):
        split_of(data, classification=False)


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
    split = split_of(data, 0.2)
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
    split = split_of(data, 0.2)
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
    split = split_of(data, 0.25, classification=False)
    outcome = run_search(split.development, SearchConfig(Task.REGRESSION, ("ridge",), "rmse", 5, seed=3))
    assert outcome.best is not None and outcome.best.metrics["r2"] > 0.9
