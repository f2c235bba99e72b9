"""PostgreSQL adapter of the tracking store (asyncpg, schema ``tracking`` on the search path).

Bulk writes go in one statement each: points, params and tags travel as parallel arrays through
``unnest`` (one round trip for 1000 points, with ``ON CONFLICT`` for idempotency, which COPY
cannot do). ``migrations/0001_init.sql`` explains the tables and indexes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from gyre_common.bus import claim_event
from gyre_tracking.domain.errors import AlreadyExists
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
from gyre_tracking.domain.runs import experiment_artifact_location
from gyre_tracking.domain.search import Expr, OrderKey, SearchQuery
from gyre_tracking.store.base import RunHandle, TrackingSession, TrackingStore
from gyre_tracking.store.search_sql import (
    RUN_COLUMNS,
    compile_experiment_search,
    compile_search,
    compile_search_json,
)

_EXPERIMENT_COLUMNS = "experiment_id, name, artifact_location, lifecycle_stage, created_at, last_updated_at"

# Append points and keep the newest point per key, in one statement. DISTINCT ON picks each key's
# newest point of the batch; the upsert replaces the stored one only if the new one is newer by
# (step, ts, value), which also makes concurrent writers converge on the same answer.
_WRITE_METRICS_CTE = """
input AS (
    SELECT k AS key, v AS value, s AS step, t AS ts
    FROM unnest($2::text[], $3::float8[], $4::int8[], $5::timestamptz[]) AS u(k, v, s, t)
),
appended AS (
    INSERT INTO metrics (run_pk, key, step, ts, value)
    SELECT run.run_pk, i.key, i.step, i.ts, i.value FROM input i, run
    ON CONFLICT DO NOTHING
    RETURNING 1
),
latest AS (
    INSERT INTO latest_metrics AS lm (run_pk, key, experiment_id, step, ts, value)
    SELECT DISTINCT ON (i.key) run.run_pk, i.key, run.experiment_id, i.step, i.ts, i.value FROM input i, run
    ORDER BY i.key, i.step DESC, i.ts DESC, i.value DESC
    ON CONFLICT (run_pk, key) DO UPDATE SET step = excluded.step, ts = excluded.ts, value = excluded.value
    WHERE (excluded.step, excluded.ts, excluded.value) > (lm.step, lm.ts, lm.value)
    RETURNING 1
)"""

_LOG_METRICS = f"""
WITH found AS (SELECT run_pk, experiment_id, lifecycle_stage FROM runs WHERE run_id = $1),
run AS (SELECT run_pk, experiment_id FROM found WHERE lifecycle_stage = 'active'),
{_WRITE_METRICS_CTE}
SELECT (SELECT lifecycle_stage FROM found), (SELECT count(*) FROM appended), (SELECT count(*) FROM latest)
"""

_WRITE_METRICS = f"""
WITH run AS (SELECT $1::bigint AS run_pk, $6::bigint AS experiment_id),
{_WRITE_METRICS_CTE}
SELECT (SELECT count(*) FROM appended), (SELECT count(*) FROM latest)
"""


def _metric_arrays(metrics: Sequence[Metric]) -> tuple[list[str], list[float], list[int], list[Any]]:
    return ([m.key for m in metrics], [float(m.value) for m in metrics], [m.step for m in metrics],
            [m.timestamp for m in metrics])


def _run_info(row: asyncpg.Record) -> RunInfo:
    return RunInfo(
        run_id=row["run_id"],
        experiment_id=str(row["experiment_id"]),
        run_name=row["name"],
        status=RunStatus(row["status"]),
        start_time=row["start_time"],
        end_time=row["end_time"],
        artifact_uri=row["artifact_uri"],
        user=row["user_id"],
        lifecycle_stage=LifecycleStage(row["lifecycle_stage"]),
    )


def _artifact(row: asyncpg.Record) -> RunArtifact:
    return RunArtifact(path=row["path"], uri=row["uri"], sha256=row["sha256"], size_bytes=row["size_bytes"],
                       format=row["format"], logged_at=row["logged_at"])


class PostgresSession(TrackingSession):
    """:class:`TrackingSession` over one asyncpg connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # -- experiments -------------------------------------------------------------------------

    async def _experiments(self, rows: Sequence[asyncpg.Record]) -> list[Experiment]:
        ids = [row["experiment_id"] for row in rows]
        tags: dict[int, dict[str, str]] = {i: {} for i in ids}
        if ids:
            for tag in await self.conn.fetch(
                    "SELECT experiment_id, key, value FROM experiment_tags WHERE experiment_id = ANY($1::bigint[]) "
                    "ORDER BY key", ids):
                tags[tag["experiment_id"]][tag["key"]] = tag["value"]
        return [Experiment(experiment_id=str(row["experiment_id"]), name=row["name"],
                           artifact_location=row["artifact_location"],
                           lifecycle_stage=LifecycleStage(row["lifecycle_stage"]), created_at=row["created_at"],
                           last_updated_at=row["last_updated_at"], tags=tags[row["experiment_id"]])
                for row in rows]

    async def _insert_experiment(self, name: str, location: str | None, root: str,
                                 experiment_id: str | None) -> asyncpg.Record | None:
        # The id is drawn first so that a default location can name it (MLflow: <root>/<id>).
        if experiment_id is None:
            new_id = await self.conn.fetchval(
                "SELECT nextval(pg_get_serial_sequence('experiments', 'experiment_id'))")
        else:
            new_id = int(experiment_id)
        location = location or experiment_artifact_location(root, str(new_id))
        row: asyncpg.Record | None = await self.conn.fetchrow(
            f"INSERT INTO experiments (experiment_id, name, artifact_location) VALUES ($1, $2, $3) "
            f"ON CONFLICT DO NOTHING RETURNING {_EXPERIMENT_COLUMNS}", new_id, name, location)
        return row

    async def create_experiment(self, name: str, artifact_location: str | None, artifact_root: str,
                                tags: Mapping[str, str]) -> Experiment:
        row = await self._insert_experiment(name, artifact_location, artifact_root, None)
        if row is None:
            raise AlreadyExists(f"an experiment named {name!r} already exists")
        if tags:
            await self.conn.execute(
                "INSERT INTO experiment_tags (experiment_id, key, value) "
                "SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS u(k, v)",
                row["experiment_id"], list(tags), list(tags.values()))
        return (await self._experiments([row]))[0]

    async def ensure_experiment(self, name: str, artifact_root: str, *, experiment_id: str | None = None
                                ) -> Experiment:
        found = await self.get_experiment_by_name(name)
        if found is not None:
            return found
        row = await self._insert_experiment(name, None, artifact_root, experiment_id)
        if row is not None:
            return (await self._experiments([row]))[0]
        # Another writer created it between our read and our insert.
        found = await self.get_experiment_by_name(name)
        if found is None:
            raise AlreadyExists(f"cannot create experiment {name!r}: its id {experiment_id} is taken")
        return found

    async def get_experiment(self, experiment_id: str) -> Experiment | None:
        rows = await self.conn.fetch(f"SELECT {_EXPERIMENT_COLUMNS} FROM experiments WHERE experiment_id = $1",
                                     int(experiment_id))
        found = await self._experiments(rows)
        return found[0] if found else None

    async def get_experiment_by_name(self, name: str) -> Experiment | None:
        rows = await self.conn.fetch(f"SELECT {_EXPERIMENT_COLUMNS} FROM experiments WHERE name = $1", name)
        found = await self._experiments(rows)
        return found[0] if found else None

    async def list_experiments(self, limit: int, offset: int) -> list[Experiment]:
        rows = await self.conn.fetch(
            f"SELECT {_EXPERIMENT_COLUMNS} FROM experiments WHERE lifecycle_stage = 'active' "
            "ORDER BY experiment_id LIMIT $1 OFFSET $2", limit, offset)
        return await self._experiments(rows)

    async def missing_experiments(self, experiment_ids: Sequence[str]) -> list[str]:
        present = {row["experiment_id"] for row in await self.conn.fetch(
            "SELECT experiment_id FROM experiments WHERE experiment_id = ANY($1::bigint[])",
            [int(i) for i in experiment_ids])}
        return [i for i in experiment_ids if int(i) not in present]

    async def search_experiments(self, view: ViewType, comparisons: Sequence[Expr], order_by: Sequence[OrderKey],
                                 limit: int, offset: int) -> list[Experiment]:
        sql, args = compile_experiment_search(view, comparisons, order_by, limit, offset)
        return await self._experiments(await self.conn.fetch(sql, *args))

    async def rename_experiment(self, experiment_id: str, name: str, now: datetime) -> None:
        try:
            await self.conn.execute("UPDATE experiments SET name = $2, last_updated_at = $3 WHERE experiment_id = $1",
                                    int(experiment_id), name, now)
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"an experiment named {name!r} already exists") from None

    async def set_experiment_lifecycle(self, experiment_id: str, stage: LifecycleStage, now: datetime) -> None:
        if stage is LifecycleStage.DELETED:
            await self.conn.execute(
                "UPDATE runs SET lifecycle_stage = 'deleted', deleted_time = $2 "
                "WHERE experiment_id = $1 AND lifecycle_stage = 'active'", int(experiment_id), now)
        else:
            # The runs deleted together with the experiment (or after it), not those deleted before.
            await self.conn.execute(
                "UPDATE runs r SET lifecycle_stage = 'active', deleted_time = NULL FROM experiments e "
                "WHERE e.experiment_id = $1 AND r.experiment_id = e.experiment_id "
                "AND r.lifecycle_stage = 'deleted' AND r.deleted_time >= e.last_updated_at", int(experiment_id))
        await self.conn.execute(
            "UPDATE experiments SET lifecycle_stage = $2, last_updated_at = $3 WHERE experiment_id = $1",
            int(experiment_id), stage.value, now)

    async def set_experiment_tags(self, experiment_id: str, tags: Mapping[str, str], now: datetime) -> None:
        await self.conn.execute(
            "INSERT INTO experiment_tags AS t (experiment_id, key, value) "
            "SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS u(k, v) "
            "ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
            int(experiment_id), list(tags), list(tags.values()))
        await self.conn.execute("UPDATE experiments SET last_updated_at = $2 WHERE experiment_id = $1",
                                int(experiment_id), now)

    async def delete_experiment_tag(self, experiment_id: str, key: str, now: datetime) -> bool:
        status = await self.conn.execute("DELETE FROM experiment_tags WHERE experiment_id = $1 AND key = $2",
                                         int(experiment_id), key)
        await self.conn.execute("UPDATE experiments SET last_updated_at = $2 WHERE experiment_id = $1",
                                int(experiment_id), now)
        return bool(status != "DELETE 0")

    # -- runs --------------------------------------------------------------------------------

    async def set_run_lifecycle(self, handle: RunHandle, stage: LifecycleStage, now: datetime) -> None:
        await self.conn.execute(
            "UPDATE runs SET lifecycle_stage = $2, deleted_time = $3 WHERE run_pk = $1",
            handle.pk, stage.value, now if stage is LifecycleStage.DELETED else None)

    async def delete_tag(self, handle: RunHandle, key: str) -> bool:
        status = await self.conn.execute("DELETE FROM tags WHERE run_pk = $1 AND key = $2", handle.pk, key)
        return bool(status != "DELETE 0")

    async def insert_run(self, run: NewRun, artifact_uri: str) -> tuple[RunHandle, bool]:
        row = await self.conn.fetchrow(
            "INSERT INTO runs (run_id, experiment_id, name, user_id, status, start_time, artifact_uri) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (run_id) DO NOTHING "
            f"RETURNING {RUN_COLUMNS.replace('r.', '')}",
            run.run_id, int(run.experiment_id), run.run_name, run.user, run.status.value, run.start_time,
            artifact_uri)
        if row is None:
            existing = await self.get_run_handle(run.run_id)
            assert existing is not None, "a run that conflicted on insert exists"
            return existing, False
        handle = RunHandle(row["run_pk"], _run_info(row))
        if run.tags:
            await self.write_tags(handle, run.tags)
        return handle, True

    async def get_run_handle(self, run_id: str, *, for_update: bool = False) -> RunHandle | None:
        lock = " FOR UPDATE" if for_update else ""
        row = await self.conn.fetchrow(f"SELECT {RUN_COLUMNS} FROM runs r WHERE r.run_id = $1{lock}", run_id)
        return None if row is None else RunHandle(row["run_pk"], _run_info(row))

    async def update_run_info(self, handle: RunHandle, info: RunInfo) -> None:
        await self.conn.execute("UPDATE runs SET status = $2, end_time = $3, name = $4 WHERE run_pk = $1",
                                handle.pk, info.status.value, info.end_time, info.run_name)

    async def _hydrate(self, rows: Sequence[asyncpg.Record]) -> list[Run]:
        pks = [row["run_pk"] for row in rows]
        if not pks:
            return []
        metrics: dict[int, list[Metric]] = {pk: [] for pk in pks}
        params: dict[int, dict[str, str]] = {pk: {} for pk in pks}
        tags: dict[int, dict[str, str]] = {pk: {} for pk in pks}
        artifacts: dict[int, list[RunArtifact]] = {pk: [] for pk in pks}
        for m in await self.conn.fetch("SELECT run_pk, key, value, step, ts FROM latest_metrics "
                                       "WHERE run_pk = ANY($1::bigint[]) ORDER BY key", pks):
            metrics[m["run_pk"]].append(Metric(m["key"], m["value"], m["step"], m["ts"]))
        for p in await self.conn.fetch("SELECT run_pk, key, value FROM params WHERE run_pk = ANY($1::bigint[]) "
                                       "ORDER BY key", pks):
            params[p["run_pk"]][p["key"]] = p["value"]
        for t in await self.conn.fetch("SELECT run_pk, key, value FROM tags WHERE run_pk = ANY($1::bigint[]) "
                                       "ORDER BY key", pks):
            tags[t["run_pk"]][t["key"]] = t["value"]
        for a in await self.conn.fetch("SELECT * FROM run_artifacts WHERE run_pk = ANY($1::bigint[]) ORDER BY path",
                                       pks):
            artifacts[a["run_pk"]].append(_artifact(a))
        return [Run(_run_info(row), metrics[row["run_pk"]], params[row["run_pk"]], tags[row["run_pk"]],
                    artifacts[row["run_pk"]]) for row in rows]

    async def get_run(self, run_id: str) -> Run | None:
        rows = await self.conn.fetch(f"SELECT {RUN_COLUMNS} FROM runs r WHERE r.run_id = $1", run_id)
        runs = await self._hydrate(rows)
        return runs[0] if runs else None

    async def search_runs(self, query: SearchQuery) -> list[Run]:
        sql, args = compile_search(query, [int(i) for i in query.experiment_ids])
        return await self._hydrate(await self.conn.fetch(sql, *args))

    async def search_runs_json(self, query: SearchQuery) -> list[str]:
        sql, args = compile_search_json(query, [int(i) for i in query.experiment_ids])
        return [row[0] for row in await self.conn.fetch(sql, *args)]

    # -- run data ----------------------------------------------------------------------------

    async def log_metrics(self, run_id: str, metrics: Sequence[Metric]) -> LifecycleStage | None:
        row = await self.conn.fetchrow(_LOG_METRICS, run_id, *_metric_arrays(metrics))
        assert row is not None
        stage = row[0]
        return None if stage is None else LifecycleStage(stage)

    async def write_metrics(self, handle: RunHandle, metrics: Sequence[Metric]) -> None:
        if metrics:
            await self.conn.fetchrow(_WRITE_METRICS, handle.pk, *_metric_arrays(metrics),
                                     int(handle.info.experiment_id))

    async def write_params(self, handle: RunHandle, params: Mapping[str, str]) -> dict[str, str]:
        if not params:
            return {}
        # For a key that exists with another value, the no-op update locks the stored row and
        # RETURNING hands back its value; new keys come back with the value just inserted.
        rows = await self.conn.fetch(
            "INSERT INTO params AS p (run_pk, key, value) "
            "SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS u(k, v) "
            "ON CONFLICT (run_pk, key) DO UPDATE SET value = p.value WHERE p.value <> excluded.value "
            "RETURNING key, value",
            handle.pk, list(params), list(params.values()))
        return {row["key"]: row["value"] for row in rows if row["value"] != params[row["key"]]}

    async def write_tags(self, handle: RunHandle, tags: Mapping[str, str]) -> None:
        if tags:
            await self.conn.execute(
                "INSERT INTO tags AS t (run_pk, key, value) "
                "SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS u(k, v) "
                "ON CONFLICT (run_pk, key) DO UPDATE SET value = excluded.value WHERE t.value <> excluded.value",
                handle.pk, list(tags), list(tags.values()))

    async def write_artifact(self, handle: RunHandle, artifact: RunArtifact) -> RunArtifact:
        await self.conn.execute(
            "INSERT INTO run_artifacts (run_pk, path, uri, sha256, size_bytes, format) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_pk, path) DO NOTHING",
            handle.pk, artifact.path, artifact.uri, artifact.sha256, artifact.size_bytes, artifact.format)
        row = await self.conn.fetchrow("SELECT * FROM run_artifacts WHERE run_pk = $1 AND path = $2",
                                       handle.pk, artifact.path)
        assert row is not None
        return _artifact(row)

    async def metric_history(self, handle: RunHandle, key: str, *, limit: int | None = None,
                             offset: int = 0) -> list[Metric]:
        # LIMIT NULL is no limit.
        rows = await self.conn.fetch("SELECT key, value, step, ts FROM metrics WHERE run_pk = $1 AND key = $2 "
                                     "ORDER BY step, ts, value LIMIT $3 OFFSET $4", handle.pk, key, limit, offset)
        return [Metric(row["key"], row["value"], row["step"], row["ts"]) for row in rows]

    # -- ingest ------------------------------------------------------------------------------

    async def claim_event(self, consumer: str, event_id: str) -> bool:
        return await claim_event(self.conn, consumer, event_id)


class PostgresStore(TrackingStore):
    """:class:`TrackingStore` on an asyncpg pool whose search path starts with the ``tracking`` schema."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def session(self) -> AsyncIterator[TrackingSession]:
        async with self.pool.acquire() as conn:
            yield PostgresSession(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[TrackingSession]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield PostgresSession(conn)
