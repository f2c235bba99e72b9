"""The storage interface of the tracking service.

Handlers open a :class:`TrackingSession` from a :class:`TrackingStore`: ``session()`` for reads
and single-statement writes, ``transaction()`` when several writes must commit together (an
error inside the ``async with`` rolls them all back). Every datetime in and out is aware UTC.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime

from gyre_tracking.domain.model import (
    Experiment,
    LifecycleStage,
    Metric,
    NewRun,
    Run,
    RunArtifact,
    RunInfo,
    ViewType,
)
from gyre_tracking.domain.search import Expr, OrderKey, SearchQuery


@dataclass(frozen=True)
class RunHandle:
    """A stored run as writers need it: its internal key and its current info.

    Attributes:
        pk: internal key of the run (never leaves the store's callers).
        info: the run's info as stored.
    """

    pk: int
    info: RunInfo


class TrackingSession(abc.ABC):
    """Operations on the tracking tables over one connection (see the module docstring)."""

    # -- experiments -------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_experiment(self, name: str, artifact_location: str | None, artifact_root: str,
                                tags: Mapping[str, str]) -> Experiment:
        """Create an experiment; ``artifact_location`` None puts it at ``<artifact_root>/<id>``.

        Raises:
            AlreadyExists: an experiment (active or deleted) has this name.
        """

    @abc.abstractmethod
    async def ensure_experiment(self, name: str, artifact_root: str, *, experiment_id: str | None = None
                                ) -> Experiment:
        """The experiment called ``name``, created (with ``experiment_id`` if given) when missing.
        Safe under concurrent callers."""

    @abc.abstractmethod
    async def get_experiment(self, experiment_id: str) -> Experiment | None:
        """One experiment by id, or None."""

    @abc.abstractmethod
    async def get_experiment_by_name(self, name: str) -> Experiment | None:
        """One experiment by exact name, or None."""

    @abc.abstractmethod
    async def list_experiments(self, limit: int, offset: int) -> list[Experiment]:
        """Active experiments ordered by id."""

    @abc.abstractmethod
    async def missing_experiments(self, experiment_ids: Sequence[str]) -> list[str]:
        """Those of ``experiment_ids`` that do not exist."""

    @abc.abstractmethod
    async def search_experiments(self, view: ViewType, comparisons: Sequence[Expr], order_by: Sequence[OrderKey],
                                 limit: int, offset: int) -> list[Experiment]:
        """Experiments in the view's lifecycle stages matching every expression, one page."""

    @abc.abstractmethod
    async def rename_experiment(self, experiment_id: str, name: str, now: datetime) -> None:
        """Rename an experiment. Raises AlreadyExists: the name is taken."""

    @abc.abstractmethod
    async def set_experiment_lifecycle(self, experiment_id: str, stage: LifecycleStage, now: datetime) -> None:
        """Delete or restore an experiment together with its runs: deleting marks its active runs
        deleted at ``now``; restoring brings back the runs deleted with it (deleted at or after the
        experiment's deletion)."""

    @abc.abstractmethod
    async def set_experiment_tags(self, experiment_id: str, tags: Mapping[str, str], now: datetime) -> None:
        """Insert or overwrite experiment tags."""

    @abc.abstractmethod
    async def delete_experiment_tag(self, experiment_id: str, key: str, now: datetime) -> bool:
        """Remove an experiment tag; False when there was none."""

    # -- runs --------------------------------------------------------------------------------

    @abc.abstractmethod
    async def set_run_lifecycle(self, handle: RunHandle, stage: LifecycleStage, now: datetime) -> None:
        """Delete (``deleted_time`` = ``now``) or restore a run."""

    @abc.abstractmethod
    async def delete_tag(self, handle: RunHandle, key: str) -> bool:
        """Remove a run tag; False when there was none."""

    @abc.abstractmethod
    async def insert_run(self, run: NewRun, artifact_uri: str) -> tuple[RunHandle, bool]:
        """Create a run with its initial tags, or return the existing run with that id.

        Returns:
            The run and whether this call created it. The caller checks that an existing run
            belongs to the same experiment.
        """

    @abc.abstractmethod
    async def get_run_handle(self, run_id: str, *, for_update: bool = False) -> RunHandle | None:
        """The run's key and info, or None. ``for_update`` locks the row until the transaction ends."""

    @abc.abstractmethod
    async def update_run_info(self, handle: RunHandle, info: RunInfo) -> None:
        """Store the run's status, end time and name from ``info``."""

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> Run | None:
        """A run with latest metrics, params, tags and artifacts, or None."""

    @abc.abstractmethod
    async def search_runs(self, query: SearchQuery) -> list[Run]:
        """Active runs of the query's experiments matching it, one page (at most ``max_results``)."""

    @abc.abstractmethod
    async def search_runs_json(self, query: SearchQuery) -> list[str]:
        """The same page as :meth:`search_runs`, each run as the JSON text of MLflow's ``Run``
        message (what :func:`gyre_tracking.mlflow_json.run_json` makes of it): MLflow clients
        search thousands of runs at a time, and the store can render them far faster than
        Python can from :class:`Run` objects."""

    # -- run data ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def log_metrics(self, run_id: str, metrics: Sequence[Metric]) -> LifecycleStage | None:
        """Append points to a run in one round trip, if the run exists and is active.

        Returns:
            The run's lifecycle stage (points were written only when ACTIVE), None when the run
            does not exist.
        """

    @abc.abstractmethod
    async def write_metrics(self, handle: RunHandle, metrics: Sequence[Metric]) -> None:
        """Append points to a resolved run (idempotent on the natural key); keeps latest_metrics."""

    @abc.abstractmethod
    async def write_params(self, handle: RunHandle, params: Mapping[str, str]) -> dict[str, str]:
        """Insert params that are new; existing ones stay as they are.

        Returns:
            key -> stored value for every key that already had a *different* value (the caller
            turns these into a ParamConflict and rolls the transaction back).
        """

    @abc.abstractmethod
    async def write_tags(self, handle: RunHandle, tags: Mapping[str, str]) -> None:
        """Insert or overwrite tags."""

    @abc.abstractmethod
    async def write_artifact(self, handle: RunHandle, artifact: RunArtifact) -> RunArtifact:
        """Record an artifact unless its path is taken; returns what is stored at the path."""

    @abc.abstractmethod
    async def metric_history(self, handle: RunHandle, key: str, *, limit: int | None = None,
                             offset: int = 0) -> list[Metric]:
        """The points of one metric of a run, ordered by (step, timestamp, value): all of them, or
        ``limit`` points after skipping ``offset``."""

    # -- ingest ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def claim_event(self, consumer: str, event_id: str) -> bool:
        """Record that ``consumer`` applies ``event_id``: True the first time, False for a repeat.
        Call it inside the transaction that applies the event."""


class TrackingStore(abc.ABC):
    """Where sessions come from."""

    @abc.abstractmethod
    def session(self) -> AbstractAsyncContextManager[TrackingSession]:
        """A session whose statements commit one by one (reads, single-statement writes)."""

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[TrackingSession]:
        """A session in one transaction: committed when the block exits normally, else rolled back."""
