"""MLflow's registry search grammar (the subset Gyre answers) and the SQL it becomes."""

from __future__ import annotations

import pytest

from gyre_registry.domain.errors import InvalidArgument
from gyre_registry.mlflow.filters import Clause, parse_filter, parse_order_by, to_sql


def test_empty_filter_has_no_clauses() -> None:
    assert parse_filter("", "model") == []
    assert to_sql([], [], "model").where == "TRUE"


def test_clauses_joined_by_and_any_case() -> None:
    clauses = parse_filter("name LIKE 'churn-%' and tags.team = \"growth\" AND tag.`mlflow.prompt.is_prompt` != 'true'",
                           "model")
    assert clauses == [
        Clause("name", "LIKE", "churn-%"),
        Clause("tags.team", "=", "growth"),
        Clause("tags.mlflow.prompt.is_prompt", "!=", "true"),
    ]


def test_version_keys() -> None:
    assert parse_filter("run_id IN ('a', 'b') AND version_number >= 2", "version") == [
        Clause("run_id", "IN", ("a", "b")), Clause("version_number", ">=", 2),
    ]
    assert parse_filter("source_path ILIKE '%model' AND name = 'x'", "version") == [
        Clause("source_path", "ILIKE", "%model"), Clause("name", "=", "x"),
    ]


def test_escaped_quotes_in_values() -> None:
    assert parse_filter(r"name = 'it\'s'", "model") == [Clause("name", "=", "it's")]


@pytest.mark.parametrize("text", [
    "colour = 'red'",                 # unknown key
    "run_id = 'a'",                   # a version key on models
    "name = red",                     # unquoted value
    "name ~ 'x'",                     # unknown comparator
    "name = 'a' OR name = 'b'",       # OR is not in the grammar
    "name = 'a' name = 'b'",          # missing AND
    "name",                           # incomplete
    "name =",                         # no value
    "name IN ('a')",                  # IN on a string key other than run_id
    "tags. = 'x'",                    # empty tag key
])
def test_rejected_model_filters(text: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_filter(text, "model")
    assert str(raised.value).startswith("filter:")


@pytest.mark.parametrize("text", ["version_number = 'x'", "version_number LIKE 1", "run_id LIKE 'a%'",
                                  "run_id IN ('a'", "run_id IN (1)"])
def test_rejected_version_filters(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_filter(text, "version")


def test_sql_binds_values_and_numbers_parameters_from_first() -> None:
    sql = to_sql(parse_filter("name LIKE 'a%' AND tags.k = 'v' AND tags.p != 'true'", "model"), [], "model", first=3)
    assert sql.where == (
        "m.name LIKE $3 AND m.tags @> jsonb_build_object($4::text, $5::text) "
        "AND m.tags ->> $6::text IS DISTINCT FROM $7::text"
    )
    assert sql.params == ["a%", "k", "v", "p", "true"]


def test_sql_for_versions() -> None:
    sql = to_sql(parse_filter("run_id IN ('a', 'b') AND run_id != 'c'", "version"), ["version_number ASC"], "version")
    assert sql.where == "(v.lineage ->> 'runId') = ANY($1::text[]) AND coalesce(v.lineage ->> 'runId', '') <> $2"
    assert sql.params == [["a", "b"], "c"]
    assert sql.order_by == "v.version ASC, v.model_name ASC"


def test_order_by_defaults_tie_breaks_and_errors() -> None:
    assert parse_order_by([], "model") == ["m.name ASC"]
    assert parse_order_by([], "version") == ["v.model_name ASC", "v.version DESC"]
    assert parse_order_by(["last_updated_timestamp DESC"], "model") == ["m.updated_at DESC", "m.name ASC"]
    for bad in (["colour"], ["name SIDEWAYS"], ["name ASC extra"], ["version_number"]):
        with pytest.raises(InvalidArgument):
            parse_order_by(bad, "model")
