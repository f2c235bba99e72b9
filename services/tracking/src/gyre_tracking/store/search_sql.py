"""Compile a :class:`~gyre_tracking.domain.search.SearchQuery` into one parameterised SQL query.

Every value travels as a bind parameter; only fixed column names and operators from the tables
below are spliced into the text, so a filter cannot inject SQL.

Shape: ``runs r`` narrowed by experiment and lifecycle (index ``runs_experiment_start``), one
``EXISTS`` per comparison on metrics/params/tags (metric ones also name the experiments so that
PostgreSQL can answer them with a range scan of ``latest_metrics_search`` and a hash semi-join),
one ``LEFT JOIN`` per metric/param/tag sort key, then ``start_time DESC, run_id`` as tie-breakers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gyre_common.mlflow.search_sql import Args, Column, ColumnMap, KeyedRows, where_sql
from gyre_tracking.domain.model import ViewType
from gyre_tracking.domain.search import Entity, Expr, OrderKey, SearchQuery

RUN_COLUMNS = ("r.run_pk, r.run_id, r.experiment_id, r.name, r.status, r.start_time, r.end_time, "
               "r.artifact_uri, r.user_id, r.lifecycle_stage")

_ATTRIBUTE_COLUMNS = {
    "run_id": "r.run_id",
    "run_name": "r.name",
    "status": "r.status",
    "user_id": "r.user_id",
    "artifact_uri": "r.artifact_uri",
    "start_time": "r.start_time",
    "end_time": "r.end_time",
}
_KEYED_TABLES: dict[str, str] = {Entity.METRIC: "latest_metrics", Entity.PARAM: "params", Entity.TAG: "tags"}


def _epoch_millis(column: str) -> str:
    # MLflow compares times in epoch milliseconds.
    return f"floor(extract(epoch FROM {column}) * 1000)::float8"


def _run_filter_columns(experiments: str) -> ColumnMap:
    """Where each key of a run filter reads (the shared grammar's column map); ``experiments`` is
    the placeholder of the searched experiments' keys."""
    columns: dict[tuple[str, str | None], Any] = {
        (Entity.ATTRIBUTE, name): Column(_epoch_millis(column), "::float8") if name in ("start_time", "end_time")
        else Column(column, "::text")
        for name, column in _ATTRIBUTE_COLUMNS.items()
    }
    # Metric comparisons also name the experiments, so that PostgreSQL can answer them with a range
    # scan of latest_metrics_search and a hash semi-join.
    columns[(Entity.METRIC, None)] = KeyedRows("latest_metrics", "x.run_pk = r.run_pk", "::float8",
                                               scope=f"x.experiment_id = ANY({experiments})")
    columns[(Entity.PARAM, None)] = KeyedRows("params", "x.run_pk = r.run_pk")
    columns[(Entity.TAG, None)] = KeyedRows("tags", "x.run_pk = r.run_pk")
    return columns


_VIEW_CONDITIONS = {
    ViewType.ACTIVE_ONLY: ["r.lifecycle_stage = 'active'"],
    ViewType.DELETED_ONLY: ["r.lifecycle_stage = 'deleted'"],
    ViewType.ALL: [],
}


def _order_sql(index: int, key: OrderKey, args: Args, experiments: str) -> tuple[str, str, str]:
    """(LEFT JOIN or "", sort expression, direction) of one order_by key."""
    direction = "ASC NULLS LAST" if key.ascending else "DESC NULLS LAST"
    if key.entity is Entity.ATTRIBUTE:
        return "", _ATTRIBUTE_COLUMNS[key.key], direction
    alias = f"o{index}"
    table = _KEYED_TABLES[key.entity]
    join = f"LEFT JOIN {table} {alias} ON {alias}.run_pk = r.run_pk AND {alias}.key = {args.add(key.key, '::text')}"
    if key.entity is Entity.METRIC:
        # Redundant (a run's metrics carry its experiment), but it lets PostgreSQL read the sort
        # key's values from latest_metrics_search for these experiments only, not for every run.
        join += f" AND {alias}.experiment_id = ANY({experiments})"
    return join, f"{alias}.value", direction


def _page_sql(query: SearchQuery, experiment_pks: list[int], args: Args, *, sort_columns: bool
              ) -> tuple[str, list[str]]:
    """The query selecting one page of runs (:data:`RUN_COLUMNS`, then the sort keys as ``k0``,
    ``k1``... when ``sort_columns``), and the ORDER BY terms over those ``k`` columns."""
    experiments = args.add(experiment_pks, "::bigint[]")
    # With one experiment, equality lets runs_experiment_start hand rows over already in the
    # default order (no sort); "= ANY(array)" would not.
    scope = f"r.experiment_id = ({experiments})[1]" if len(experiment_pks) == 1 else \
        f"r.experiment_id = ANY({experiments})"
    where = [scope, *_VIEW_CONDITIONS[query.view]]
    where += where_sql(query.comparisons, _run_filter_columns(experiments), args)
    joins: list[str] = []
    terms: list[tuple[str, str]] = []
    for index, key in enumerate(query.order_by):
        join, expression, direction = _order_sql(index, key, args, experiments)
        if join:
            joins.append(join)
        terms.append((expression, direction))
    # Tie-breakers in the order of runs_experiment_start (NOT NULL columns, its default NULLS placement).
    terms += [("r.start_time", "DESC"), ("r.run_id", "ASC")]
    order = ", ".join(f"{expression} {direction}" for expression, direction in terms)
    keys = "".join(f", {expression} AS k{i}" for i, (expression, _) in enumerate(terms)) if sort_columns else ""
    sql = (f"SELECT {RUN_COLUMNS}{keys} FROM runs r {' '.join(joins)} WHERE {' AND '.join(where)} "
           f"ORDER BY {order} LIMIT {args.add(query.max_results, '::bigint')} "
           f"OFFSET {args.add(query.offset, '::bigint')}")
    return sql, [f"k{i} {direction}" for i, (_, direction) in enumerate(terms)]


def compile_search(query: SearchQuery, experiment_pks: list[int]) -> tuple[str, list[Any]]:
    """The SQL text and bind parameters selecting one page of ``query``'s runs (:data:`RUN_COLUMNS`)."""
    args = Args()
    sql, _ = _page_sql(query, experiment_pks, args, sort_columns=False)
    return sql, args.values


def _millis(column: str) -> str:
    # MLflow's epoch milliseconds, floored like gyre_tracking.mlflow_json.to_millis (extract
    # returns an exact numeric).
    return f"floor(extract(epoch FROM {column}) * 1000)::int8"


# MLflow's Run message (gyre_tracking.mlflow_json.run_json: same keys, same order) of a page row
# "p", as compact JSON text. row_to_json/json_agg over sub-selects rather than json_build_object
# per value: about a third less PostgreSQL time for a page of 1000 runs. float8 values become
# JSON numbers in their shortest exact text, NaN and +-Infinity the strings "NaN", "Infinity",
# "-Infinity" (proto3 JSON, as MLflow writes them); json_strip_nulls drops end_time while unset.
# The sub-selects' ORDER BY reaches the aggregates (PostgreSQL feeds them the index order).
_RUN_JSON = f"""'{{"info":' || json_strip_nulls((
        SELECT row_to_json(i) FROM (
            SELECT p.run_id, p.run_id AS run_uuid, p.name AS run_name, p.experiment_id::text AS experiment_id,
                   p.user_id, p.status, {_millis('p.start_time')} AS start_time, {_millis('p.end_time')} AS end_time,
                   p.artifact_uri, p.lifecycle_stage) i))
    || ',"data":{{"metrics":' || coalesce((
        SELECT json_agg(x) FROM (
            SELECT m.key, m.value, {_millis('m.ts')} AS timestamp, m.step
            FROM latest_metrics m WHERE m.run_pk = p.run_pk ORDER BY m.key) x), '[]')
    || ',"params":' || coalesce((
        SELECT json_agg(x) FROM (SELECT q.key, q.value FROM params q WHERE q.run_pk = p.run_pk ORDER BY q.key) x), '[]')
    || ',"tags":' || coalesce((
        SELECT json_agg(x) FROM (SELECT q.key, q.value FROM tags q WHERE q.run_pk = p.run_pk ORDER BY q.key) x), '[]')
    || '}},"inputs":{{}},"outputs":{{}}}}'"""


def compile_search_json(query: SearchQuery, experiment_pks: list[int]) -> tuple[str, list[Any]]:
    """Like :func:`compile_search`, but each row is one text column: the run as the JSON of
    MLflow's ``Run`` message, built by PostgreSQL (for runs/search answers of thousands of runs,
    where building the same JSON in Python was most of the time)."""
    args = Args()
    page, order = _page_sql(query, experiment_pks, args, sort_columns=True)
    # The outer ORDER BY repeats the page's order over its selected sort keys: a subquery's order
    # is not guaranteed to survive the select around it.
    return f"SELECT {_RUN_JSON} FROM ({page}) p ORDER BY {', '.join(order)}", args.values


EXPERIMENT_COLUMNS = "e.experiment_id, e.name, e.artifact_location, e.lifecycle_stage, e.created_at, e.last_updated_at"
"""What :func:`compile_experiment_search` selects."""

_EXPERIMENT_ATTRIBUTE_COLUMNS = {
    "name": "e.name",
    "experiment_id": "e.experiment_id",
    "creation_time": "e.created_at",
    "last_update_time": "e.last_updated_at",
}


_EXPERIMENT_FILTER_COLUMNS: ColumnMap = {
    (Entity.ATTRIBUTE, "name"): Column("e.name", "::text"),
    (Entity.ATTRIBUTE, "creation_time"): Column(_epoch_millis("e.created_at"), "::float8"),
    (Entity.ATTRIBUTE, "last_update_time"): Column(_epoch_millis("e.last_updated_at"), "::float8"),
    (Entity.TAG, None): KeyedRows("experiment_tags", "x.experiment_id = e.experiment_id"),
}


def compile_experiment_search(view: ViewType, comparisons: Sequence[Expr], order_by: Sequence[OrderKey],
                              limit: int, offset: int) -> tuple[str, list[Any]]:
    """SQL and bind parameters selecting one page of experiments (:data:`EXPERIMENT_COLUMNS`).

    Default order, as MLflow's: newest first (creation_time DESC), then experiment_id.
    """
    args = Args()
    stages = [stage.value for stage in view.stages]
    where = [f"e.lifecycle_stage = ANY({args.add(stages, '::text[]')})"]
    where += where_sql(comparisons, _EXPERIMENT_FILTER_COLUMNS, args)
    order = [f"{_EXPERIMENT_ATTRIBUTE_COLUMNS[k.key]} {'ASC' if k.ascending else 'DESC'}" for k in order_by]
    order += ["e.created_at DESC", "e.experiment_id ASC"]
    sql = (f"SELECT {EXPERIMENT_COLUMNS} FROM experiments e WHERE {' AND '.join(where)} "
           f"ORDER BY {', '.join(order)} LIMIT {args.add(limit, '::bigint')} OFFSET {args.add(offset, '::bigint')}")
    return sql, args.values
