"""Use cases of the tracking service. They know nothing of gRPC, HTTP or Kafka: adapters decode
into the arguments below and encode what comes back; errors are
:class:`~gyre_tracking.domain.errors.TrackingError` subclasses with a message for the caller.

Every datetime taken or returned is aware UTC.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar

from gyre_tracking.domain import runs as rules
from gyre_tracking.domain import search, validation
from gyre_tracking.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, TrackingError
from gyre_tracking.domain.model import (
    Experiment,
    LifecycleStage,
    Metric,
    NewRun,
    Run,
    RunArtifact,
    RunInfo,
    RunStatus,
    ViewType,
)
from gyre_tracking.store.base import RunHandle, TrackingSession, TrackingStore
from gyre_tracking.store.files import FileEntry, ProxiedArtifactFiles, clean_relative_path, proxied_artifact_path

log = logging.getLogger(__name__)

_Found = TypeVar("_Found")

DEFAULT_EXPERIMENT_ID = "0"
"""Id of the experiment runs go to when none is named (MLflow's "Default")."""
DEFAULT_EXPERIMENT_NAME = "Default"
"""Name of experiment 0."""
MAX_SEARCH_RESULTS = 1000
"""Largest page of SearchRuns / ListExperiments."""


def utc_now() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class RunBatch:
    """Observations about one run, applied together (MLflow's LogBatch; a TrackingEvent's payload).

    Attributes:
        metrics: points to append (timestamps already filled in).
        params: (key, value) pairs; write-once.
        tags: (key, value) pairs; last write wins.
    """

    metrics: Sequence[Metric | tuple[str, float, int, datetime | None]] = ()
    params: Sequence[tuple[str, str]] = ()
    tags: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True)
class TrackingEventCommand:
    """One ``tracking.events`` record, decoded (see ``gyre.events.v1.TrackingEvent``).

    Attributes:
        event_id: the CloudEvents id (dedupe key).
        run_id: the run; created on first sight.
        experiment_name: experiment of a run created by this event; empty means "Default".
        run_name: name of a run created by this event; empty lets the server choose.
        batch: metrics (timestamps filled with ``occurred_at`` where missing), params, tags.
        status: new status, or None to leave it.
        end_time: end time to set with the status, or None.
        occurred_at: when the producer emitted the event (UTC); start time of a run it creates.
    """

    event_id: str
    run_id: str
    experiment_name: str
    run_name: str
    batch: RunBatch
    status: RunStatus | None
    end_time: datetime | None
    occurred_at: datetime


@dataclass(frozen=True)
class RejectedEvent:
    """A tracking event that can never be applied (the consumer dead-letters it)."""

    index: int
    reason: str
    detail: str


@dataclass
class IngestReport:
    """What :meth:`TrackingHandlers.ingest` did with a batch of events."""

    applied: int = 0
    duplicates: int = 0
    rejected: list[RejectedEvent] = field(default_factory=list)


class TrackingHandlers:
    """The tracking use cases over a :class:`TrackingStore`.

    Args:
        store: persistence.
        artifact_root: URI under which experiments without an explicit location keep artifacts.
        clock: the current time (aware UTC); tests pass a fixed one.
    """

    def __init__(self, store: TrackingStore, artifact_root: str, clock: Callable[[], datetime] = utc_now,
                 files: ProxiedArtifactFiles | None = None) -> None:
        self.store = store
        self.artifact_root = artifact_root
        self.clock = clock
        self.files = files

    @property
    def default_experiment_id(self) -> str:
        """Where runs go when no experiment is named ("0")."""
        return DEFAULT_EXPERIMENT_ID

    async def _experiment(self, s: TrackingSession, experiment_id: str) -> Experiment:
        validation.validate_experiment_id(experiment_id)
        found = await s.get_experiment(experiment_id)
        if found is None:
            raise NotFound(f"experiment {experiment_id!r} does not exist")
        return found

    async def search_experiments(self, *, view: ViewType = ViewType.ACTIVE_ONLY, filter_text: str = "",
                                 order_by: Sequence[str] = (), page_size: int = 0, page_token: str = "",
                                 max_page_size: int = MAX_SEARCH_RESULTS) -> tuple[list[Experiment], str]:
        """One page of experiments matching a filter (``name LIKE 'churn%' and tags.team = 'risk'``),
        newest first unless ``order_by`` says otherwise, and the next page's token ("" on the last).

        Raises:
            InvalidArgument: a bad filter, order_by, token or page size.
        """
        comparisons = search.parse_experiment_filter(filter_text)
        order = search.parse_experiment_order_by(list(order_by))
        limit = search.page_size(page_size, maximum=max_page_size)
        offset = search.decode_page_token(page_token)
        async with self.store.session() as s:
            found = await s.search_experiments(view, comparisons, order, limit + 1, offset)
        token = search.encode_page_token(offset + limit) if len(found) > limit else ""
        return found[:limit], token

    async def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        """Rename an active experiment.

        Raises:
            NotFound. AlreadyExists: the name is taken. InvalidArgument: bad name, deleted experiment.
        """
        validation.validate_experiment_name(new_name)
        async with self.store.transaction() as s:
            experiment = await self._experiment(s, experiment_id)
            self._ensure_active(experiment)
            await s.rename_experiment(experiment_id, new_name, self.clock())

    @staticmethod
    def _ensure_active(experiment: Experiment) -> None:
        if experiment.lifecycle_stage is not LifecycleStage.ACTIVE:
            raise InvalidArgument(f"experiment {experiment.experiment_id!r} must be active; it is deleted")

    async def delete_experiment(self, experiment_id: str) -> None:
        """Mark an experiment and its active runs deleted (restorable).

        Raises:
            NotFound. InvalidArgument: already deleted, or the default experiment.
        """
        if experiment_id == DEFAULT_EXPERIMENT_ID:
            raise InvalidArgument("the default experiment '0' cannot be deleted")
        async with self.store.transaction() as s:
            self._ensure_active(await self._experiment(s, experiment_id))
            await s.set_experiment_lifecycle(experiment_id, LifecycleStage.DELETED, self.clock())

    async def restore_experiment(self, experiment_id: str) -> None:
        """Bring back a deleted experiment and the runs deleted with it.

        Raises:
            NotFound. InvalidArgument: the experiment is active.
        """
        async with self.store.transaction() as s:
            experiment = await self._experiment(s, experiment_id)
            if experiment.lifecycle_stage is LifecycleStage.ACTIVE:
                raise InvalidArgument(f"experiment {experiment_id!r} is active; only a deleted one can be restored")
            await s.set_experiment_lifecycle(experiment_id, LifecycleStage.ACTIVE, self.clock())

    async def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        """Set or overwrite an experiment tag. Raises NotFound, InvalidArgument (bad tag, deleted experiment)."""
        tags = validation.normalise_tags([(key, value)], max_value_length=validation.MAX_EXPERIMENT_TAG_VALUE_LENGTH)
        async with self.store.transaction() as s:
            self._ensure_active(await self._experiment(s, experiment_id))
            await s.set_experiment_tags(experiment_id, tags, self.clock())

    async def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        """Remove an experiment tag. Raises NotFound (experiment or tag), InvalidArgument (deleted experiment)."""
        async with self.store.transaction() as s:
            self._ensure_active(await self._experiment(s, experiment_id))
            if not await s.delete_experiment_tag(experiment_id, key, self.clock()):
                raise NotFound(f"experiment {experiment_id!r} has no tag {key!r}")

    # -- experiments -------------------------------------------------------------------------

    async def ensure_default_experiment(self) -> Experiment:
        """Create experiment 0, "Default", if missing (MLflow clients log there without an experiment)."""
        async with self.store.session() as s:
            return await s.ensure_experiment(DEFAULT_EXPERIMENT_NAME, self.artifact_root,
                                             experiment_id=DEFAULT_EXPERIMENT_ID)

    async def create_experiment(self, name: str, artifact_location: str = "",
                                tags: Sequence[tuple[str, str]] = ()) -> Experiment:
        """Create an experiment.

        Raises:
            InvalidArgument: empty or too long name, invalid tags.
            AlreadyExists: the name is taken.
        """
        validation.validate_experiment_name(name)
        clean_tags = validation.normalise_tags(tags, max_value_length=validation.MAX_EXPERIMENT_TAG_VALUE_LENGTH)
        async with self.store.transaction() as s:
            return await s.create_experiment(name, artifact_location or None, self.artifact_root, clean_tags)

    async def get_experiment(self, experiment_id: str) -> Experiment:
        """One experiment by id. Raises NotFound, InvalidArgument (malformed id)."""
        validation.validate_experiment_id(experiment_id)
        async with self.store.session() as s:
            found = await s.get_experiment(experiment_id)
        if found is None:
            raise NotFound(f"experiment {experiment_id!r} does not exist")
        return found

    async def get_experiment_by_name(self, name: str) -> Experiment:
        """One experiment by exact name. Raises NotFound, InvalidArgument (empty name)."""
        if not name:
            raise InvalidArgument("give an experiment_id or a name")
        async with self.store.session() as s:
            found = await s.get_experiment_by_name(name)
        if found is None:
            raise NotFound(f"no experiment is named {name!r}")
        return found

    async def list_experiments(self, page_size: int, page_token: str) -> tuple[list[Experiment], str]:
        """One page of active experiments by id, and the next page's token ("" on the last page)."""
        limit = search.page_size(page_size, maximum=MAX_SEARCH_RESULTS)
        offset = search.decode_page_token(page_token)
        async with self.store.session() as s:
            found = await s.list_experiments(limit + 1, offset)
        token = search.encode_page_token(offset + limit) if len(found) > limit else ""
        return found[:limit], token

    # -- runs --------------------------------------------------------------------------------

    async def create_run(self, experiment_id: str, *, run_id: str = "", run_name: str = "",
                         start_time: datetime | None = None, tags: Sequence[tuple[str, str]] = (),
                         user: str = "") -> Run:
        """Create a RUNNING run. A given ``run_id`` makes retries safe: the same id in the same
        experiment returns the existing run unchanged.

        The name comes from ``run_name``, else the ``mlflow.runName`` tag, else is generated; the
        tag is set to the name, as MLflow does.

        Raises:
            InvalidArgument: malformed ids, name or tags. NotFound: no such experiment.
            AlreadyExists: ``run_id`` belongs to a run of another experiment.
        """
        validation.validate_experiment_id(experiment_id)
        clean_tags = validation.normalise_tags(tags)
        run_id = validation.validate_run_id(run_id) if run_id else rules.new_run_id()
        name = validation.validate_run_name(run_name or clean_tags.get(rules.RUN_NAME_TAG, ""))
        new = NewRun(experiment_id=experiment_id, run_id=run_id, run_name=name or rules.default_run_name(run_id),
                     start_time=start_time or self.clock(), user=user, tags=clean_tags)
        async with self.store.transaction() as s:
            experiment = await s.get_experiment(experiment_id)
            if experiment is None:
                raise NotFound(f"experiment {experiment_id!r} does not exist")
            await self._insert_run(s, experiment, new)
            run = await s.get_run(run_id)
        assert run is not None
        return run

    async def _insert_run(self, s: TrackingSession, experiment: Experiment, new: NewRun) -> RunHandle:
        if experiment.lifecycle_stage is not LifecycleStage.ACTIVE:
            raise FailedPrecondition(f"experiment {experiment.experiment_id!r} is deleted; runs cannot be created "
                                     "in it")
        new = replace(new, tags={**new.tags, rules.RUN_NAME_TAG: new.run_name})
        handle, created = await s.insert_run(new, rules.run_artifact_uri(experiment.artifact_location, new.run_id))
        if not created and handle.info.experiment_id != experiment.experiment_id:
            raise AlreadyExists(f"run_id {new.run_id!r} is taken by a run of experiment "
                                f"{handle.info.experiment_id!r}")
        return handle

    async def get_run(self, run_id: str) -> Run:
        """A run with latest metrics, params, tags and artifacts. Raises NotFound, InvalidArgument."""
        validation.validate_run_id(run_id)
        async with self.store.session() as s:
            run = await s.get_run(run_id)
        if run is None:
            raise NotFound(f"run {run_id!r} does not exist")
        return run

    async def update_run(self, run_id: str, *, status: RunStatus | None = None, end_time: datetime | None = None,
                         run_name: str | None = None) -> RunInfo:
        """Change status, end time or name (see :func:`gyre_tracking.domain.runs.plan_update`).

        Raises:
            NotFound, InvalidArgument (end before start, bad name), FailedPrecondition (deleted run).
        """
        validation.validate_run_id(run_id)
        if run_name is not None:
            validation.validate_run_name(run_name)
        async with self.store.transaction() as s:
            handle = await self._handle(s, run_id, for_update=True)
            info = rules.plan_update(handle.info, status=status, end_time=end_time, run_name=run_name or None,
                                     now=self.clock())
            await s.update_run_info(handle, info)
            if run_name:
                await s.write_tags(handle, {rules.RUN_NAME_TAG: run_name})
        return info

    async def delete_run(self, run_id: str) -> None:
        """Mark a run deleted (restorable; searches skip it). Deleting a deleted run is a no-op.

        Raises:
            NotFound, InvalidArgument.
        """
        validation.validate_run_id(run_id)
        async with self.store.transaction() as s:
            handle = await self._handle(s, run_id, for_update=True)
            if handle.info.lifecycle_stage is LifecycleStage.ACTIVE:
                await s.set_run_lifecycle(handle, LifecycleStage.DELETED, self.clock())

    async def restore_run(self, run_id: str) -> None:
        """Bring back a deleted run (restoring an active run is a no-op).

        Raises:
            NotFound. InvalidArgument: the run's experiment is deleted (restore that first).
        """
        validation.validate_run_id(run_id)
        async with self.store.transaction() as s:
            handle = await self._handle(s, run_id, for_update=True)
            if handle.info.lifecycle_stage is LifecycleStage.ACTIVE:
                return
            self._ensure_active(await self._experiment(s, handle.info.experiment_id))
            await s.set_run_lifecycle(handle, LifecycleStage.ACTIVE, self.clock())

    async def delete_tag(self, run_id: str, key: str) -> None:
        """Remove a run tag.

        Raises:
            NotFound: no such run, or the run has no such tag. FailedPrecondition: deleted run.
        """
        validation.validate_run_id(run_id)
        async with self.store.transaction() as s:
            handle = await self._handle(s, run_id)
            rules.ensure_writable(run_id, handle.info.lifecycle_stage)
            if not await s.delete_tag(handle, key):
                raise NotFound(f"run {run_id!r} has no tag {key!r}")

    async def _handle(self, s: TrackingSession, run_id: str, *, for_update: bool = False) -> RunHandle:
        handle = await s.get_run_handle(run_id, for_update=for_update)
        if handle is None:
            raise NotFound(f"run {run_id!r} does not exist")
        return handle

    # -- run data ----------------------------------------------------------------------------

    def _fill_timestamps(self, metrics: Sequence[Metric | tuple[str, float, int, datetime | None]]) -> list[Metric]:
        now: datetime | None = None
        points: list[Metric] = []
        for item in metrics:
            if isinstance(item, Metric):
                points.append(item)
                continue
            key, value, step, stamp = item
            if stamp is None:
                now = now or self.clock()
                stamp = now
            points.append(Metric(key, value, step, stamp))
        return points

    async def log_metrics(self, run_id: str, metrics: Sequence[Metric | tuple[str, float, int, datetime | None]]
                          ) -> None:
        """Append points (``(key, value, step, timestamp)``; a None timestamp means now) in one
        round trip; a point already stored is not stored again.

        Raises:
            InvalidArgument: above 1000 points, bad keys. NotFound. FailedPrecondition (deleted run).
        """
        validation.validate_run_id(run_id)
        points = validation.validate_metrics(self._fill_timestamps(metrics))
        if not points:
            async with self.store.session() as s:
                rules.ensure_writable(run_id, (await self._handle(s, run_id)).info.lifecycle_stage)
            return
        async with self.store.session() as s:
            stage = await s.log_metrics(run_id, points)
        rules.ensure_writable(run_id, stage)

    async def log_params(self, run_id: str, params: Sequence[tuple[str, str]]) -> None:
        """Set write-once params, all or nothing.

        Raises:
            ParamConflict: a param already has another value. InvalidArgument, NotFound, FailedPrecondition.
        """
        await self.log_batch(run_id, RunBatch(params=params))

    async def set_tags(self, run_id: str, tags: Sequence[tuple[str, str]]) -> None:
        """Set or overwrite tags; ``mlflow.runName`` also renames the run.

        Raises:
            InvalidArgument, NotFound, FailedPrecondition.
        """
        await self.log_batch(run_id, RunBatch(tags=tags))

    async def log_batch(self, run_id: str, batch: RunBatch, *, limit_total: bool = False) -> None:
        """Apply metrics, params and tags to a run in one transaction (MLflow's LogBatch).

        Args:
            limit_total: also refuse more than 1000 entries in all (MLflow's LogBatch limit).

        Raises:
            ParamConflict, InvalidArgument, NotFound, FailedPrecondition.
        """
        validation.validate_run_id(run_id)
        if limit_total:
            validation.check_batch_total(len(batch.metrics), len(batch.params), len(batch.tags))
        metrics, params, tags = self._validate_batch(batch)
        async with self.store.transaction() as s:
            handle = await self._handle(s, run_id)
            await self._apply_batch(s, handle, metrics, params, tags)

    def _validate_batch(self, batch: RunBatch) -> tuple[list[Metric], dict[str, str], dict[str, str]]:
        metrics = validation.validate_metrics(self._fill_timestamps(batch.metrics))
        params = validation.normalise_params(batch.params)
        tags = validation.normalise_tags(batch.tags)
        if rules.RUN_NAME_TAG in tags:
            validation.validate_run_name(tags[rules.RUN_NAME_TAG])
        return metrics, params, tags

    async def _apply_batch(self, s: TrackingSession, handle: RunHandle, metrics: Sequence[Metric],
                           params: Mapping[str, str], tags: Mapping[str, str]) -> None:
        rules.ensure_writable(handle.info.run_id, handle.info.lifecycle_stage)
        if params:
            stored = await s.write_params(handle, params)
            validation.check_param_conflicts(handle.info.run_id, params, stored)
        await s.write_metrics(handle, metrics)
        await s.write_tags(handle, tags)
        name = tags.get(rules.RUN_NAME_TAG)
        if name and name != handle.info.run_name:
            await s.update_run_info(handle, replace(handle.info, run_name=name))

    async def log_artifact(self, run_id: str, artifact: RunArtifact) -> RunArtifact:
        """Record an artifact reference under a path of the run (write-once per path; the same
        sha256 again returns the stored record).

        Raises:
            AlreadyExists: the path holds an artifact with another sha256. InvalidArgument,
            NotFound, FailedPrecondition.
        """
        validation.validate_run_id(run_id)
        validation.validate_artifact(artifact)
        async with self.store.transaction() as s:
            handle = await self._handle(s, run_id)
            rules.ensure_writable(run_id, handle.info.lifecycle_stage)
            stored = await s.write_artifact(handle, artifact)
        if stored.sha256 != artifact.sha256:
            raise AlreadyExists(f"run {run_id!r} already has artifact {artifact.path!r} with sha256 {stored.sha256}; "
                                "artifacts are write-once: use another path")
        return stored

    async def metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every point of one metric, ordered by (step, timestamp). Unknown key: empty list.

        Raises:
            NotFound, InvalidArgument (bad run id or empty key).
        """
        validation.validate_run_id(run_id)
        if not key:
            raise InvalidArgument("metric key must not be empty")
        async with self.store.session() as s:
            handle = await self._handle(s, run_id)
            return await s.metric_history(handle, key)

    async def metric_history_page(self, run_id: str, key: str, page_size: int = 0, page_token: str = "", *,
                                  max_page_size: int = 25_000) -> tuple[list[Metric], str]:
        """A page of :meth:`metric_history` and the next page's token ("" on the last page).

        Args:
            page_size: points per page; 0 means ``max_page_size``, so that no answer is unbounded.
            max_page_size: the largest page (MLflow's client asks for 25,000 points).

        Raises:
            NotFound, InvalidArgument (bad run id, empty key, bad token or size).
        """
        validation.validate_run_id(run_id)
        if not key:
            raise InvalidArgument("metric key must not be empty")
        limit = search.page_size(page_size, default=max_page_size, maximum=max_page_size)
        offset = search.decode_page_token(page_token)
        async with self.store.session() as s:
            handle = await self._handle(s, run_id)
            # One point more than the page: its presence says whether there is a next page.
            points = await s.metric_history(handle, key, limit=limit + 1, offset=offset)
        token = search.encode_page_token(offset + limit) if len(points) > limit else ""
        return points[:limit], token

    async def list_run_artifacts(self, run_id: str, path: str = "") -> tuple[str, list[FileEntry]]:
        """The artifact root URI of a run and the entries under ``path`` in it, for runs whose
        artifacts are proxied by this server (``mlflow-artifacts:`` URIs); other runs list empty.

        Raises:
            NotFound, InvalidArgument (bad run id or path).
        """
        run = await self.get_run(run_id)
        root = run.info.artifact_uri
        relative = proxied_artifact_path(root)
        if relative is None or self.files is None:
            return root, []
        clean = clean_relative_path(path)
        return root, await self.files.list(f"{relative}/{clean}" if clean else relative)

    async def search_runs(self, experiment_ids: Sequence[str], filter_text: str = "",
                          order_by: Sequence[str] = (), page_size: int = 0, page_token: str = "",
                          *, max_page_size: int = MAX_SEARCH_RESULTS, view: ViewType = ViewType.ACTIVE_ONLY
                          ) -> tuple[list[Run], str]:
        """One page of runs (active ones unless ``view`` says otherwise) matching a filter
        (MLflow's grammar plus OR and parentheses), and the next page's token.

        Raises:
            InvalidArgument: no experiment, a filter/order_by that does not parse, a bad token or
            page size. NotFound: an experiment does not exist.
        """
        query = self._search_query(experiment_ids, filter_text, order_by, page_size, page_token, max_page_size, view)
        async with self.store.session() as s:
            await self._check_experiments(s, query.experiment_ids)
            found = await s.search_runs(query)
        return self._page(query, found)

    async def search_runs_json(self, experiment_ids: Sequence[str], filter_text: str = "",
                               order_by: Sequence[str] = (), page_size: int = 0, page_token: str = "",
                               *, max_page_size: int = MAX_SEARCH_RESULTS, view: ViewType = ViewType.ACTIVE_ONLY
                               ) -> tuple[list[str], str]:
        """:meth:`search_runs` with each run as the JSON text of MLflow's ``Run`` message (see
        :meth:`TrackingSession.search_runs_json`). Same arguments, errors and paging."""
        query = self._search_query(experiment_ids, filter_text, order_by, page_size, page_token, max_page_size, view)
        async with self.store.session() as s:
            await self._check_experiments(s, query.experiment_ids)
            found = await s.search_runs_json(query)
        return self._page(query, found)

    @staticmethod
    def _search_query(experiment_ids: Sequence[str], filter_text: str, order_by: Sequence[str], page_size: int,
                      page_token: str, max_page_size: int, view: ViewType) -> search.SearchQuery:
        if not experiment_ids:
            raise InvalidArgument("experiment_ids must name at least one experiment")
        ids = tuple(dict.fromkeys(validation.validate_experiment_id(i) for i in experiment_ids))
        # One row more than the page: its presence says whether there is a next page.
        return search.SearchQuery(
            experiment_ids=ids,
            comparisons=tuple(search.parse_filter(filter_text)),
            order_by=tuple(search.parse_order_by(list(order_by))),
            max_results=search.page_size(page_size, maximum=max_page_size) + 1,
            offset=search.decode_page_token(page_token),
            view=view,
        )

    @staticmethod
    async def _check_experiments(s: TrackingSession, ids: Sequence[str]) -> None:
        missing = await s.missing_experiments(ids)
        if missing:
            raise NotFound(f"experiment(s) {', '.join(map(repr, missing))} do not exist")

    @staticmethod
    def _page(query: search.SearchQuery, found: list[_Found]) -> tuple[list[_Found], str]:
        limit = query.max_results - 1
        token = search.encode_page_token(query.offset + limit) if len(found) > limit else ""
        return found[:limit], token

    # -- ingest ------------------------------------------------------------------------------

    async def ingest(self, events: Sequence[TrackingEventCommand], consumer: str) -> IngestReport:
        """Apply tracking events in order, each in its own transaction, at most once per event id.

        An event that can never succeed (invalid, param conflict, deleted run) is rolled back and
        reported in ``rejected``; the others still apply. Database errors propagate (the consumer
        retries; events already applied are skipped by their id).
        """
        report = IngestReport()
        for index, event in enumerate(events):
            try:
                applied = await self._ingest_one(event, consumer)
            except TrackingError as exc:
                report.rejected.append(RejectedEvent(index, exc.reason, str(exc)))
                continue
            if applied:
                report.applied += 1
            else:
                report.duplicates += 1
        return report

    async def _ingest_one(self, event: TrackingEventCommand, consumer: str) -> bool:
        validation.validate_run_id(event.run_id)
        validation.validate_run_name(event.run_name)
        metrics, params, tags = self._validate_batch(event.batch)
        experiment_name = event.experiment_name or DEFAULT_EXPERIMENT_NAME
        validation.validate_experiment_name(experiment_name)
        async with self.store.transaction() as s:
            if not await s.claim_event(consumer, event.event_id):
                return False
            handle = await s.get_run_handle(event.run_id, for_update=True)
            if handle is None:
                experiment = await s.ensure_experiment(experiment_name, self.artifact_root)
                # The event may report a run that ended (or measured points) before it was emitted.
                earliest = min([event.occurred_at, *([event.end_time] if event.end_time else []),
                                *(m.timestamp for m in metrics)])
                new = NewRun(experiment_id=experiment.experiment_id, run_id=event.run_id,
                             run_name=event.run_name or tags.get(rules.RUN_NAME_TAG)
                             or rules.default_run_name(event.run_id),
                             start_time=earliest)
                handle = await self._insert_run(s, experiment, new)
            await self._apply_batch(s, handle, metrics, params, tags)
            if event.status is not None or event.end_time is not None:
                current = await s.get_run_handle(event.run_id)
                assert current is not None
                info = rules.plan_update(current.info, status=event.status, end_time=event.end_time, run_name=None,
                                         now=event.end_time or event.occurred_at)
                await s.update_run_info(current, info)
        return True
