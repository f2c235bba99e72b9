"""The one interface every training backend implements (scikit-learn, torch text models, the next one).

A backend is what changes between frameworks; the job around it does not: loading the training
set, the entity-hash holdout, hyperopt's TPE loop (:func:`gyre_trainer.domain.search.run_search`),
tracking every trial, re-scoring the champion on the same holdout, registering with lineage. So a
new framework is one more subclass of :class:`TrainerBackend` and one line in
:mod:`gyre_trainer.domain.backends`.

The steps a job takes through a backend, in order:

1. :meth:`~TrainerBackend.check` the training set (e.g. the text feature exists), once;
2. :meth:`~TrainerBackend.families` and :meth:`~TrainerBackend.search_space`: what TPE searches;
3. :meth:`~TrainerBackend.prepare` the development rows once (folds, cached encoder states), then
   per trial :meth:`~TrainerBackend.normalise` the point and :meth:`~TrainerBackend.score_trial`;
4. :meth:`~TrainerBackend.fit_final` the best point on every development row;
5. :meth:`~TrainerBackend.evaluate` it on the holdout (and a champion :meth:`~TrainerBackend.load`-ed
   from its artifact, by the backend that owns the champion's format);
6. :meth:`~TrainerBackend.serialise` (checked loadable), :meth:`~TrainerBackend.signature`,
   :meth:`~TrainerBackend.reference_profile`, :meth:`~TrainerBackend.describe` and
   :meth:`~TrainerBackend.model_tags` for the registration.

Everything is synchronous and CPU-bound (the runner calls it from worker threads); nothing does I/O
beyond reading an installed package's files (a pretrained encoder).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pandas as pd

from gyre_common.profile import ReferenceProfile
from gyre_trainer.domain.dataset import TrainingSet
from gyre_trainer.domain.search import SearchConfig, TrialScore
from gyre_trainer.domain.signature import Signature
from gyre_trainer.domain.task import Task


class TrainerBackend(ABC):
    """One framework's way of searching, fitting, scoring and packaging a model.

    Attributes:
        name: the name a TrainingRequest's ``backend`` gives (``sklearn``, ``torch-text``); also the
            version's ``gyre.backend`` tag.
        model_format: the registry's ``ArtifactRef.format`` of what :meth:`serialise` writes.
    """

    name: ClassVar[str]
    model_format: ClassVar[str]

    @abstractmethod
    def check(self, data: TrainingSet, task: Task) -> None:
        """Refuse a training set this backend cannot train on.

        Raises:
            DatasetError: why (permanent: the job fails with that reason).
        """

    @abstractmethod
    def families(self, task: Task, requested: Sequence[str]) -> tuple[str, ...]:
        """The model families to search: ``requested`` validated, or the backend's default.

        Raises:
            DatasetError: a requested family is unknown.
        """

    @abstractmethod
    def search_space(self, config: SearchConfig) -> Any:
        """The hyperopt space of ``config`` (labels unique within it)."""

    @abstractmethod
    def normalise(self, point: Mapping[str, Any]) -> dict[str, Any]:
        """A point of the space as plain Python values (what is logged and registered)."""

    @abstractmethod
    def prepare(self, development: TrainingSet, config: SearchConfig) -> Any:
        """What every trial of a search shares (folds, cached inputs), computed once.

        Raises:
            DatasetError: too few rows to score trials.
        """

    @abstractmethod
    def score_trial(self, prepared: Any, params: Mapping[str, Any], config: SearchConfig) -> TrialScore:
        """Fit and score one point on the development rows (never the holdout), seeded by
        ``config.seed``. A ValueError or ArithmeticError fails this trial only."""

    @abstractmethod
    def fit_final(self, prepared: Any, params: Mapping[str, Any], config: SearchConfig) -> Any:
        """The model of ``params`` fitted on every development row."""

    @abstractmethod
    def evaluate(self, model: Any, features: pd.DataFrame, label: pd.Series, task: Task) -> dict[str, float]:
        """Metrics of ``model`` (as :meth:`fit_final` or :meth:`load` returns it) on labelled rows
        (:func:`gyre_trainer.domain.evaluation.evaluate`'s names)."""

    @abstractmethod
    def serialise(self, model: Any) -> bytes:
        """The artifact bytes, checked loadable by :meth:`load` (what serving will do).

        Raises:
            UntrustedArtifactError or ValueError: the bytes would not load.
        """

    @abstractmethod
    def load(self, blob: bytes) -> Any:
        """A model from artifact bytes of :attr:`model_format` (a champion to re-score)."""

    @abstractmethod
    def input_names(self, data: TrainingSet) -> list[str]:
        """The model's inputs among the training set's features, in signature order."""

    @abstractmethod
    def signature(self, data: TrainingSet, task: Task, model: Any) -> Signature:
        """The version's inputs and outputs in Open Inference Protocol terms."""

    @abstractmethod
    def reference_profile(self, inputs: pd.DataFrame, *, model_name: str, dataset_fingerprint: str,
                          max_values: int, seed: int) -> ReferenceProfile:
        """The monitor's reference profile of the model's training inputs (version 0).

        Raises:
            ProfileError: no input can be monitored (the version is registered without a profile).
        """

    @abstractmethod
    def describe(self, params: Mapping[str, Any]) -> str:
        """A few words naming the model of ``params`` (the version's description starts with them)."""

    def model_tags(self, model: Any) -> dict[str, str]:
        """Backend-specific tags of the version (beside ``gyre.backend``); none by default."""
        return {}
