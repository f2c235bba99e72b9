"""The hyperparameter search: hyperopt's TPE over a backend's space, each trial scored by the
backend on the development rows, then the winner refitted on all of them and judged on the holdout.

The machinery here (TPE, its seed, trial numbering, failed trials, cancellation, the time budget)
is shared by every backend (:mod:`gyre_trainer.domain.backends`); a backend supplies the space and
what one trial does. Without one, the search is scikit-learn's: each point of the space of
:mod:`.space` scored by stratified k-fold cross-validation.

CPU-bound and synchronous: the service runs it in a worker thread. It reports each trial through
a callback and checks a cancel flag before each trial.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, tpe
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from gyre_trainer.domain.dataset import DatasetError, TrainingSet
from gyre_trainer.domain.task import Task, loss_of

if TYPE_CHECKING:
    from gyre_trainer.domain.backends.base import TrainerBackend


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
class EpochMetrics:
    """Metrics after one epoch of a trial that trains in epochs (a learning curve's point).

    Attributes:
        epoch: 1-based epoch number (the tracking step).
        metrics: by full tracking name, e.g. ``train_loss``, ``val_accuracy``.
        at: when the epoch ended, aware UTC.
    """

    epoch: int
    metrics: dict[str, float]
    at: datetime


@dataclass(frozen=True)
class TrialScore:
    """What a backend measured for one trial: validation metrics (by name without prefix) and,
    for backends that train in epochs, the curve (one :class:`EpochMetrics` per epoch)."""

    metrics: dict[str, float]
    history: tuple[EpochMetrics, ...] = ()


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
        history: per-epoch metrics (tracked as metric history, step = epoch); empty for backends
            that do not train in epochs (scikit-learn).
    """

    number: int
    params: dict[str, Any]
    metrics: dict[str, float]
    loss: float
    error: str = ""
    duration_s: float = 0.0
    history: tuple[EpochMetrics, ...] = ()

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
        prepared: what the backend computed once for every trial (folds, cached encoder states),
            which the final fit of the best trial reuses.
    """

    trials: list[TrialResult] = field(default_factory=list)
    best: TrialResult | None = None
    prepared: Any = None


TrialCallback = Callable[[TrialResult], None]


def params_as_strings(params: Mapping[str, Any]) -> dict[str, str]:
    """Hyperparameters as strings (MLflow's param convention); None becomes "None"."""
    return {key: _format(value) for key, value in sorted(params.items())}


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(round(value, 10))
    return str(value)


def run_search(development: TrainingSet, config: SearchConfig, *, on_trial: TrialCallback | None = None,
               should_stop: Callable[[], bool] | None = None,
               backend: TrainerBackend | None = None) -> SearchOutcome:
    """Run the search on ``development`` and return every trial and the best one.

    Args:
        development: the rows to search on (the holdout is not among them).
        config: task, families, objective, trials, seed.
        on_trial: called (in the calling thread) after each trial, successful or not; an exception
            it raises stops the search and propagates.
        should_stop: polled before each trial; True raises :class:`SearchCancelled`.
        backend: what a trial is (its space, how it is scored); None is scikit-learn's.

    Raises:
        SearchCancelled: ``should_stop`` said so.
        SearchFailed: every trial failed.
        DatasetError: too few rows for the folds (or the backend's validation split).
    """
    if backend is None:
        from gyre_trainer.domain.backends.sklearn import SklearnBackend

        backend = SklearnBackend()
    prepared = backend.prepare(development, config)
    outcome = SearchOutcome(prepared=prepared)

    def objective(point: dict[str, Any]) -> dict[str, Any]:
        if should_stop is not None and should_stop():
            raise SearchCancelled("cancelled")
        number = len(outcome.trials) + 1
        params = backend.normalise(point)
        started = time.monotonic()
        try:
            score = backend.score_trial(prepared, params, config)
            if config.objective not in score.metrics:
                raise ValueError(f"objective {config.objective} is undefined on the validation rows")
            loss = loss_of(config.objective, score.metrics[config.objective])
            trial = TrialResult(number, params, score.metrics, loss, duration_s=time.monotonic() - started,
                                history=score.history)
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

    space = backend.search_space(config)
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
    """The scikit-learn pipeline of ``best`` refitted on all development rows."""
    from gyre_trainer.domain.space import build_pipeline

    model = build_pipeline(config.task, best.params, development.kinds, config.seed)
    model.fit(development.features, development.label)
    return model


def cv_folds(data: TrainingSet, config: SearchConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """The cross-validation folds of a scikit-learn search: stratified for classification, shuffled
    and seeded by ``config.seed``.

    Raises:
        DatasetError: the rarest class has fewer rows than folds, or too few rows for the folds.
    """
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
