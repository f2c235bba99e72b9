"""Storage of the features service: the :class:`Store` interface and its PostgreSQL adapter.

Everything lives in the ``features`` schema (the pool's ``search_path`` points there): feature
views, the offline store (every event, for point-in-time joins and profiles), the online store
(latest value per feature and entity). See ``migrations/0001_init.sql`` for the tables and why
each index exists.
"""

from __future__ import annotations

import abc
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from gyre_features.domain.events import FeatureRow, merge_same_key
from gyre_features.domain.online import OnlineValue, online_states
from gyre_features.domain.profiles import CategoryCount, DatasetProfile, FeatureProfile
from gyre_features.domain.timestamps import from_unix_us
from gyre_features.domain.training import EntityRow, TrainingSetChunk
from gyre_features.domain.values import FloatVector, ValueType, stored_value, vector_from_json, vector_to_json
from gyre_features.domain.views import FeatureSpec, FeatureView


@dataclass(frozen=True)
class IngestResult:
    """What one :meth:`Store.ingest` call changed.

    Attributes:
        inserted: offline rows created.
        merged: existing offline rows that changed (same natural key, new values).
        unchanged: rows that were exact replays (redeliveries): nothing changed.
        online_updated: online entity rows written (created or merged into).
    """

    inserted: int
    merged: int
    unchanged: int
    online_updated: int


class Store(abc.ABC):
    """Persistence of feature views, the offline store and the online store. All times are UTC."""

    @abc.abstractmethod
    async def save_view(self, view: FeatureView) -> tuple[FeatureView, bool]:
        """Create ``view`` or replace the stored view of that name after ``check_update``.

        Returns:
            The stored view (with created_at/updated_at) and whether it was new.

        Raises:
            Conflict: the change is not allowed (see :meth:`FeatureView.check_update`).
        """

    @abc.abstractmethod
    async def get_view(self, name: str) -> FeatureView | None:
        """The view called ``name``, or None."""

    @abc.abstractmethod
    async def get_views(self, names: Sequence[str]) -> dict[str, FeatureView]:
        """The views among ``names`` that exist, by name."""

    @abc.abstractmethod
    async def list_views(self, after: str, limit: int) -> list[FeatureView]:
        """Up to ``limit`` views whose name sorts after ``after`` ("" = from the first), by name."""

    @abc.abstractmethod
    async def ingest(self, rows: Sequence[FeatureRow]) -> IngestResult:
        """Write validated rows to the offline store and the online store in one transaction.

        Idempotent: a row with the natural key (view, entity, event_time) of a stored row merges
        into it (per feature, the later created_time wins), so a replay changes nothing. The online
        value of a feature is replaced only by one with a later (event_time, created_time).
        """

    @abc.abstractmethod
    async def online_values(
        self, view: str, entity_ids: Sequence[str], features: Sequence[str]
    ) -> dict[tuple[str, str], OnlineValue]:
        """Stored online values by (entity_id, feature); absent keys were never set."""

    @abc.abstractmethod
    def point_in_time_rows(
        self,
        view: FeatureView,
        columns: Sequence[FeatureSpec],
        *,
        start: datetime | None,
        end: datetime,
        entity_rows: Sequence[EntityRow] = (),
        batch_rows: int = 5000,
    ) -> AsyncIterator[TrainingSetChunk]:
        """Rows of a point-in-time join, in columnar batches of up to ``batch_rows`` rows.

        Each batch holds the spine keys and, per column, the entity's state as of the row's
        timestamp within the view's TTL (None = absent); the last of ``columns`` is returned as
        ``label``. The spine is ``entity_rows`` filtered to ``[start, end)`` in their order, or,
        when empty, every event of the view in ``[start, end)`` in (event_time, entity_id) order.
        """

    @abc.abstractmethod
    async def profile(
        self, view: FeatureView, start: datetime | None, end: datetime | None, top_k: int
    ) -> DatasetProfile:
        """Statistics of the view's events with event_time in ``[start, end)`` (None = open)."""


# -- PostgreSQL ---------------------------------------------------------------------------------

_VIEW_COLUMNS = "name, entity, features, ttl_seconds, description, owner, tags, created_at, updated_at"

# COPY targets for one batch; temporary tables live as long as the pooled connection and are
# emptied at each commit, so the catalog is touched once per connection, not once per batch.
_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS offline_stage (
    feature_view text, entity_id text, event_time timestamptz, created_time timestamptz,
    feature_values jsonb, complete boolean, event_id text, source text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS online_stage (
    feature_view text, entity_id text, state jsonb, min_event_us bigint, min_created_us bigint,
    max_event_us bigint, max_created_us bigint
) ON COMMIT DELETE ROWS
"""
_STAGE_COLUMNS = ("feature_view", "entity_id", "event_time", "created_time", "feature_values", "complete",
                  "event_id", "source")

# The offline merge keeps, per feature, the value of the later created_time; its WHERE skips exact
# replays so they are counted, not rewritten.
_APPLY_OFFLINE_SQL = """
WITH offline AS (
    INSERT INTO offline_events AS o (feature_view, entity_id, event_time, created_time, feature_values,
                                     complete, event_id, source)
    SELECT feature_view, entity_id, event_time, created_time, feature_values, complete, event_id, source
    FROM pg_temp.offline_stage
    ON CONFLICT (feature_view, entity_id, event_time) DO UPDATE SET
        feature_values = CASE WHEN excluded.created_time >= o.created_time
                              THEN o.feature_values || excluded.feature_values
                              ELSE excluded.feature_values || o.feature_values END,
        created_time = greatest(o.created_time, excluded.created_time),
        complete = o.complete OR excluded.complete,
        event_id = CASE WHEN excluded.created_time >= o.created_time THEN excluded.event_id ELSE o.event_id END,
        source = CASE WHEN excluded.created_time >= o.created_time THEN excluded.source ELSE o.source END,
        ingested_at = now()
    WHERE o.feature_values IS DISTINCT FROM (CASE WHEN excluded.created_time >= o.created_time
                                                  THEN o.feature_values || excluded.feature_values
                                                  ELSE excluded.feature_values || o.feature_values END)
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) FILTER (WHERE NOT inserted) AS merged FROM offline
"""

# One row per entity. New entities are inserted (and dropped from the stage); existing ones are
# updated in a second statement, whose fresh snapshot sees rows another transaction committed
# meanwhile. A staged state whose oldest stamp is newer than everything stored is laid over it with
# `||` (cheap: the in-order case); otherwise online_merge keeps the newest value per feature, so
# out-of-order events never overwrite newer values.
_INSERT_ONLINE_SQL = """
WITH inserted AS (
    INSERT INTO online_features (feature_view, entity_id, state, max_event_us, max_created_us)
    SELECT feature_view, entity_id, state, max_event_us, max_created_us FROM pg_temp.online_stage
    ON CONFLICT (feature_view, entity_id) DO NOTHING
    RETURNING feature_view, entity_id
)
DELETE FROM pg_temp.online_stage s USING inserted i
WHERE s.feature_view = i.feature_view AND s.entity_id = i.entity_id
"""
_UPDATE_ONLINE_SQL = """
UPDATE online_features f SET
    state = CASE WHEN (s.min_event_us, s.min_created_us) > (f.max_event_us, f.max_created_us)
                 THEN f.state || s.state
                 ELSE online_merge(f.state, s.state) END,
    max_event_us = CASE WHEN (s.max_event_us, s.max_created_us) > (f.max_event_us, f.max_created_us)
                        THEN s.max_event_us ELSE f.max_event_us END,
    max_created_us = CASE WHEN (s.max_event_us, s.max_created_us) > (f.max_event_us, f.max_created_us)
                          THEN s.max_created_us ELSE f.max_created_us END,
    updated_at = now()
FROM pg_temp.online_stage s
WHERE f.feature_view = s.feature_view AND f.entity_id = s.entity_id
"""

_CASTS: dict[ValueType, str] = {
    ValueType.FLOAT: "float8",
    ValueType.INT: "int8",
    ValueType.STRING: "text",
    ValueType.BOOL: "boolean",
    ValueType.TEXT: "text",
}


# What a profile's mean/std/min/max describe per type, as SQL over feature_values ({param}: the
# feature name's parameter): the number itself, a text's length in characters, a vector's L2
# norm (kept beside it at ingestion, see vector_to_json).
_MEASURES: dict[ValueType, str] = {
    ValueType.FLOAT: "(feature_values ->> {param})::float8",
    ValueType.INT: "(feature_values ->> {param})::float8",
    ValueType.TEXT: "char_length(feature_values ->> {param})::float8",
    ValueType.FLOAT_VECTOR: "(feature_values -> {param} ->> 'n')::float8",
}
_MEASURE_NAMES: dict[ValueType, str] = {
    ValueType.FLOAT: "value", ValueType.INT: "value", ValueType.TEXT: "length", ValueType.FLOAT_VECTOR: "norm",
}


def _json_default(value: object) -> object:
    if isinstance(value, FloatVector):
        return vector_to_json(value)
    raise TypeError(f"cannot store a {type(value).__name__} as a feature value")


_VECTOR_ENCODER = json.JSONEncoder(default=_json_default)


def _dumps(document: object) -> str:
    """JSON of stored values; vectors in their stored form (:func:`vector_to_json`).

    Plain json.dumps first: an encoder with a ``default`` hook measured 20-40% slower on rows of 50
    floats, and the hook is needed only for rows that hold vectors (json.dumps refuses those).
    """
    try:
        return json.dumps(document)
    except TypeError:
        return _VECTOR_ENCODER.encode(document)


def _spec_json(spec: FeatureSpec) -> dict[str, object]:
    item: dict[str, object] = {"name": spec.name, "type": spec.type.value, "description": spec.description}
    if spec.dimension:
        item["dimension"] = spec.dimension
    if spec.max_text_bytes:
        item["max_text_bytes"] = spec.max_text_bytes
    return item


def _view_from_row(row: asyncpg.Record) -> FeatureView:
    features = json.loads(row["features"])
    return FeatureView(
        name=row["name"],
        entity=row["entity"],
        features=tuple(FeatureSpec(f["name"], ValueType(f["type"]), f.get("description", ""),
                                   f.get("dimension", 0), f.get("max_text_bytes", 0)) for f in features),
        ttl_seconds=int(row["ttl_seconds"]),
        description=row["description"],
        owner=row["owner"],
        tags=json.loads(row["tags"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _features_json(view: FeatureView) -> str:
    return json.dumps([_spec_json(f) for f in view.features])


def _same_definition(a: FeatureView, b: FeatureView) -> bool:
    return (a.entity, a.features, a.ttl_seconds, a.description, a.owner, dict(a.tags)) == (
        b.entity, b.features, b.ttl_seconds, b.description, b.owner, dict(b.tags))


def point_in_time_sql(view: FeatureView, columns: Sequence[FeatureSpec], with_spine: bool) -> str:
    """The point-in-time join for ``view`` over ``columns`` (their names are parameters $4...).

    Parameters: $1 view name, $2 window start (NULL = open), $3 window end, then one per column,
    then (with a spine) the entity ids and timestamps as arrays, then (with a TTL) the TTL in seconds.

    Per spine row, a LATERAL subquery merges the entity's events from the latest *complete* event
    at or before the row's time (older events are fully overwritten by it) and no earlier than
    ``time - ttl`` up to the row's time; the primary key and ``offline_events_complete`` make both
    probes index range scans, so cost grows with the rows, not the history.
    """
    first_array = 4 + len(columns)
    if with_spine:
        spine = (
            f"SELECT s.entity_id, s.ts, s.ord FROM unnest(${first_array}::text[], ${first_array + 1}::timestamptz[])"
            " WITH ORDINALITY AS s(entity_id, ts, ord)"
            " WHERE s.ts >= coalesce($2::timestamptz, '-infinity') AND s.ts < $3::timestamptz"
        )
        ttl_param = first_array + 2
    else:
        spine = (
            "SELECT e.entity_id, e.event_time AS ts, row_number() OVER (ORDER BY e.event_time, e.entity_id) AS ord"
            " FROM offline_events e WHERE e.feature_view = $1"
            " AND e.event_time >= coalesce($2::timestamptz, '-infinity') AND e.event_time < $3::timestamptz"
        )
        ttl_param = first_array
    lower = (f"s.ts - make_interval(secs => ${ttl_param}::float8)" if view.ttl_seconds > 0
             else "'-infinity'::timestamptz")
    # Vectors leave as their stored JSON object (decoded by the store); the rest as typed columns.
    values = ", ".join(
        f"(m.state -> ${4 + i}) AS c{i}" if column.type == ValueType.FLOAT_VECTOR
        else f"(m.state ->> ${4 + i})::{_CASTS[column.type]} AS c{i}"
        for i, column in enumerate(columns))
    return f"""
WITH spine AS ({spine})
SELECT s.entity_id, s.ts, {values}
FROM spine s
CROSS JOIN LATERAL (
    SELECT jsonb_merge_agg(o.feature_values ORDER BY o.event_time) AS state
    FROM offline_events o
    WHERE o.feature_view = $1 AND o.entity_id = s.entity_id AND o.event_time <= s.ts
      AND o.event_time >= greatest({lower}, coalesce((
          SELECT a.event_time FROM offline_events a
          WHERE a.feature_view = $1 AND a.entity_id = s.entity_id AND a.complete AND a.event_time <= s.ts
          ORDER BY a.event_time DESC LIMIT 1), '-infinity'::timestamptz))
) m
ORDER BY s.ord
"""


def _row_count(status: str) -> int:
    """Rows affected, from a command status such as ``UPDATE 12`` or ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresStore(Store):
    """:class:`Store` on PostgreSQL through an asyncpg pool whose search_path starts with ``features``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def save_view(self, view: FeatureView) -> tuple[FeatureView, bool]:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(f"SELECT {_VIEW_COLUMNS} FROM feature_views WHERE name = $1 FOR UPDATE",
                                      view.name)
            if row is not None:
                old = _view_from_row(row)
                old.check_update(view)
                if _same_definition(old, view):
                    return old, False
                row = await conn.fetchrow(
                    "UPDATE feature_views SET features = $2::jsonb, ttl_seconds = $3, description = $4, owner = $5,"
                    f" tags = $6::jsonb, updated_at = now() WHERE name = $1 RETURNING {_VIEW_COLUMNS}",
                    view.name, _features_json(view), view.ttl_seconds, view.description, view.owner,
                    json.dumps(dict(view.tags)),
                )
                return _view_from_row(row), False
            row = await conn.fetchrow(
                "INSERT INTO feature_views (name, entity, features, ttl_seconds, description, owner, tags)"
                f" VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7::jsonb) RETURNING {_VIEW_COLUMNS}",
                view.name, view.entity, _features_json(view), view.ttl_seconds, view.description, view.owner,
                json.dumps(dict(view.tags)),
            )
            return _view_from_row(row), True

    async def get_view(self, name: str) -> FeatureView | None:
        row = await self.pool.fetchrow(f"SELECT {_VIEW_COLUMNS} FROM feature_views WHERE name = $1", name)
        return None if row is None else _view_from_row(row)

    async def get_views(self, names: Sequence[str]) -> dict[str, FeatureView]:
        rows = await self.pool.fetch(f"SELECT {_VIEW_COLUMNS} FROM feature_views WHERE name = ANY($1::text[])",
                                     list(set(names)))
        return {row["name"]: _view_from_row(row) for row in rows}

    async def list_views(self, after: str, limit: int) -> list[FeatureView]:
        rows = await self.pool.fetch(
            f"SELECT {_VIEW_COLUMNS} FROM feature_views WHERE name > $1 ORDER BY name LIMIT $2", after, limit)
        return [_view_from_row(row) for row in rows]

    async def ingest(self, rows: Sequence[FeatureRow]) -> IngestResult:
        merged_rows = merge_same_key(rows)
        if not merged_rows:
            return IngestResult(0, 0, 0, 0)
        records = [
            (r.feature_view, r.entity_id, r.event_time, r.created_time, _dumps(dict(r.values)), r.complete,
             r.event_id, r.source)
            for r in merged_rows
        ]
        states = []
        for (view, entity), state in online_states(merged_rows).items():
            stamps = [(event_us, created_us) for _, event_us, created_us in state.values()]
            states.append((view, entity, _dumps(state), *min(stamps), *max(stamps)))
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_STAGE_DDL)
            await conn.copy_records_to_table("offline_stage", records=records, columns=_STAGE_COLUMNS,
                                             schema_name="pg_temp")
            await conn.copy_records_to_table("online_stage", records=states, schema_name="pg_temp")
            offline = await conn.fetchrow(_APPLY_OFFLINE_SQL)
            new_entities = _row_count(await conn.execute(_INSERT_ONLINE_SQL))
            online_updated = new_entities + _row_count(await conn.execute(_UPDATE_ONLINE_SQL))
        inserted, merged = int(offline["inserted"]), int(offline["merged"])
        return IngestResult(inserted, merged, len(records) - inserted - merged, int(online_updated))

    async def online_values(
        self, view: str, entity_ids: Sequence[str], features: Sequence[str]
    ) -> dict[tuple[str, str], OnlineValue]:
        rows = await self.pool.fetch(
            "SELECT entity_id, state FROM online_features WHERE feature_view = $1 AND entity_id = ANY($2::text[])",
            view, list(entity_ids),
        )
        wanted = set(features)
        found: dict[tuple[str, str], OnlineValue] = {}
        for row in rows:
            for name, (value, event_us, _) in json.loads(row["state"]).items():
                if name in wanted:
                    found[(row["entity_id"], name)] = OnlineValue(stored_value(value), from_unix_us(event_us))
        return found

    async def point_in_time_rows(
        self,
        view: FeatureView,
        columns: Sequence[FeatureSpec],
        *,
        start: datetime | None,
        end: datetime,
        entity_rows: Sequence[EntityRow] = (),
        batch_rows: int = 5000,
    ) -> AsyncIterator[TrainingSetChunk]:
        sql = point_in_time_sql(view, columns, bool(entity_rows))
        vectors = [i for i, column in enumerate(columns) if column.type == ValueType.FLOAT_VECTOR]
        args: list[object] = [view.name, start, end, *(c.name for c in columns)]
        if entity_rows:
            args += [[r.entity_id for r in entity_rows], [r.timestamp for r in entity_rows]]
        if view.ttl_seconds > 0:
            args.append(float(view.ttl_seconds))
        async with self.pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
            # A big join may take longer than the pool's statement timeout before its first row;
            # the trainer bounds the whole stream (GYRE_TRAINER_TRAINING_SET_TIMEOUT_S) instead.
            await conn.execute("SET LOCAL statement_timeout = 0")
            # A server-side cursor streams the join: memory stays bounded by batch_rows whatever
            # the size of the set, and the snapshot keeps the rows consistent across batches.
            cursor = await conn.cursor(sql, *args)
            while True:
                records = await cursor.fetch(batch_rows)
                if not records:
                    return
                # Values arrive typed (the SQL casts them); zip transposes rows into columns in C.
                entity_ids, times, *values = (list(column) for column in zip(*records, strict=True))
                for i in vectors:
                    values[i] = [None if v is None else vector_from_json(json.loads(v)) for v in values[i]]
                yield TrainingSetChunk(entity_ids, times, values[:-1], values[-1])

    async def profile(
        self, view: FeatureView, start: datetime | None, end: datetime | None, top_k: int
    ) -> DatasetProfile:
        window = ("feature_view = $1 AND event_time >= coalesce($2::timestamptz, '-infinity')"
                  " AND event_time < coalesce($3::timestamptz, 'infinity')")
        measured = [spec for spec in view.features if not spec.type.categorical]
        categorical = [spec for spec in view.features if spec.type.categorical]
        selects = ["count(*) AS rows", "count(DISTINCT entity_id) AS entities"]
        for i, spec in enumerate(measured):
            x = _MEASURES[spec.type].format(param=f"${4 + i}")
            selects += [f"count({x}) AS n{i}", f"avg({x}) AS mean{i}", f"stddev_samp({x}) AS std{i}",
                        f"min({x}) AS min{i}", f"max({x}) AS max{i}"]
        async with self.pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
            head = await conn.fetchrow(f"SELECT {', '.join(selects)} FROM offline_events WHERE {window}",
                                       view.name, start, end, *(s.name for s in measured))
            rows = int(head["rows"])
            profiles: dict[str, FeatureProfile] = {}
            for i, spec in enumerate(measured):
                count = int(head[f"n{i}"])
                profiles[spec.name] = FeatureProfile(
                    name=spec.name, type=spec.type, count=count, missing=rows - count,
                    measure=_MEASURE_NAMES[spec.type],
                    mean=head[f"mean{i}"], std=head[f"std{i}"], min=head[f"min{i}"], max=head[f"max{i}"],
                )
            for spec in categorical:
                stats = await conn.fetch(
                    f"SELECT v, count(*) AS n, count(*) OVER () AS distinct_values FROM ("
                    f" SELECT feature_values ->> $4 AS v FROM offline_events WHERE {window}) t"
                    " WHERE v IS NOT NULL GROUP BY v ORDER BY n DESC, v LIMIT $5",
                    view.name, start, end, spec.name, top_k,
                )
                count = int(await conn.fetchval(
                    f"SELECT count(feature_values ->> $4) FROM offline_events WHERE {window}",
                    view.name, start, end, spec.name))
                profiles[spec.name] = FeatureProfile(
                    name=spec.name, type=spec.type, count=count, missing=rows - count,
                    distinct=int(stats[0]["distinct_values"]) if stats else 0,
                    top=tuple(CategoryCount(str(r["v"]), int(r["n"])) for r in stats),
                )
        return DatasetProfile(
            feature_view=view.name, start=start, end=end, rows=rows, entities=int(head["entities"]),
            features=tuple(profiles[spec.name] for spec in view.features),
        )
