"""The tracking handlers over the real PostgreSQL store: bulk writes, concurrent writers, search at scale."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gyre_common.db import create_pool, migrate
from gyre_common.settings import DatabaseSettings
from gyre_tracking.domain.errors import ParamConflict
from gyre_tracking.domain.model import Metric, RunStatus
from gyre_tracking.handlers import RunBatch, TrackingEventCommand, TrackingHandlers
from gyre_tracking.mlflow_json import run_json
from gyre_tracking.store import PostgresStore

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(DatabaseSettings(url=database_url, pool_max_size=6), "tracking")
    await migrate(pool, "tracking", "gyre_tracking.migrations")
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def handlers(pool: asyncpg.Pool) -> TrackingHandlers:
    handlers = TrackingHandlers(PostgresStore(pool), "file:///srv/tracking")
    await handlers.ensure_default_experiment()
    return handlers


async def test_a_thousand_points_in_one_call(handlers: TrackingHandlers, pool: asyncpg.Pool) -> None:
    run = await handlers.create_run("0", start_time=T0)
    run_id = run.info.run_id
    points = [Metric(f"m{i % 10}", float(i), i // 10, T0 + timedelta(milliseconds=i)) for i in range(1000)]
    await handlers.log_metrics(run_id, points)
    await handlers.log_metrics(run_id, points[::-1])  # the same again, in another order
    assert await pool.fetchval("SELECT count(*) FROM tracking.metrics") == 1000
    latest = {m.key: (m.step, m.value) for m in (await handlers.get_run(run_id)).metrics}
    assert latest == {f"m{k}": (99, float(990 + k)) for k in range(10)}
    history = await handlers.metric_history(run_id, "m3")
    assert [m.step for m in history] == list(range(100))


async def test_latest_metric_rule_step_then_time_then_value(handlers: TrackingHandlers) -> None:
    run_id = (await handlers.create_run("0", start_time=T0)).info.run_id
    await handlers.log_metrics(run_id, [Metric("x", 5.0, 3, T0)])
    await handlers.log_metrics(run_id, [Metric("x", 9.0, 2, T0 + timedelta(hours=1))])  # lower step: not latest
    await handlers.log_metrics(run_id, [Metric("x", 1.0, 3, T0 + timedelta(seconds=1))])  # same step, later
    await handlers.log_metrics(run_id, [Metric("x", 2.0, 3, T0 + timedelta(seconds=1))])  # same step+time, larger
    await handlers.log_metrics(run_id, [Metric("y", math.inf, 0, T0), Metric("y", -math.inf, 0, T0)])
    latest = {m.key: m for m in (await handlers.get_run(run_id)).metrics}
    assert (latest["x"].step, latest["x"].value) == (3, 2.0)
    assert latest["y"].value == math.inf
    assert len(await handlers.metric_history(run_id, "y")) == 2


async def test_concurrent_writers(handlers: TrackingHandlers) -> None:
    run_id = (await handlers.create_run("0", start_time=T0)).info.run_id
    steps = list(range(200))
    random.Random(7).shuffle(steps)
    # Writers racing on the same run and keys: the latest point still wins.
    await asyncio.gather(*(handlers.log_metrics(run_id, [Metric("loss", 1.0 / (s + 1), s, T0)]) for s in steps))
    run = await handlers.get_run(run_id)
    assert [(m.step, m.value) for m in run.metrics] == [(199, 1.0 / 200)]
    # Racing params: exactly one value wins, every other writer gets a conflict.
    outcomes = await asyncio.gather(*(handlers.log_params(run_id, [("seed", str(i % 3))]) for i in range(9)),
                                    return_exceptions=True)
    winners = {str(i % 3) for i, outcome in enumerate(outcomes) if outcome is None}
    assert len(winners) == 1
    assert all(isinstance(o, ParamConflict) for i, o in enumerate(outcomes) if str(i % 3) not in winners)
    assert (await handlers.get_run(run_id)).params == {"seed": winners.pop()}
    # Events for new runs of a new experiment, applied concurrently: one experiment, every run in it.
    events = [TrackingEventCommand(event_id=f"e{i}", run_id=f"race-{i}", experiment_name="race", run_name="",
                                   batch=RunBatch(), status=None, end_time=None, occurred_at=T0) for i in range(5)]
    reports = await asyncio.gather(*(handlers.ingest([event], "test") for event in events))
    assert all(report.applied == 1 for report in reports)
    experiment = await handlers.get_experiment_by_name("race")
    runs, _ = await handlers.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_id for r in runs) == [f"race-{i}" for i in range(5)]


async def test_param_conflict_rolls_back_the_whole_batch(handlers: TrackingHandlers) -> None:
    run_id = (await handlers.create_run("0", start_time=T0)).info.run_id
    await handlers.log_params(run_id, [("a", "1")])
    with pytest.raises(ParamConflict):
        await handlers.log_batch(run_id, RunBatch(metrics=[Metric("m", 1.0, 0, T0)], params=[("b", "2"), ("a", "3")],
                                                  tags=[("t", "v")]))
    run = await handlers.get_run(run_id)
    assert run.params == {"a": "1"} and run.metrics == [] and "t" not in run.tags


async def test_search_over_many_runs(handlers: TrackingHandlers, pool: asyncpg.Pool) -> None:
    experiment = await handlers.create_experiment("big")
    eid = int(experiment.experiment_id)
    other = await handlers.create_experiment("other")
    count = 5000
    # Bulk-load runs and their latest metrics the way a busy server would have them.
    await pool.execute("""
        INSERT INTO tracking.runs (run_id, experiment_id, name, status, start_time, artifact_uri)
        SELECT 'bulk' || lpad(g::text, 6, '0'), CASE WHEN g % 10 = 0 THEN $2::bigint ELSE $1::bigint END, 'r' || g,
               CASE WHEN g % 3 = 0 THEN 'FINISHED' ELSE 'RUNNING' END,
               $3::timestamptz + g * interval '1 second', 'file:///x'
        FROM generate_series(1, $4) AS g""", eid, int(other.experiment_id), T0, count)
    await pool.execute("""
        INSERT INTO tracking.latest_metrics (run_pk, key, experiment_id, step, ts, value)
        SELECT run_pk, k, experiment_id, 0, $1, (run_pk * 7919 % 1000) / 1000.0
        FROM tracking.runs, unnest(ARRAY['rmse', 'mae']) AS k WHERE run_id LIKE 'bulk%'""", T0)
    await pool.execute("""
        INSERT INTO tracking.params (run_pk, key, value)
        SELECT run_pk, 'model', CASE WHEN run_pk % 2 = 0 THEN 'rf' ELSE 'lr' END FROM tracking.runs
        WHERE run_id LIKE 'bulk%'""")
    await pool.execute("ANALYZE tracking.runs; ANALYZE tracking.latest_metrics; ANALYZE tracking.params")
    rows = await pool.fetch("""
        SELECT r.run_id, r.status, p.value AS model, m.value AS rmse FROM tracking.runs r
        JOIN tracking.latest_metrics m ON m.run_pk = r.run_pk AND m.key = 'rmse'
        JOIN tracking.params p ON p.run_pk = r.run_pk AND p.key = 'model'
        WHERE r.experiment_id = $1""", eid)
    expected = sorted((r for r in rows if r["rmse"] < 0.05 and r["model"] == "rf" and r["status"] == "FINISHED"),
                      key=lambda r: (r["rmse"], r["run_id"]))

    found, token = await handlers.search_runs(
        [experiment.experiment_id],
        "metrics.rmse < 0.05 and params.model = 'rf' and attributes.status = 'FINISHED'",
        ["metrics.rmse ASC", "attributes.run_id ASC"], page_size=10)
    assert [r.info.run_id for r in found] == [r["run_id"] for r in expected[:10]]
    assert token and all(r.params == {"model": "rf"} and len(r.metrics) == 2 for r in found)
    rest, last = await handlers.search_runs(
        [experiment.experiment_id],
        "metrics.rmse < 0.05 and params.model = 'rf' and attributes.status = 'FINISHED'",
        ["metrics.rmse ASC", "attributes.run_id ASC"], page_size=1000, page_token=token)
    assert [r.info.run_id for r in found + rest] == [r["run_id"] for r in expected] and last == ""

    newest, _ = await handlers.search_runs([experiment.experiment_id], page_size=3)
    assert [r.info.run_id for r in newest] == ["bulk004999", "bulk004998", "bulk004997"]
    since_ms = int((T0 + timedelta(seconds=4998)).timestamp() * 1000)
    late, _ = await handlers.search_runs([experiment.experiment_id], f"attributes.start_time >= {since_ms}")
    assert [r.info.run_id for r in late] == ["bulk004999", "bulk004998"]

    # The metric filter is answered from the search index, not by scanning every run's metrics.
    plan = "\n".join(r[0] for r in await pool.fetch(
        "EXPLAIN SELECT 1 FROM tracking.runs r WHERE r.experiment_id = ANY($1::bigint[]) AND "
        "EXISTS (SELECT 1 FROM tracking.latest_metrics x WHERE x.run_pk = r.run_pk AND x.key = 'rmse' AND "
        "x.experiment_id = ANY($1::bigint[]) AND x.value < 0.01)", [eid]))
    assert "latest_metrics_search" in plan, plan


async def test_status_update_in_a_transaction(handlers: TrackingHandlers) -> None:
    run_id = (await handlers.create_run("0", start_time=T0)).info.run_id
    updated = await handlers.update_run(run_id, status=RunStatus.KILLED, end_time=T0 + timedelta(minutes=1))
    assert updated.status is RunStatus.KILLED
    assert (await handlers.get_run(run_id)).info == updated


async def test_runs_rendered_by_postgres_are_the_json_python_renders(handlers: TrackingHandlers) -> None:
    # search_runs_json (MLflow's runs/search) must say exactly what run_json says of search_runs.
    experiment = await handlers.create_experiment("rendered")
    eid = experiment.experiment_id
    odd = await handlers.create_run(eid, run_name="odd values", start_time=T0 + timedelta(microseconds=1500),
                                    tags=[("note", 'quote " backslash \\ é \u2028'), ("mlflow.user", "ann")])
    await handlers.log_batch(odd.info.run_id, RunBatch(
        metrics=[Metric("nan", math.nan, 0, T0), Metric("inf", math.inf, 1, T0), Metric("ninf", -math.inf, 0, T0),
                 Metric("big", 1e300, 0, T0 + timedelta(milliseconds=3, microseconds=999)),
                 Metric("tiny", 5e-324, 7, T0), Metric("int", 3.0, 2, T0), Metric("third", 1 / 3, 0, T0),
                 Metric("neg", -0.1, 0, datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=UTC))],
        params=[("b", "2"), ("a", "x" * 300), ("empty", "")]))
    await handlers.update_run(odd.info.run_id, status=RunStatus.FINISHED,
                              end_time=T0 + timedelta(seconds=5, microseconds=999))
    bare = await handlers.create_run(eid, start_time=T0 + timedelta(seconds=1))
    for order in ([], ["metrics.third DESC"], ["params.a ASC", "attributes.run_name DESC"]):
        runs, token = await handlers.search_runs([eid], order_by=order)
        texts, json_token = await handlers.search_runs_json([eid], order_by=order)
        assert [json.loads(text) for text in texts] == [json.loads(json.dumps(run_json(run))) for run in runs]
        assert token == json_token == ""
    assert {r.info.run_id for r in runs} == {odd.info.run_id, bare.info.run_id}
    # Paging and filters are the same as search_runs'.
    first, token = await handlers.search_runs_json([eid], "metrics.int >= 3 or tags.note LIKE 'quote%'", page_size=1)
    assert [json.loads(t)["info"]["run_id"] for t in first] == [odd.info.run_id] and token == ""
    first, token = await handlers.search_runs_json([eid], page_size=1)
    rest, last = await handlers.search_runs_json([eid], page_size=1, page_token=token)
    assert [json.loads(t)["info"]["run_id"] for t in first + rest] == [bare.info.run_id, odd.info.run_id]
    assert token and last == ""
