"""MLflow's search grammar: filters, order_by, page tokens, and the SQL they compile to."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gyre_tracking.domain.errors import InvalidArgument
from gyre_tracking.domain.model import RunStatus, ViewType
from gyre_tracking.domain.search import (
    MAX_FILTER_LENGTH,
    MAX_NESTING,
    MAX_ORDER_BY_LENGTH,
    MAX_PAGE_OFFSET,
    NUMERIC_OPS,
    BoolOp,
    Comparison,
    Entity,
    Expr,
    OrderKey,
    SearchQuery,
    count_comparisons,
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


# -- limits: length, nesting, tokens ---------------------------------------------------------------

def test_a_filter_over_the_length_limit_is_refused_before_it_is_read() -> None:
    # The shape that used to backtrack: a long run of digits that ends in a letter.
    text = "metrics.a < " + "1" * 9_980 + "x"
    with pytest.raises(InvalidArgument, match=f"{len(text)} characters long; at most {MAX_FILTER_LENGTH}"):
        parse_filter(text)
    with pytest.raises(InvalidArgument, match="characters long"):
        parse_experiment_filter(text)


def test_a_long_number_running_into_a_letter_is_a_malformed_number() -> None:
    text = "metrics.a < " + "1" * (MAX_FILTER_LENGTH - 13) + "x"
    assert len(text) == MAX_FILTER_LENGTH
    with pytest.raises(InvalidArgument, match="malformed number '1111") as info:
        parse_filter(text)
    # The message quotes a window of the filter, not all of it.
    assert len(str(info.value)) < 400


def test_parentheses_nest_up_to_the_limit() -> None:
    inner = "metrics.a < 1"
    assert parse_filter("(" * MAX_NESTING + inner + ")" * MAX_NESTING) == [Comparison(Entity.METRIC, "a", "<", 1.0)]
    with pytest.raises(InvalidArgument, match=f"nested more than {MAX_NESTING} levels deep at position {MAX_NESTING}"):
        parse_filter("(" * (MAX_NESTING + 1) + inner + ")" * (MAX_NESTING + 1))
    # What used to end in RecursionError (and a dropped connection).
    with pytest.raises(InvalidArgument, match="nested more than"):
        parse_filter("(" * 3000 + inner + ")" * 3000)


def test_unclosed_quotes_say_where() -> None:
    with pytest.raises(InvalidArgument, match="unclosed quote ' at position 11"):
        parse_filter("params.a = 'x")
    with pytest.raises(InvalidArgument, match="unclosed quote ` at position 7"):
        parse_filter("params.`x = 'y'")


def test_order_by_limits() -> None:
    with pytest.raises(InvalidArgument, match=f"at most {MAX_ORDER_BY_LENGTH}"):
        parse_order_by(["metrics." + "a" * MAX_ORDER_BY_LENGTH])
    with pytest.raises(InvalidArgument, match=f"at most {MAX_ORDER_BY_LENGTH}"):
        parse_experiment_order_by(["name" + " " * MAX_ORDER_BY_LENGTH])
    with pytest.raises(InvalidArgument, match="order_by keys; at most"):
        parse_order_by(["metrics.a"] * 11)


def _token(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize("token", [
    "garbage!",                                   # not base64
    "%%%%",                                       # nothing base64 in it
    _token(b"\xff\xfe\x00garbage"),               # base64 of bytes that are not text
    _token(b"not json"),                          # base64 of text that is not JSON
    _token(b"[1, 2]"), _token(b"7"), _token(b'"offset"'), _token(b"{}"),   # JSON of the wrong shape
    _token(b'{"offset": "12"}'), _token(b'{"offset": 1.5}'), _token(b'{"offset": true}'),
    _token(b'{"offset": null}'), _token(b'{"offset": [1]}'),
    _token(b'{"offset": -1}'),                    # negative
    _token(b'{"offset": 99999999999999999999}'),  # beyond bigint
    _token(b'{"offset": 1e400}'),                 # infinity
    _token(b'{"offset": ' + b"9" * 5000 + b"}"),  # more digits than int() takes
    _token(b"[" * 100_000 + b"]" * 100_000),       # nested deeper than the JSON decoder recurses
    "eyJvZmZzZXQiOiAxfQ" + "A" * 300,             # too long
])
def test_bad_page_tokens_are_invalid_arguments(token: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid page_token"):
        decode_page_token(token)


def test_page_token_offsets_up_to_the_limit() -> None:
    assert decode_page_token(encode_page_token(MAX_PAGE_OFFSET)) == MAX_PAGE_OFFSET
    with pytest.raises(InvalidArgument):
        decode_page_token(encode_page_token(MAX_PAGE_OFFSET + 1))


# -- properties: any text is a filter or the domain's own error ------------------------------------

_GRAMMAR_BITS = st.sampled_from([
    "metrics.", "params.", "tags.", "attributes.", "attr.start_time", "run.status", "name", "creation_time",
    " and ", " AND ", " or ", " OR ", " not ", " in ", " is ", " null ", " like ", " ilike ", " asc", " desc",
    "(", ")", ",", ".", "=", "!=", "<>", "<", "<=", ">", ">=", "'", '"', "`", "\\", "''",
    "1", "-2.5", "1e5", ".5", "1e", "+", "-", " ", "\t", "\n", "x", "_", "é", "\u0661", "\x00", ";",
])
_FILTER_TEXT = st.one_of(st.text(max_size=200), st.lists(_GRAMMAR_BITS, max_size=60).map("".join))


@settings(max_examples=500, deadline=timedelta(seconds=2))
@given(_FILTER_TEXT)
def test_any_text_parses_or_fails_with_invalid_argument(text: str) -> None:
    for parse in (parse_filter, parse_experiment_filter):
        try:
            parse(text)
        except InvalidArgument:
            pass
    for order in (parse_order_by, parse_experiment_order_by):
        try:
            order([text])
        except InvalidArgument:
            pass


@settings(max_examples=300, deadline=timedelta(seconds=2))
@given(st.one_of(st.text(max_size=300), st.binary(max_size=200).map(_token),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                              lambda inner: st.lists(inner, max_size=3)
                              | st.dictionaries(st.sampled_from(["offset", "o", "x"]), inner, max_size=3),
                              max_leaves=10).map(lambda value: _token(json.dumps(value).encode()))))
def test_any_page_token_is_an_offset_or_invalid_argument(token: str) -> None:
    try:
        offset = decode_page_token(token)
    except InvalidArgument:
        return
    assert 0 <= offset <= MAX_PAGE_OFFSET


# Well-formed filters: comparisons of every kind joined by AND / OR in parentheses; each one must
# parse to the expression it was built from (ANDs flattened, as the parser does).

_BARE_KEY = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}(\.[A-Za-z0-9_]{1,4}){0,2}", fullmatch=True)
_ANY_KEY = st.text(min_size=1, max_size=12)
_STRING_VALUE = st.text(max_size=12)
_NUMBER = st.floats(allow_nan=False, allow_infinity=False)
_KEYWORD_CASE = st.sampled_from([str.upper, str.lower, str.title])


def _quoted(value: str, quote: str = "'") -> str:
    if quote == "`":
        return "`" + value.replace("`", "``") + "`"
    return quote + value.replace("\\", "\\\\").replace(quote, quote * 2) + quote


@st.composite
def _key(draw: st.DrawFn, prefix: str) -> tuple[str, str]:
    """(key, how it is written)"""
    if draw(st.booleans()):
        key = draw(_BARE_KEY)
        return key, f"{prefix}.{key}"
    key, quote = draw(_ANY_KEY), draw(st.sampled_from(["`", '"']))
    return key, f"{prefix}.{_quoted(key, quote)}"


@st.composite
def _comparison(draw: st.DrawFn) -> tuple[Comparison, str]:
    kind = draw(st.sampled_from(["metric", "string", "in", "null", "time", "status"]))
    case = draw(_KEYWORD_CASE)
    if kind == "metric":
        key, written = draw(_key(draw(st.sampled_from(["metrics", "metric"]))))
        op, number = draw(st.sampled_from(sorted(NUMERIC_OPS | {"<>"}))), draw(_NUMBER)
        return Comparison(Entity.METRIC, key, "!=" if op == "<>" else op, number), f"{written} {op} {number!r}"
    if kind == "time":
        op, millis = draw(st.sampled_from(sorted(NUMERIC_OPS))), draw(st.integers(0, 2**50))
        return Comparison(Entity.ATTRIBUTE, "start_time", op, float(millis)), f"attributes.start_time {op} {millis}"
    if kind == "status":
        status = draw(st.sampled_from(sorted(RunStatus.__members__)))
        return Comparison(Entity.ATTRIBUTE, "status", "=", status), f"attributes.status = {_quoted(status)}"
    entity = draw(st.sampled_from([Entity.PARAM, Entity.TAG]))
    key, written = draw(_key("params" if entity is Entity.PARAM else "tags"))
    if kind == "null":
        op = draw(st.sampled_from(["IS NULL", "IS NOT NULL"]))
        return Comparison(entity, key, op, None), f"{written} {case(op)}"
    if kind == "in":
        op = draw(st.sampled_from(["IN", "NOT IN"]))
        values = draw(st.lists(_STRING_VALUE, min_size=1, max_size=4))
        listed = ", ".join(_quoted(v, draw(st.sampled_from(["'", '"']))) for v in values)
        return Comparison(entity, key, op, tuple(values)), f"{written} {case(op)} ({listed})"
    op = draw(st.sampled_from(["=", "!=", "LIKE", "ILIKE"]))
    text = draw(_STRING_VALUE)
    return Comparison(entity, key, op, text), f"{written} {case(op)} {_quoted(text)}"


def _join(op: Literal["AND", "OR"]) -> Callable[[st.SearchStrategy[tuple[Expr, str]]], st.SearchStrategy[
        tuple[Expr, str]]]:
    def build(children: st.SearchStrategy[tuple[Expr, str]]) -> st.SearchStrategy[tuple[Expr, str]]:
        @st.composite
        def joined(draw: st.DrawFn) -> tuple[Expr, str]:
            parts = draw(st.lists(children, min_size=2, max_size=3))
            word = f" {draw(_KEYWORD_CASE)(op)} "
            return BoolOp(op, tuple(expr for expr, _ in parts)), "(" + word.join(text for _, text in parts) + ")"
        return joined()
    return build


def _flatten_and(expr: Expr) -> Expr:
    if isinstance(expr, Comparison):
        return expr
    operands = [_flatten_and(operand) for operand in expr.operands]
    if expr.op == "OR":
        return BoolOp("OR", tuple(operands))
    flat: list[Expr] = []
    for operand in operands:
        flat.extend(operand.operands if isinstance(operand, BoolOp) and operand.op == "AND" else [operand])
    return BoolOp("AND", tuple(flat))


_EXPRESSIONS = st.recursive(_comparison(), lambda children: _join("AND")(children) | _join("OR")(children),
                            max_leaves=12)


@settings(max_examples=300, deadline=timedelta(seconds=2))
@given(_EXPRESSIONS)
def test_well_formed_filters_parse_to_what_they_say(built: tuple[Expr, str]) -> None:
    expr, text = built
    expected = _flatten_and(expr)
    assert parse_filter(text) == (list(expected.operands) if isinstance(expected, BoolOp) and expected.op == "AND"
                                  else [expected])


def _depth(expr: Expr) -> int:
    """Parentheses around the deepest comparison of ``expr`` as rendered (each group has a pair)."""
    return 0 if isinstance(expr, Comparison) else 1 + max(_depth(operand) for operand in expr.operands)


@settings(max_examples=200, deadline=timedelta(seconds=2))
@given(_EXPRESSIONS, st.integers(0, 40), st.integers(0, 3))
def test_well_formed_filters_within_limits_parse_others_fail_cleanly(built: tuple[Expr, str], extra: int,
                                                                    cut: int) -> None:
    # Extra parentheses around it (beyond the nesting limit, sometimes), some left unclosed.
    expr, text = built
    text = "(" * extra + text + ")" * max(0, extra - cut)
    refused = (extra > 0 and cut > 0) or extra + _depth(expr) > MAX_NESTING
    try:
        parsed = parse_filter(text)
    except InvalidArgument:
        assert refused, text
        return
    assert not refused, text
    assert sum(count_comparisons(c) for c in parsed) == count_comparisons(expr)
