"""The features PostgresStore on a real PostgreSQL: ingestion semantics and point-in-time joins.

Timestamps are hand-made so every expectation about leakage and TTL is exact.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gyre_common.db import migrate
from gyre_features.domain.errors import Conflict
from gyre_features.domain.events import FeatureRow
from gyre_features.domain.training import EntityRow, TrainingSetQuery
from gyre_features.domain.values import ValueType
from gyre_features.domain.views import FeatureSpec, FeatureView
from gyre_features.handlers import FeaturesHandlers
from gyre_features.store import PostgresStore

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


VIEW = FeatureView(
    name="customer_stats",
    entity="customer",
    features=(
        FeatureSpec("spend", ValueType.FLOAT),
        FeatureSpec("orders", ValueType.INT),
        FeatureSpec("segment", ValueType.STRING),
        FeatureSpec("churned", ValueType.BOOL),
    ),
    ttl_seconds=3600,
)


def row(entity: str, minutes: float, created: float | None = None, event_id: str = "", **values: object) -> FeatureRow:
    return FeatureRow(
        feature_view=VIEW.name,
        entity_id=entity,
        event_time=at(minutes),
        created_time=at(minutes if created is None else created),
        values=values,  # type: ignore[arg-type]
        complete=len(values) == len(VIEW.features),
        event_id=event_id or f"{entity}-{minutes}-{created}",
    )


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    await migrate(database_url, "features", "gyre_features.migrations")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3,
                                     server_settings={"search_path": "features, public"})
    try:
        saved, created = await PostgresStore(pool).save_view(VIEW)
        assert created and saved.created_at is not None
        yield PostgresStore(pool)
    finally:
        await pool.close()


async def collect(handlers: FeaturesHandlers, query: TrainingSetQuery, chunk_rows: int = 0) -> list[tuple]:
    stream = await handlers.training_set(query, chunk_rows)
    rows: list[tuple] = []
    async for chunk in stream.chunks():
        for i, entity_id in enumerate(chunk.entity_ids):
            rows.append((entity_id, chunk.event_times[i], *(c[i] for c in chunk.columns), chunk.label[i]))
    return rows


async def test_view_evolution_rules(store: PostgresStore) -> None:
    same, created = await store.save_view(VIEW)
    assert not created and same.updated_at == same.created_at
    grown = FeatureView(VIEW.name, VIEW.entity, (*VIEW.features, FeatureSpec("age", ValueType.INT)), 60)
    stored, created = await store.save_view(grown)
    assert not created and stored.feature_names[-1] == "age" and stored.ttl_seconds == 60
    with pytest.raises(Conflict, match="cannot be removed"):
        await store.save_view(FeatureView(VIEW.name, VIEW.entity, VIEW.features[:2], 60))
    retyped = (FeatureSpec("spend", ValueType.STRING), *grown.features[1:])
    with pytest.raises(Conflict, match="cannot change it to string"):
        await store.save_view(FeatureView(VIEW.name, VIEW.entity, retyped, 60))
    with pytest.raises(Conflict, match="re-key"):
        await store.save_view(FeatureView(VIEW.name, "account", grown.features, 60))


async def test_ingest_is_idempotent_and_online_ignores_out_of_order_events(store: PostgresStore) -> None:
    newer = row("c1", 10, spend=20.0, orders=2, segment="gold", churned=False)
    older = row("c1", 5, spend=10.0, orders=1, segment="silver", churned=True)
    first = await store.ingest([newer])
    assert (first.inserted, first.merged, first.unchanged) == (1, 0, 0)
    second = await store.ingest([older, newer])  # the old one arrives late, the new one is redelivered
    assert (second.inserted, second.merged, second.unchanged) == (1, 0, 1)
    online = await store.online_values(VIEW.name, ["c1"], VIEW.feature_names)
    assert {f: v.value for (_, f), v in online.items()} == {
        "spend": 20.0, "orders": 2, "segment": "gold", "churned": False}
    assert all(v.event_time == at(10) for v in online.values())
    count = await store.pool.fetchval("SELECT count(*) FROM offline_events")
    assert count == 2

    # A partial event updates only the features it names; an explicit null is stored as null.
    await store.ingest([row("c1", 11, spend=None, orders=3)])
    online = await store.online_values(VIEW.name, ["c1"], VIEW.feature_names)
    assert online[("c1", "spend")].value is None and online[("c1", "orders")].value == 3
    assert online[("c1", "segment")].value == "gold" and online[("c1", "segment")].event_time == at(10)

    # Same natural key, later created_time: the correction wins per feature and merges.
    result = await store.ingest([row("c1", 11, created=12, orders=4)])
    assert (result.inserted, result.merged) == (0, 1)
    stored = await store.pool.fetchval(
        "SELECT feature_values FROM offline_events WHERE entity_id = 'c1' AND event_time = $1", at(11))
    assert json.loads(stored) == {"spend": None, "orders": 4}


async def test_point_in_time_join_never_leaks_and_respects_ttl(store: PostgresStore) -> None:
    handlers = FeaturesHandlers(store, clock=lambda: at(1000))
    await store.ingest([
        row("a", 0, spend=1.0, orders=1, segment="s0", churned=False),
        row("a", 30, spend=2.0, orders=2, segment="s1", churned=False),
        row("a", 45, segment="s2"),  # partial: only the segment changes
        row("a", 200, spend=9.0, orders=9, segment="s9", churned=True),  # after a gap longer than the TTL
        row("b", 10, spend=5.0, orders=5, segment="t", churned=True),
    ])
    spine = (
        EntityRow("a", at(-1)),  # before any event: nothing
        EntityRow("a", at(0)),  # exactly at an event: that event (<=)
        EntityRow("a", at(29.999)),  # just before the 2nd event: still the 1st
        EntityRow("a", at(30)),
        EntityRow("a", at(50)),  # merged: spend/orders from t=30, segment from t=45
        EntityRow("a", at(90)),  # 60 min TTL: t=30 is 60 min old, still valid; t=45 valid
        EntityRow("a", at(90.001)),  # the t=30 values just expired, the t=45 segment not yet
        EntityRow("a", at(106)),  # everything expired
        EntityRow("a", at(199)),  # the t=200 event is in the future: must not leak
        EntityRow("b", at(70)),  # exactly ttl after b's only event: still valid (inclusive)
        EntityRow("b", at(70.01)),
        EntityRow("zzz", at(50)),  # unknown entity
    )
    query = TrainingSetQuery(VIEW.name, label="churned", entity_rows=spine, keep_unlabelled=True)
    rows = await collect(handlers, query, chunk_rows=4)
    assert [r[0] for r in rows] == [s.entity_id for s in spine]
    assert [r[1] for r in rows] == [s.timestamp for s in spine]
    values = [r[2:] for r in rows]  # spend, orders, segment, churned (label last)
    assert values == [
        (None, None, None, None),
        (1.0, 1, "s0", False),
        (1.0, 1, "s0", False),
        (2.0, 2, "s1", False),
        (2.0, 2, "s2", False),
        (2.0, 2, "s2", False),
        (None, None, "s2", None),
        (None, None, None, None),
        (None, None, None, None),
        (5.0, 5, "t", True),
        (None, None, None, None),
        (None, None, None, None),
    ]

    # Without keep_unlabelled, rows whose label is absent are dropped and counted.
    stream = await handlers.training_set(TrainingSetQuery(VIEW.name, label="churned", entity_rows=spine))
    kept = [chunk async for chunk in stream.chunks()]
    assert sum(len(c) for c in kept) == 6 and stream.summary is not None
    assert stream.summary.unlabelled_rows_dropped == 6 and stream.summary.row_count == 6


async def test_window_spine_is_every_event_in_the_window(store: PostgresStore) -> None:
    handlers = FeaturesHandlers(store, clock=lambda: at(1000))
    await store.ingest([
        row("a", 0, spend=1.0, orders=1, segment="x", churned=False),
        row("b", 5, spend=2.0, orders=2, segment="y", churned=True),
        row("a", 10, churned=True),  # a label update: features as of t=10 come from t=0
        row("b", 20, spend=3.0, orders=3, segment="y", churned=False),
    ])
    query = TrainingSetQuery(VIEW.name, label="churned", features=("segment", "spend"), start=at(5), end=at(20))
    rows = await collect(handlers, query)
    assert rows == [("b", at(5), "y", 2.0, True), ("a", at(10), "x", 1.0, True)]
    stream = await handlers.training_set(query)
    async for _ in stream.chunks():
        pass
    again = await handlers.training_set(query, chunk_rows=1)
    async for _ in again.chunks():
        pass
    assert stream.summary is not None and again.summary is not None
    assert stream.summary.fingerprint == again.summary.fingerprint  # chunking does not change it


async def test_profile_counts_missing_and_summarises(store: PostgresStore) -> None:
    await store.ingest([
        row("a", 0, spend=1.0, orders=1, segment="x", churned=False),
        row("b", 1, spend=3.0, orders=5, segment="x", churned=True),
        row("c", 2, spend=None, segment="y"),
        row("d", 99, spend=100.0),  # outside the window
    ])
    profile = await store.profile(VIEW, at(0), at(50), top_k=1)
    assert (profile.rows, profile.entities) == (3, 3)
    by_name = {f.name: f for f in profile.features}
    spend = by_name["spend"]
    assert (spend.count, spend.missing, spend.mean, spend.min, spend.max) == (2, 1, 2.0, 1.0, 3.0)
    assert spend.std == pytest.approx(2 ** 0.5)
    assert (by_name["orders"].count, by_name["orders"].missing) == (2, 1)
    segment = by_name["segment"]
    assert (segment.count, segment.missing, segment.distinct) == (3, 0, 2)
    assert [(c.value, c.count) for c in segment.top] == [("x", 2)]
    assert [(c.value, c.count) for c in by_name["churned"].top] == [("false", 1)]
