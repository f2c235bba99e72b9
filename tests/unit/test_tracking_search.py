"""MLflow's search grammar: filters, order_by, page tokens, and the SQL they compile to."""

from __future__ import annotations

import pytest

from gyre_tracking.domain.errors import InvalidArgument
from gyre_tracking.domain.model import ViewType
from gyre_tracking.domain.search import (
    BoolOp,
    Comparison,
    Entity,
    OrderKey,
    SearchQuery,
    decode_page_token,
    encode_page_token,
    page_size,
    parse_experiment_filter,
    parse_experiment_order_by,
    parse_filter,
    parse_order_by,
)
from gyre_tracking.store.search_sql import compile_search


def test_empty_filter_matches_everything() -> None:
    assert parse_filter("") == [] and parse_filter("   ") == []


def test_comparisons_of_every_entity() -> None:
    parsed = parse_filter(
        "metrics.rmse < 0.5 and params.model = 'rf' AND tags.`team name` LIKE 'risk%' "
        "and attributes.status != \"FINISHED\" and metric.\"val loss\" >= -1e3 and params.depth IN ('3', '4') "
        "and tags.x IS NOT NULL and param.y is null and attr.start_time > 1700000000000 "
        "and metrics.train.loss <> 2 and run.run_name ILIKE '%trial%' and attributes.run_id NOT IN ('a')")
    assert parsed == [
        Comparison(Entity.METRIC, "rmse", "<", 0.5),
        Comparison(Entity.PARAM, "model", "=", "rf"),
        Comparison(Entity.TAG, "team name", "LIKE", "risk%"),
        Comparison(Entity.ATTRIBUTE, "status", "!=", "FINISHED"),
        Comparison(Entity.METRIC, "val loss", ">=", -1000.0),
        Comparison(Entity.PARAM, "depth", "IN", ("3", "4")),
        Comparison(Entity.TAG, "x", "IS NOT NULL", None),
        Comparison(Entity.PARAM, "y", "IS NULL", None),
        Comparison(Entity.ATTRIBUTE, "start_time", ">", 1.7e12),
        Comparison(Entity.METRIC, "train.loss", "!=", 2.0),
        Comparison(Entity.ATTRIBUTE, "run_name", "ILIKE", "%trial%"),
        Comparison(Entity.ATTRIBUTE, "run_id", "NOT IN", ("a",)),
    ]


def test_quotes_inside_strings() -> None:
    assert parse_filter("params.q = 'it''s'") == [Comparison(Entity.PARAM, "q", "=", "it's")]
    assert parse_filter("params.q = 'a\\'b'") == [Comparison(Entity.PARAM, "q", "=", "a'b")]


@pytest.mark.parametrize(("text", "fragment"), [
    ("metrics.rmse < 'low'", "compares with a number"),
    ("params.model > 1", "> does not apply to param 'model'"),
    ("params.model = rf", "compares with a quoted string"),
    ("rmse < 1", "unknown identifier 'rmse'"),
    ("metrics.rmse < 1 metrics.mae < 1", "expected AND or OR"),
    ("(metrics.rmse < 1 or metrics.mae < 1", "expected ')' to close the '(' at position 0"),
    ("metrics.rmse < 1)", "unbalanced ')' at position 16"),
    ("metrics.rmse < 1 or", "unexpected end of the filter"),
    ("metrics.rmse <", "unexpected end"),
    ("attributes.colour = 'red'", "unknown attribute 'colour'"),
    ("attributes.status = 'DONE'", "unknown run status 'DONE'"),
    ("params.a IN 'x'", "parenthesised list"),
    ("params.a IN ('x' 'y')", "expected ',' or ')'"),
    ("metrics.rmse LIKE '1%'", "LIKE does not apply to metric 'rmse'"),
    ("metrics.rmse < 1 ; drop table runs", "unexpected character ';'"),
])
def test_bad_filters_say_where(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_filter(text)
    assert fragment in str(info.value), str(info.value)


def test_order_by() -> None:
    assert parse_order_by(["metrics.rmse", "params.`max depth` DESC", "attributes.start_time asc"]) == [
        OrderKey(Entity.METRIC, "rmse", True),
        OrderKey(Entity.PARAM, "max depth", False),
        OrderKey(Entity.ATTRIBUTE, "start_time", True),
    ]
    with pytest.raises(InvalidArgument, match="unexpected 'sideways'"):
        parse_order_by(["metrics.rmse sideways"])


def test_page_tokens_and_sizes() -> None:
    assert decode_page_token("") == 0
    assert decode_page_token(encode_page_token(300)) == 300
    for bad in ["garbage!", encode_page_token(-1), "eyJvZmZzZXQiOiAieCJ9"]:
        with pytest.raises(InvalidArgument, match="invalid page_token"):
            decode_page_token(bad)
    assert page_size(0) == 100 and page_size(1000) == 1000
    with pytest.raises(InvalidArgument, match="out of range"):
        page_size(1001)


def test_sql_binds_every_value() -> None:
    query = SearchQuery(
        experiment_ids=("1",),
        comparisons=tuple(parse_filter("metrics.rmse < 0.5 and params.model = 'x''; drop table runs; --'")),
        order_by=tuple(parse_order_by(["metrics.rmse DESC"])),
        max_results=11,
        offset=20,
    )
    sql, args = compile_search(query, [1])
    assert "drop table" not in sql.lower()
    assert args == [[1], "rmse", 0.5, "model", "x'; drop table runs; --", "rmse", 11, 20]
    assert "latest_metrics x" in sql and "x.experiment_id = ANY($1::bigint[])" in sql
    assert sql.index("o0.value DESC NULLS LAST") < sql.index("r.start_time DESC")


def test_or_and_parentheses() -> None:
    rmse = Comparison(Entity.METRIC, "rmse", "<", 1.0)
    mae = Comparison(Entity.METRIC, "mae", "<", 2.0)
    rf = Comparison(Entity.PARAM, "model", "=", "rf")
    assert parse_filter("metrics.rmse < 1 or metrics.mae < 2") == [BoolOp("OR", (rmse, mae))]
    # AND binds tighter than OR, as in SQL.
    assert parse_filter("metrics.rmse < 1 or metrics.mae < 2 and params.model = 'rf'") == [
        BoolOp("OR", (rmse, BoolOp("AND", (mae, rf))))]
    # A top-level AND stays a list of conjuncts; nested ANDs flatten.
    assert parse_filter("(metrics.rmse < 1 or metrics.mae < 2) and (params.model = 'rf')") == [
        BoolOp("OR", (rmse, mae)), rf]
    assert parse_filter("((metrics.rmse < 1 and metrics.mae < 2)) and params.model = 'rf'") == [rmse, mae, rf]


def test_or_compiles_to_bound_sql() -> None:
    query = SearchQuery(experiment_ids=("1",), comparisons=tuple(parse_filter(
        "metrics.rmse < 0.5 or (tags.team LIKE 'x%' and params.model IN ('a', 'b'))")), order_by=(), max_results=10,
        offset=0, view=ViewType.ALL)
    sql, args = compile_search(query, [1])
    assert " OR " in sql and "lifecycle_stage" not in sql.split("WHERE", 1)[1].split("ORDER BY")[0]
    assert "x%" not in sql and "'a'" not in sql
    assert args == [[1], "rmse", 0.5, "team", "x%", "model", ["a", "b"], 10, 0]


def test_experiment_filters() -> None:
    assert parse_experiment_filter("name LIKE 'churn%' or tags.team = 'risk'") == [BoolOp("OR", (
        Comparison(Entity.ATTRIBUTE, "name", "LIKE", "churn%"), Comparison(Entity.TAG, "team", "=", "risk")))]
    assert parse_experiment_filter("attributes.creation_time > 5") == [
        Comparison(Entity.ATTRIBUTE, "creation_time", ">", 5.0)]
    with pytest.raises(InvalidArgument, match=r"unknown identifier 'metrics\.x'"):
        parse_experiment_filter("metrics.x > 1")
    assert parse_experiment_order_by(["name DESC"]) == [OrderKey(Entity.ATTRIBUTE, "name", False)]
