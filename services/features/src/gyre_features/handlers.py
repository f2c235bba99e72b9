"""The features service's use cases. They know nothing of gRPC, HTTP or Kafka.

Errors are :class:`~gyre_features.domain.FeatureStoreError` subclasses; the transports map them to
status codes (NotFound -> NOT_FOUND/404, InvalidArgument -> INVALID_ARGUMENT/422, Conflict ->
FAILED_PRECONDITION/409, TooLarge -> RESOURCE_EXHAUSTED/413).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gyre_features.domain.errors import InvalidArgument, InvalidFeatureEvent, NotFound, TooLarge
from gyre_features.domain.events import FeatureRow, RawFeatureEvent, validate_event
from gyre_features.domain.fingerprint import TrainingSetFingerprint
from gyre_features.domain.online import FeatureStatus, OnlineRow, OnlineValue, online_result
from gyre_features.domain.profiles import DatasetProfile
from gyre_features.domain.training import (
    TrainingSetChunk,
    TrainingSetQuery,
    TrainingSetSchema,
    training_columns,
)
from gyre_features.domain.views import FeatureView, check_name
from gyre_features.store import IngestResult, Store

log = logging.getLogger(__name__)

MAX_WRITE_EVENTS = 1000
MAX_ONLINE_ENTITIES = 1000
MAX_SPINE_ROWS = 1_000_000
DEFAULT_CHUNK_ROWS = 5000
MAX_CHUNK_ROWS = 50_000
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_TOP_K = 100


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Rejected:
    """An event that failed validation: its position in the batch and why."""

    index: int
    error: InvalidFeatureEvent


@dataclass(frozen=True)
class IngestReport:
    """Outcome of :meth:`FeaturesHandlers.ingest`: what was stored, and what was rejected."""

    result: IngestResult
    rejected: list[Rejected]


@dataclass(frozen=True)
class OnlineFeatures:
    """Answer of :meth:`FeaturesHandlers.get_online_features`: the view, the features, one row per entity."""

    view: FeatureView
    features: list[str]
    rows: list[OnlineRow]


@dataclass
class TrainingSetSummary:
    """Filled in once a :class:`TrainingSetStream` has been read to the end.

    Attributes:
        row_count: rows streamed.
        fingerprint: SHA-256 of the rows (see :class:`TrainingSetFingerprint`).
        unlabelled_rows_dropped: spine rows left out because the label was absent.
    """

    row_count: int
    fingerprint: str
    unlabelled_rows_dropped: int


@dataclass
class TrainingSetStream:
    """A training set being built: its schema now, its chunks on iteration, its summary after."""

    schema: TrainingSetSchema
    _chunks: AsyncIterator[TrainingSetChunk] = field(repr=False)
    _keep_unlabelled: bool = False
    summary: TrainingSetSummary | None = None

    async def chunks(self) -> AsyncIterator[TrainingSetChunk]:
        """Chunks of up to ``chunk_rows`` rows, in spine order; sets :attr:`summary` at the end.

        Dropping unlabelled rows can make a chunk shorter than ``chunk_rows``; empty chunks are
        not yielded.
        """
        fingerprint = TrainingSetFingerprint(self.schema)
        dropped = 0
        async for chunk in self._chunks:
            if not self._keep_unlabelled:
                before = len(chunk)
                chunk = _drop_unlabelled(chunk)
                dropped += before - len(chunk)
            if len(chunk):
                fingerprint.update(chunk)
                yield chunk
        self.summary = TrainingSetSummary(fingerprint.rows, fingerprint.hexdigest(), dropped)


def _drop_unlabelled(chunk: TrainingSetChunk) -> TrainingSetChunk:
    keep = [i for i, label in enumerate(chunk.label) if label is not None]
    if len(keep) == len(chunk):
        return chunk
    return TrainingSetChunk(
        [chunk.entity_ids[i] for i in keep],
        [chunk.event_times[i] for i in keep],
        [[column[i] for i in keep] for column in chunk.columns],
        [chunk.label[i] for i in keep],
    )


class FeaturesHandlers:
    """Feature views, ingestion, online serving, training sets and profiles over a :class:`Store`.

    Args:
        store: where everything is kept.
        clock: "now" in UTC (tests pin it); decides online TTL expiry and open window ends.
    """

    def __init__(self, store: Store, clock: Callable[[], datetime] = _utcnow) -> None:
        self.store = store
        self.clock = clock

    # -- feature views ------------------------------------------------------------------------

    async def register_view(self, view: FeatureView) -> tuple[FeatureView, bool]:
        """Create or evolve a view; returns the stored view and whether it is new.

        Raises:
            Conflict: the entity changes, or a feature is removed or changes type.
        """
        stored, created = await self.store.save_view(view)
        if created:
            log.info("registered feature view %s", view.name, extra={"feature_view": view.name})
        return stored, created

    async def get_view(self, name: str) -> FeatureView:
        """The view called ``name``.

        Raises:
            NotFound: no such view.
        """
        view = await self.store.get_view(name)
        if view is None:
            raise NotFound(f"feature view {name!r} does not exist")
        return view

    async def list_views(self, page_size: int = 0, page_token: str = "") -> tuple[list[FeatureView], str]:
        """A page of views by name and the token of the next page ("" on the last page).

        Args:
            page_size: 1 to 1000; 0 means 100.
            page_token: "" or the ``next_page_token`` of the previous page (the last name it held).

        Raises:
            InvalidArgument: page_size out of range or a malformed token.
        """
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be 1 to {MAX_PAGE_SIZE} (0 = {DEFAULT_PAGE_SIZE}), got {page_size}")
        size = page_size or DEFAULT_PAGE_SIZE
        if page_token:
            try:
                check_name("page token", page_token)
            except InvalidArgument:
                raise InvalidArgument(f"invalid page_token {page_token!r}") from None
        views = await self.store.list_views(page_token, size + 1)
        more = len(views) > size
        views = views[:size]
        return views, (views[-1].name if more else "")

    # -- ingestion ----------------------------------------------------------------------------

    async def _validate(self, events: Sequence[RawFeatureEvent]) -> tuple[list[FeatureRow], list[Rejected]]:
        views = await self.store.get_views([e.feature_view for e in events if e.feature_view])
        rows: list[FeatureRow] = []
        rejected: list[Rejected] = []
        for index, event in enumerate(events):
            try:
                rows.append(validate_event(views, event))
            except InvalidFeatureEvent as exc:
                rejected.append(Rejected(index, exc))
        return rows, rejected

    async def ingest(self, events: Sequence[RawFeatureEvent]) -> IngestReport:
        """Validate a batch from the topic; store the valid events, report the invalid ones.

        Views are read fresh for each batch, so a view registered a moment ago applies at once.
        Storage is one transaction for the batch (see :meth:`Store.ingest`); it raises on database
        errors so the caller can retry the batch (ingestion is idempotent).
        """
        rows, rejected = await self._validate(events)
        result = await self.store.ingest(rows) if rows else IngestResult(0, 0, 0, 0)
        return IngestReport(result, rejected)

    async def write_features(self, events: Sequence[RawFeatureEvent]) -> IngestResult:
        """Write events synchronously, all or nothing.

        Raises:
            TooLarge: more than 1000 events.
            NotFound: an event names an unregistered view.
            InvalidArgument: any other invalid event (nothing is written); the message names its index.
        """
        if len(events) > MAX_WRITE_EVENTS:
            raise TooLarge(f"at most {MAX_WRITE_EVENTS} events per call, got {len(events)}")
        rows, rejected = await self._validate(events)
        if rejected:
            first = rejected[0]
            message = f"event {first.index}: {first.error.detail}"
            if first.error.reason == "unknown_view":
                raise NotFound(message)
            raise InvalidArgument(message)
        return await self.store.ingest(rows)

    # -- online -------------------------------------------------------------------------------

    async def get_online_features(
        self, view_name: str, entity_ids: Sequence[str], features: Sequence[str] = ()
    ) -> OnlineFeatures:
        """Latest values of ``features`` (all when empty) for each entity, in request order.

        Raises:
            NotFound: unknown view or feature.
            InvalidArgument: no entity ids, an empty one, or more than 1000.
        """
        view = await self.get_view(view_name)
        if not entity_ids:
            raise InvalidArgument("entity_ids must not be empty")
        if len(entity_ids) > MAX_ONLINE_ENTITIES:
            raise InvalidArgument(f"at most {MAX_ONLINE_ENTITIES} entity ids per call, got {len(entity_ids)}")
        if any(not entity_id for entity_id in entity_ids):
            raise InvalidArgument("entity ids must not be empty strings")
        names = list(dict.fromkeys(features)) if features else view.feature_names
        for name in names:
            view.feature(name)
        stored = await self.store.online_values(view.name, list(dict.fromkeys(entity_ids)), names)
        now = self.clock()
        rows = []
        for entity_id in entity_ids:
            found = False
            results = {}
            latest: datetime | None = None
            for name in names:
                value: OnlineValue | None = stored.get((entity_id, name))
                found = found or value is not None
                result = online_result(view, value, now)
                results[name] = result
                served = result.status in (FeatureStatus.PRESENT, FeatureStatus.NULL_VALUE)
                if served and result.event_time is not None and (latest is None or result.event_time > latest):
                    latest = result.event_time
            rows.append(OnlineRow(entity_id, found, results, latest))
        return OnlineFeatures(view, names, rows)

    # -- training sets ------------------------------------------------------------------------

    async def training_set(self, query: TrainingSetQuery, chunk_rows: int = 0) -> TrainingSetStream:
        """Plan a point-in-time correct training set; iterate the result's ``chunks()`` to build it.

        Args:
            query: view, label, features, window (an open end means "now") and optional spine.
            chunk_rows: rows per chunk, 1 to 50000; 0 means 5000.

        Raises:
            NotFound: unknown view, label or feature.
            InvalidArgument: bad window, chunk size, spine too large or with empty entity ids.
        """
        if chunk_rows < 0 or chunk_rows > MAX_CHUNK_ROWS:
            raise InvalidArgument(f"chunk_size must be 1 to {MAX_CHUNK_ROWS} (0 = {DEFAULT_CHUNK_ROWS}), "
                                  f"got {chunk_rows}")
        if len(query.entity_rows) > MAX_SPINE_ROWS:
            raise InvalidArgument(f"the spine has {len(query.entity_rows)} rows; at most {MAX_SPINE_ROWS}")
        if any(not row.entity_id for row in query.entity_rows):
            raise InvalidArgument("every spine row needs an entity_id")
        view = await self.get_view(query.feature_view)
        columns = training_columns(view, query)
        end = query.end or self.clock()
        if query.start is not None and query.start >= end:
            raise InvalidArgument(f"window start {query.start.isoformat()} must be before end {end.isoformat()}")
        schema = TrainingSetSchema(view.name, tuple(columns[:-1]), columns[-1], query.start, end)
        chunks = self.store.point_in_time_rows(view, columns, start=query.start, end=end,
                                               entity_rows=query.entity_rows,
                                               batch_rows=chunk_rows or DEFAULT_CHUNK_ROWS)
        return TrainingSetStream(schema, chunks, query.keep_unlabelled)

    # -- profiles -----------------------------------------------------------------------------

    async def profile(self, view_name: str, start: datetime | None = None, end: datetime | None = None,
                      top_k: int = 10) -> DatasetProfile:
        """Per-feature statistics of a view's events with event_time in [start, end) (None = open).

        Raises:
            NotFound: unknown view.
            InvalidArgument: start not before end, or top_k outside 1 to 100.
        """
        if start is not None and end is not None and start >= end:
            raise InvalidArgument(f"window start {start.isoformat()} must be before end {end.isoformat()}")
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(f"top_k must be 1 to {MAX_TOP_K}, got {top_k}")
        view = await self.get_view(view_name)
        return await self.store.profile(view, start, end, top_k)
