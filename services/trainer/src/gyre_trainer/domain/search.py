"""The hyperparameter search: hyperopt TPE over the space of :mod:`.space`, each trial scored by
stratified k-fold cross-validation on the development rows, then the winner refitted on all of
them and judged on the holdout.

CPU-bound and synchronous: the service runs it in a worker thread. It reports each trial through
a callback and checks a cancel flag before each trial.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, tpe
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from gyre_trainer.domain.dataset import DatasetError, TrainingSet
from gyre_trainer.domain.evaluation import evaluate, mean_metrics
from gyre_trainer.domain.space import build_pipeline, normalise_params, search_space
from gyre_trainer.domain.task import Task, loss_of


class SearchCancelled(Exception):
    """The search stopped because the job was cancelled."""


class SearchFailed(Exception):
    """No trial of the search succeeded; the message carries the last trial's error."""


@dataclass(frozen=True)
class SearchConfig:
    """How one search runs.

    Attributes:
        task: classification or regression.
        families: estimator families to search (validated, non-empty).
        objective: metric the search optimises (validation mean over the folds).
        max_evals: number of trials, at least 1.
        seed: seed of TPE, the folds and every estimator.
        cv_folds: folds of the cross-validation of each trial (at least 2).
        timeout_s: wall-clock budget of the whole search in seconds; None means none.
    """

    task: Task
    families: tuple[str, ...]
    objective: str
    max_evals: int
    seed: int
    cv_folds: int = 3
    timeout_s: float | None = None


@dataclass(frozen=True)
class TrialResult:
    """One finished trial.

    Attributes:
        number: 1-based trial number.
        params: the point of the space (``family`` and its hyperparameters), plain values.
        metrics: validation metrics (mean over the folds), by name without prefix.
        loss: what TPE minimised (the objective, negated when higher is better); inf if failed.
        error: why the trial failed; empty when it succeeded.
        duration_s: wall-clock seconds the trial took.
    """

    number: int
    params: dict[str, Any]
    metrics: dict[str, float]
    loss: float
    error: str = ""
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the trial succeeded."""
        return not self.error


@dataclass
class SearchOutcome:
    """What a search produced.

    Attributes:
        trials: every trial, in order.
        best: the successful trial with the lowest loss (the first one on ties).
    """

    trials: list[TrialResult] = field(default_factory=list)
    best: TrialResult | None = None


TrialCallback = Callable[[TrialResult], None]


def params_as_strings(params: Mapping[str, Any]) -> dict[str, str]:
    """Hyperparameters as strings (MLflow's param convention); None becomes "None"."""
    return {key: _format(value) for key, value in sorted(params.items())}


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(round(value, 10))
    return str(value)


def run_search(development: TrainingSet, config: SearchConfig, *, on_trial: TrialCallback | None = None,
               should_stop: Callable[[], bool] | None = None) -> SearchOutcome:
    """Run the search on ``development`` and return every trial and the best one.

    Args:
        development: the rows to cross-validate on (the holdout is not among them).
        config: task, families, objective, trials, seed.
        on_trial: called (in the calling thread) after each trial, successful or not; an exception
            it raises stops the search and propagates.
        should_stop: polled before each trial; True raises :class:`SearchCancelled`.

    Raises:
        SearchCancelled: ``should_stop`` said so.
        SearchFailed: every trial failed.
        DatasetError: too few rows for the folds.
    """
    folds = _folds(development, config)
    outcome = SearchOutcome()
    features, label = development.features, development.label

    def objective(point: dict[str, Any]) -> dict[str, Any]:
        if should_stop is not None and should_stop():
            raise SearchCancelled("cancelled")
        number = len(outcome.trials) + 1
        params = normalise_params(point)
        started = time.monotonic()
        try:
            scores = []
            for train_idx, valid_idx in folds:
                model = build_pipeline(config.task, params, development.kinds, config.seed)
                model.fit(features.iloc[train_idx], label.iloc[train_idx])
                scores.append(evaluate(model, features.iloc[valid_idx], label.iloc[valid_idx], config.task))
            metrics = mean_metrics(scores)
            if config.objective not in metrics:
                raise ValueError(f"objective {config.objective} is undefined on the validation folds")
            trial = TrialResult(number, params, metrics, loss_of(config.objective, metrics[config.objective]),
                                duration_s=time.monotonic() - started)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            # A bad point of the space fails its trial, not the search.
            trial = TrialResult(number, params, {}, float("inf"), error=f"{type(exc).__name__}: {exc}",
                                duration_s=time.monotonic() - started)
        outcome.trials.append(trial)
        if trial.ok and (outcome.best is None or trial.loss < outcome.best.loss):
            outcome.best = trial
        if on_trial is not None:
            on_trial(trial)
        if not trial.ok:
            return {"status": STATUS_FAIL, "loss": None}
        return {"status": STATUS_OK, "loss": trial.loss}

    space = search_space(config.task, config.families)
    # TPE needs a few random points before it can model the space; with short searches keep that
    # phase short so most trials are still guided.
    startup = max(2, min(20, config.max_evals // 3))
    fmin(
        objective,
        space,
        algo=partial(tpe.suggest, n_startup_jobs=startup),
        max_evals=config.max_evals,
        trials=Trials(),
        rstate=np.random.default_rng(config.seed % 2**32),
        timeout=config.timeout_s,
        show_progressbar=False,
    )
    if outcome.best is None:
        last = outcome.trials[-1].error if outcome.trials else "no trial ran"
        raise SearchFailed(f"every trial of the search failed; last error: {last}")
    return outcome


def fit_best(development: TrainingSet, config: SearchConfig, best: TrialResult) -> Pipeline:
    """The pipeline of ``best`` refitted on all development rows."""
    model = build_pipeline(config.task, best.params, development.kinds, config.seed)
    model.fit(development.features, development.label)
    return model


def _folds(data: TrainingSet, config: SearchConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    positions = np.arange(data.rows)
    if config.task is Task.CLASSIFICATION:
        smallest = int(data.label.value_counts().min())
        if smallest < config.cv_folds:
            raise DatasetError(f"the rarest label class has {smallest} development rows, fewer than the "
                               f"{config.cv_folds} cross-validation folds")
        splitter: Any = StratifiedKFold(config.cv_folds, shuffle=True, random_state=config.seed % 2**32)
        return list(splitter.split(positions, data.label.to_numpy()))
    if data.rows < config.cv_folds * 2:
        raise DatasetError(f"{data.rows} development rows are too few for {config.cv_folds} folds")
    splitter = KFold(config.cv_folds, shuffle=True, random_state=config.seed % 2**32)
    return list(splitter.split(positions))

