"""MLflow's registry search grammar (the subset Gyre answers) and the SQL it becomes."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gyre_registry.domain.errors import InvalidArgument, NotFound
from gyre_registry.mlflow.filters import (
    MAX_CLAUSES,
    MAX_FILTER_LENGTH,
    MAX_ORDER_BY,
    MAX_ORDER_BY_LENGTH,
    Clause,
    parse_filter,
    parse_order_by,
    to_sql,
)
from gyre_registry.mlflow.handlers import _page, version_param


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


# -- limits -----------------------------------------------------------------------------------------

def test_a_filter_over_the_length_limit_is_refused() -> None:
    text = "version_number = " + "1" * 9_980 + "x"
    with pytest.raises(InvalidArgument, match=f"is {len(text)} characters long; at most {MAX_FILTER_LENGTH}"):
        parse_filter(text, "version")


def test_version_numbers_in_filters_fit_bigint() -> None:
    assert parse_filter(f"version_number <= {2**63 - 1}", "version") == [Clause("version_number", "<=", 2**63 - 1)]
    for bad in (str(2**63), "99999999999999999999", str(-(2**63) - 1)):
        with pytest.raises(InvalidArgument, match="outside"):
            parse_filter(f"version_number > {bad}", "version")
    with pytest.raises(InvalidArgument, match="malformed number"):
        parse_filter("version_number > 1e9", "version")


def test_clause_and_order_by_limits() -> None:
    parse_filter(" AND ".join(["name = 'a'"] * MAX_CLAUSES), "model")
    with pytest.raises(InvalidArgument, match=f"more than {MAX_CLAUSES} clauses"):
        parse_filter(" AND ".join(["name = 'a'"] * (MAX_CLAUSES + 1)), "model")
    with pytest.raises(InvalidArgument, match=f"at most {MAX_ORDER_BY}"):
        parse_order_by(["name"] * (MAX_ORDER_BY + 1), "model")
    with pytest.raises(InvalidArgument, match=f"at most {MAX_ORDER_BY_LENGTH}"):
        parse_order_by(["name" + " " * MAX_ORDER_BY_LENGTH + "ASC"], "model")


def test_quoted_punctuation_is_a_value_not_punctuation() -> None:
    assert parse_filter("run_id IN ('(', ',', ')')", "version") == [Clause("run_id", "IN", ("(", ",", ")"))]
    with pytest.raises(InvalidArgument, match="parenthesised list"):
        parse_filter("run_id IN '(' 'a')", "version")


def test_unclosed_quotes_say_where() -> None:
    with pytest.raises(InvalidArgument, match="unclosed quote ' at position 7"):
        parse_filter("name = 'churn", "model")
    with pytest.raises(InvalidArgument, match="unclosed quote ` at position 5"):
        parse_filter("tags.`team = 'x'", "model")


# -- properties -------------------------------------------------------------------------------------

_BITS = st.sampled_from([
    "name", "run_id", "source_path", "version_number", "tags.", "tag.", "`", "'", '"', "\\", " AND ", " and ",
    " OR ", " IN ", " LIKE ", " ilike ", "=", "!=", "<", "<=", ">", ">=", "!", "(", ")", ",", "-", "1", "99", ".",
    " ", "x", "_", "\u0661", "\x00", ";",
])


@settings(max_examples=500, deadline=timedelta(seconds=2))
@given(st.one_of(st.text(max_size=200), st.lists(_BITS, max_size=50).map("".join)),
       st.sampled_from(["model", "version"]))
def test_any_text_is_clauses_or_invalid_argument(text: str, entity: str) -> None:
    try:
        to_sql(parse_filter(text, entity), [], entity)  # type: ignore[arg-type]
    except InvalidArgument as exc:
        assert str(exc).startswith("filter:")
    try:
        parse_order_by([text], entity)  # type: ignore[arg-type]
    except InvalidArgument as exc:
        assert str(exc).startswith("order_by:")


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@st.composite
def _clause(draw: st.DrawFn) -> tuple[Clause, str]:
    kind = draw(st.sampled_from(["name", "tag", "run_id", "in", "source_path", "version_number"]))
    if kind == "version_number":
        op, number = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">="])), draw(st.integers(-(2**63), 2**63 - 1))
        return Clause("version_number", op, number), f"version_number {op} {number}"
    if kind == "in":
        values = draw(st.lists(st.text(max_size=8), min_size=1, max_size=4))
        return Clause("run_id", "IN", tuple(values)), f"run_id {draw(st.sampled_from(['IN', 'in']))} (" + \
            ", ".join(map(_quoted, values)) + ")"
    op = draw(st.sampled_from(["=", "!="] if kind == "run_id" else ["=", "!=", "LIKE", "ILIKE"]))
    value = draw(st.text(max_size=12))
    if kind == "tag":
        tag = draw(st.text(alphabet=st.characters(blacklist_characters="`"), min_size=1, max_size=10))
        prefix = draw(st.sampled_from(["tags.", "tag."]))
        return Clause(f"tags.{tag}", op, value), f"{prefix}`{tag}` {op} {_quoted(value)}"
    return Clause(kind, op, value), f"{kind} {draw(st.sampled_from([op, op.lower()]))} {_quoted(value)}"


@settings(max_examples=300, deadline=timedelta(seconds=2))
@given(st.lists(_clause(), max_size=8), st.sampled_from([" AND ", " and ", "\tAnd\n"]))
def test_well_formed_version_filters_parse_to_their_clauses(clauses: list[tuple[Clause, str]], joiner: str) -> None:
    assert parse_filter(joiner.join(text for _, text in clauses), "version") == [clause for clause, _ in clauses]


# -- version numbers and paging of the MLflow handlers ------------------------------------------------

@pytest.mark.parametrize("raw", ["abc", "1e9", "1.0", " 1", "+1", "0x1", "\u0661", "", "-", "1_0"])
def test_a_version_that_is_not_an_integer_is_invalid(raw: str) -> None:
    with pytest.raises(InvalidArgument, match="version"):
        version_param({"name": "m", "version": raw})


@pytest.mark.parametrize("raw", ["-1", "0", "99999999999999999999", str(2**63), "9" * 5000, -5])
def test_a_version_no_model_can_have_is_not_found(raw: object) -> None:
    # As MLflow answers: RESOURCE_DOES_NOT_EXIST for a version that is not there.
    with pytest.raises(NotFound, match="has no version"):
        version_param({"name": "m", "version": raw})


def test_versions_in_range() -> None:
    assert version_param({"version": "7"}) == 7 and version_param({"version": 7}) == 7
    assert version_param({"version": str(2**63 - 1)}) == 2**63 - 1


def _token(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_paging_sizes_and_tokens() -> None:
    assert _page({}, 100, 1000) == (100, 0)
    assert _page({"max_results": "50", "page_token": _token({"o": 300})}, 100, 1000) == (50, 300)
    assert _page({"max_results": 7.0}, 100, 1000) == (7, 0)
    sizes: list[object] = [-1, 1001, "1e3", 1.5, True, [], {}, "9" * 5000, float("inf"), 10**400]
    for size in sizes:
        with pytest.raises(InvalidArgument, match="max_results"):
            _page({"max_results": size}, 100, 1000)
    for token in ("garbage!", _token("o"), _token({"o": "12"}), _token({"o": -1}), _token({"o": 2**63}),
                  _token({"o": 1.5}), _token({"o": True}), _token({"offset": 1}), "[" * 300, 12, ["x"],
                  base64.urlsafe_b64encode(b"[" * 100_000).decode()):
        with pytest.raises(InvalidArgument, match="page_token"):
            _page({"page_token": token}, 100, 1000)
