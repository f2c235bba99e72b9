"""Trainer backends: one interface, the scikit-learn adapter unchanged, the torch-text adapter
(fit, seed determinism, per-epoch curves, artifact round trip, signature, regression units)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from gyre_ml.text_model import MODEL_FORMAT, load_text_model
from gyre_trainer.domain.backends import TextOptions, backend_for, backend_for_format
from gyre_trainer.domain.backends.sklearn import SklearnBackend
from gyre_trainer.domain.backends.torch_text import TorchTextBackend
from gyre_trainer.domain.dataset import DatasetError, TrainingSet
from gyre_trainer.domain.holdout import HoldoutSplit, split_holdout
from gyre_trainer.domain.jobs import InvalidRequest, TrainingReason, TrainingRequest, validate_request
from gyre_trainer.domain.search import SearchConfig, run_search
from gyre_trainer.domain.task import Task
from gyre_trainer.testing import breast_cancer_training_set, topic_texts, topic_training_set

OPTIONS = TextOptions(max_epochs=3, max_length=32)


def split_of(data: TrainingSet, classification: bool = True) -> HoldoutSplit:
    return split_holdout(data, fraction=0.25, feature_view="reviews", label=str(data.label.name),
                         classification=classification)


def text_config(max_evals: int = 2, seed: int = 5, objective: str = "accuracy") -> SearchConfig:
    return SearchConfig(Task.CLASSIFICATION, ("text_head",), objective, max_evals, seed=seed)


# -- the interface and the sklearn adapter ---------------------------------------------------------


def test_backends_by_name_and_by_artifact_format() -> None:
    assert isinstance(backend_for(""), SklearnBackend) and isinstance(backend_for("sklearn"), SklearnBackend)
    assert isinstance(backend_for("torch-text", text=OPTIONS), TorchTextBackend)
    assert backend_for("torch-text").model_format == MODEL_FORMAT == "safetensors-text"
    with pytest.raises(ValueError, match="unknown training backend 'jax'"):
        backend_for("jax")
    assert isinstance(backend_for_format(""), SklearnBackend)
    assert isinstance(backend_for_format("skops"), SklearnBackend)
    assert isinstance(backend_for_format("safetensors-text"), TorchTextBackend)


def test_the_sklearn_adapter_is_the_default_search() -> None:
    split = split_of(breast_cancer_training_set())
    config = SearchConfig(Task.CLASSIFICATION, ("logistic_regression", "extra_trees"), "roc_auc", max_evals=3, seed=4)
    default = run_search(split.development, config)
    explicit = run_search(split.development, config, backend=SklearnBackend())
    assert [t.params for t in explicit.trials] == [t.params for t in default.trials]
    assert [t.loss for t in explicit.trials] == [t.loss for t in default.trials]
    assert all(t.history == () for t in default.trials)  # no epochs: no curves


@pytest.mark.parametrize(("change", "field"), [
    ({"backend": "jax"}, "backend"),
    ({"backend": "sklearn", "text_feature": "review"}, "text_feature"),
    ({"backend": "torch-text", "families": ("ridge",)}, "search.estimator_families"),
    ({"families": ("text_head",)}, "search.estimator_families"),
])
def test_requests_name_a_known_backend_and_its_families(change: dict[str, object], field: str) -> None:
    from gyre_trainer.domain.jobs import SearchSpec

    families = change.pop("families", ())
    request = TrainingRequest("r", "m", "v", "topic", TrainingReason.MANUAL,
                              search=SearchSpec(estimator_families=families), **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest) as info:
        validate_request(request, max_max_evals=10)
    assert info.value.field == field


def test_torch_text_requests_validate() -> None:
    from gyre_trainer.domain.jobs import SearchSpec

    for request in (TrainingRequest("r", "m", "v", "topic", TrainingReason.MANUAL, backend="torch-text",
                                    text_feature="review", search=SearchSpec(estimator_families=("text_head",))),
                    TrainingRequest("r", "m", "v", "topic", TrainingReason.MANUAL, text_feature="review")):
        validate_request(request, max_max_evals=10)


# -- torch-text --------------------------------------------------------------------------------------


def test_the_text_feature_is_the_named_one_or_the_only_one() -> None:
    data = topic_training_set(24)
    backend = TorchTextBackend(TextOptions())
    backend.check(data, Task.CLASSIFICATION)
    assert backend.text_feature == "review"  # "stars" is numeric
    with pytest.raises(DatasetError, match="'stars' does not hold text"):
        TorchTextBackend(TextOptions(text_feature="stars")).check(data, Task.CLASSIFICATION)
    with pytest.raises(DatasetError, match="not a feature"):
        TorchTextBackend(TextOptions(text_feature="title")).check(data, Task.CLASSIFICATION)
    two = TrainingSet(data.features.assign(title=data.features["review"]), data.label, data.entity_ids,
                      data.event_times)
    with pytest.raises(DatasetError, match="2 text features"):
        TorchTextBackend(TextOptions()).check(two, Task.CLASSIFICATION)
    with pytest.raises(DatasetError, match="unknown families"):
        backend.families(Task.CLASSIFICATION, ["random_forest"])


def _search(seed: int) -> tuple[TorchTextBackend, object, list[object], HoldoutSplit]:
    data = topic_training_set(48)
    split = split_of(data)
    backend = TorchTextBackend(OPTIONS)
    backend.check(data, Task.CLASSIFICATION)
    outcome = run_search(split.development, text_config(seed=seed), backend=backend)
    assert outcome.best is not None
    model = backend.fit_final(outcome.prepared, outcome.best.params, text_config(seed=seed))
    return backend, model, list(outcome.trials), split


def test_a_search_tracks_curves_and_the_model_learns_the_topics() -> None:
    backend, model, trials, split = _search(seed=5)
    assert len(trials) == 2 and all(t.ok for t in trials)  # type: ignore[attr-defined]
    for trial in trials:
        params, history = trial.params, trial.history  # type: ignore[attr-defined]
        assert set(params) == {"family", "learning_rate", "epochs", "layers_unfrozen", "dropout", "hidden_units"}
        assert 1 <= params["epochs"] <= OPTIONS.max_epochs and params["layers_unfrozen"] in (0, 1, 2)
        # One point per epoch, steps 1..epochs, with the training loss and the validation metrics.
        assert [point.epoch for point in history] == list(range(1, params["epochs"] + 1))
        assert all({"train_loss", "val_accuracy", "val_f1", "val_log_loss"} <= set(point.metrics)
                   for point in history)
        assert trial.metrics == {name[4:]: value for name, value in history[-1].metrics.items()  # type: ignore[attr-defined]
                                 if name.startswith("val_")}
    holdout = backend.evaluate(model, split.holdout.features, split.holdout.label, Task.CLASSIFICATION)
    assert holdout["accuracy"] >= 0.9, holdout
    texts, topics = topic_texts(10, seed=99)  # unseen texts
    predicted = model.predict(pd.DataFrame({"review": texts}))  # type: ignore[attr-defined]
    assert (predicted == np.asarray(topics)).mean() >= 0.9


def test_the_same_seed_gives_the_same_trials_and_weights() -> None:
    _, first, first_trials, _ = _search(seed=8)
    _, second, second_trials, _ = _search(seed=8)
    assert [t.params for t in first_trials] == [t.params for t in second_trials]  # type: ignore[attr-defined]
    assert [[p.metrics for p in t.history] for t in first_trials] == \
        [[p.metrics for p in t.history] for t in second_trials]  # type: ignore[attr-defined]
    a, b = first.model.trained_state(), second.model.trained_state()  # type: ignore[attr-defined]
    assert set(a) == set(b) and all(torch.equal(a[name], b[name]) for name in a)


def test_the_artifact_round_trips_with_a_bytes_signature() -> None:
    backend, model, _, split = _search(seed=5)
    data = topic_training_set(48)
    blob = backend.serialise(model)
    assert blob[:8] != b"\x80\x04" and b"gyre-text-model/1" in blob[:4096]  # safetensors, not a pickle
    loaded = backend.load(blob)
    frame = split.holdout.features
    np.testing.assert_allclose(loaded.predict_proba(frame), model.predict_proba(frame), atol=1e-6)  # type: ignore[attr-defined]
    assert load_text_model(blob).config.extra["input"] == "review"
    signature = backend.signature(data, Task.CLASSIFICATION, model)
    assert [(t.name, t.datatype, t.shape) for t in signature.inputs] == [("review", "BYTES", (-1,))]
    assert [(t.name, t.datatype, t.shape) for t in signature.outputs] == [("predict", "BYTES", (-1,)),
                                                                          ("proba", "FP32", (-1, 2))]
    assert signature.classes == ("cooking", "sport")
    assert backend.input_names(data) == ["review"]
    tags = backend.model_tags(model)
    assert tags["gyre.text_feature"] == "review" and len(tags["gyre.encoder.sha256"]) == 64


def test_regression_predicts_in_the_labels_units() -> None:
    data = topic_training_set(48)
    # A score far from 0 with a large spread: trained standardised, the artifact must undo it.
    values = np.where(data.label == "sport", 900.0, 1100.0) + np.random.default_rng(0).normal(0, 5, data.rows)
    regression = TrainingSet(data.features, pd.Series(values, name="score"), data.entity_ids, data.event_times)
    split = split_of(regression, classification=False)
    backend = TorchTextBackend(OPTIONS)
    backend.check(regression, Task.REGRESSION)
    config = SearchConfig(Task.REGRESSION, ("text_head",), "rmse", 2, seed=3)
    outcome = run_search(split.development, config, backend=backend)
    assert outcome.best is not None and "val_rmse" in outcome.best.history[-1].metrics
    model = backend.fit_final(outcome.prepared, outcome.best.params, config)
    metrics = backend.evaluate(model, split.holdout.features, split.holdout.label, Task.REGRESSION)
    assert metrics["rmse"] < float(np.std(values)), metrics  # better than the mean, in the label's units
    loaded = backend.load(backend.serialise(model))
    np.testing.assert_allclose(loaded.predict(split.holdout.features), model.predict(split.holdout.features),
                               rtol=1e-5)
    signature = backend.signature(regression, Task.REGRESSION, model)
    assert [(t.name, t.datatype) for t in signature.outputs] == [("predict", "FP32")] and not signature.classes
