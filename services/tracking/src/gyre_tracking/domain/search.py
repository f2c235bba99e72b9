"""MLflow's run-search grammar: filters, order_by keys and page tokens, parsed into plain data.

Filter: comparisons joined by ``AND`` and ``OR`` (case-insensitive; ``AND`` binds tighter),
grouped with parentheses, e.g.
``metrics.rmse < 0.5 and (params.model = 'rf' or tags."team name" LIKE 'risk%')``.
``OR`` and parentheses are Gyre's addition: MLflow's own server accepts ``AND`` only.

* ``metrics.<key>`` (``metric.`` too): the run's latest value; ``= != <> < <= > >=`` with a number.
* ``params.<key>`` / ``tags.<key>`` (``param.``, ``tag.``): ``= != <> LIKE ILIKE`` with a quoted
  string, ``IN`` / ``NOT IN`` with a parenthesised list of strings, ``IS NULL`` / ``IS NOT NULL``.
* ``attributes.<name>`` (``attribute.``, ``attr.``, ``run.``): ``run_id``, ``run_name``,
  ``status``, ``user_id``, ``artifact_uri`` compare like params; ``start_time``, ``end_time``
  (``created`` is ``start_time``) compare like metrics, in milliseconds since the Unix epoch.

Keys made of letters, digits, ``_`` and ``.`` may be written bare; others are quoted with
backticks or double quotes (``metrics.`val loss```). Strings use single or double quotes.

Everything raises :class:`~gyre_tracking.domain.errors.InvalidArgument` with the position of
the problem.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from gyre_tracking.domain.errors import InvalidArgument
from gyre_tracking.domain.model import RunStatus, ViewType

MAX_FILTER_LENGTH = 10_000
"""Longest filter accepted (characters)."""
MAX_COMPARISONS = 50
"""Most comparisons in one filter (each one is a join or semi-join in the query)."""
MAX_ORDER_BY = 10
"""Most order_by keys."""


class Entity(StrEnum):
    """What a filter or order key refers to."""

    METRIC = "metric"
    PARAM = "param"
    TAG = "tag"
    ATTRIBUTE = "attribute"


STRING_ATTRIBUTES = frozenset({"run_id", "run_name", "status", "user_id", "artifact_uri"})
"""Run attributes compared as strings."""
TIME_ATTRIBUTES = frozenset({"start_time", "end_time"})
"""Run attributes compared as numbers (milliseconds since the Unix epoch, UTC)."""

EXPERIMENT_STRING_ATTRIBUTES = frozenset({"name"})
"""Experiment attributes compared as strings."""
EXPERIMENT_TIME_ATTRIBUTES = frozenset({"creation_time", "last_update_time"})
"""Experiment attributes compared as numbers (epoch milliseconds, UTC)."""

_ENTITY_PREFIXES = {
    "metrics": Entity.METRIC, "metric": Entity.METRIC,
    "params": Entity.PARAM, "param": Entity.PARAM, "parameters": Entity.PARAM,
    "tags": Entity.TAG, "tag": Entity.TAG,
    "attributes": Entity.ATTRIBUTE, "attribute": Entity.ATTRIBUTE, "attr": Entity.ATTRIBUTE,
    "run": Entity.ATTRIBUTE,
}
_ATTRIBUTE_ALIASES = {"run_uuid": "run_id", "created": "start_time", "user": "user_id", "name": "run_name"}

NUMERIC_OPS = frozenset({"=", "!=", "<", "<=", ">", ">="})
STRING_OPS = frozenset({"=", "!=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL"})

Value = float | str | tuple[str, ...] | None


@dataclass(frozen=True)
class Comparison:
    """One condition of a filter.

    Attributes:
        entity: metric, param, tag or attribute.
        key: metric/param/tag key, or the canonical attribute name.
        op: ``= != < <= > >= LIKE ILIKE IN NOT IN IS NULL IS NOT NULL`` (``<>`` becomes ``!=``).
        value: a float for numeric comparisons, a str, a tuple of str for IN / NOT IN, None for IS [NOT] NULL.
    """

    entity: Entity
    key: str
    op: str
    value: Value


@dataclass(frozen=True)
class BoolOp:
    """Comparisons or groups joined by one operator.

    Attributes:
        op: ``AND`` (all must hold) or ``OR`` (at least one must hold).
        operands: at least two.
    """

    op: Literal["AND", "OR"]
    operands: tuple[Expr, ...]


Expr = Comparison | BoolOp
"""A filter expression: one comparison or a group."""


def count_comparisons(expr: Expr) -> int:
    """How many comparisons ``expr`` holds."""
    if isinstance(expr, Comparison):
        return 1
    return sum(count_comparisons(operand) for operand in expr.operands)


@dataclass(frozen=True)
class OrderKey:
    """One sort key of a search; runs without the metric/param/tag sort last either way."""

    entity: Entity
    key: str
    ascending: bool


@dataclass(frozen=True)
class SearchQuery:
    """A validated run search.

    Attributes:
        experiment_ids: at least one, decimal strings.
        comparisons: all must hold (each a comparison, or a group with OR).
        order_by: sort keys before the default (start_time DESC, run_id ASC).
        max_results: page size.
        offset: runs to skip (decoded from the page token).
        view: which lifecycle stages to return (active runs by default).
    """

    experiment_ids: tuple[str, ...]
    comparisons: tuple[Expr, ...]
    order_by: tuple[OrderKey, ...]
    max_results: int
    offset: int
    view: ViewType = ViewType.ACTIVE_ONLY


# -- lexer -------------------------------------------------------------------------------------

TokenKind = Literal["ident", "string", "quoted_key", "number", "op", "lparen", "rparen", "comma", "dot"]


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str
    pos: int


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.]))
  | (?P<ident>[A-Za-z_][\w]*(?:\.[\w]+)*)
  | (?P<squote>'(?:[^'\\]|\\.|'')*')
  | (?P<dquote>"(?:[^"\\]|\\.|"")*")
  | (?P<bquote>`(?:[^`]|``)*`)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<dot>\.)
""", re.VERBOSE)


def _unquote(text: str) -> str:
    quote, body = text[0], text[1:-1]
    body = body.replace(quote * 2, quote)
    return re.sub(r"\\(.)", r"\1", body) if quote != "`" else body


def tokenize(text: str) -> list[Token]:
    """Split a filter or order_by expression into tokens."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise InvalidArgument(f"unexpected character {text[pos]!r} at position {pos} in {text!r}")
        kind = match.lastgroup
        raw = match.group()
        if kind == "squote":
            tokens.append(Token("string", _unquote(raw), pos))
        elif kind == "dquote":
            # A double-quoted token is a key after a dot and a string anywhere else.
            previous = tokens[-1] if tokens else None
            tokens.append(Token("quoted_key" if previous and previous.kind == "dot" else "string", _unquote(raw), pos))
        elif kind == "bquote":
            tokens.append(Token("quoted_key", _unquote(raw), pos))
        elif kind == "op":
            tokens.append(Token("op", "!=" if raw == "<>" else raw, pos))
        elif kind != "ws":
            assert kind is not None
            tokens.append(Token(kind, raw, pos))  # type: ignore[arg-type]
        pos = match.end()
    return tokens


# -- parser ------------------------------------------------------------------------------------

class _Parser:
    """Run filters: metrics., params., tags. and run attributes."""

    string_attributes = STRING_ATTRIBUTES
    time_attributes = TIME_ATTRIBUTES
    attribute_aliases = _ATTRIBUTE_ALIASES
    entities = frozenset(Entity)
    bare_attributes = False

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    def fail(self, message: str, token: Token | None = None) -> InvalidArgument:
        where = f"at position {token.pos}" if token else "at the end"
        return InvalidArgument(f"{message} {where} of {self.text!r}")

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise self.fail("unexpected end of the filter")
        self.i += 1
        return token

    def keyword(self, *words: str) -> bool:
        """Consume the given keywords if they come next (case-insensitive)."""
        for offset, word in enumerate(words):
            index = self.i + offset
            if index >= len(self.tokens):
                return False
            token = self.tokens[index]
            if token.kind != "ident" or token.text.upper() != word:
                return False
        self.i += len(words)
        return True

    def identifier(self) -> tuple[Entity, str, Token]:
        token = self.take()
        if token.kind != "ident":
            raise self.fail(f"expected an identifier such as metrics.rmse, got {token.text!r}", token)
        prefix, _, key = token.text.partition(".")
        entity = _ENTITY_PREFIXES.get(prefix.lower())
        if entity is None and self.bare_attributes and not key:
            entity, key = Entity.ATTRIBUTE, prefix
        if entity is None or entity not in self.entities:
            known = ", ".join(sorted(f"{e.value}s." for e in self.entities))
            raise self.fail(f"unknown identifier {token.text!r}: use {known}", token)
        if not key:
            dot = self.take()
            if dot.kind != "dot":
                raise self.fail(f"expected '.' after {prefix!r}", dot)
            quoted = self.take()
            if quoted.kind != "quoted_key":
                raise self.fail("expected a key after '.'", quoted)
            key = quoted.text
        if not key:
            raise self.fail("empty key", token)
        if entity is Entity.ATTRIBUTE:
            key = self.attribute_aliases.get(key, key)
            if key not in self.string_attributes and key not in self.time_attributes:
                known = ", ".join(sorted(self.string_attributes | self.time_attributes))
                raise self.fail(f"unknown attribute {key!r} (known: {known})", token)
        return entity, key, token

    def comparison(self) -> Comparison:
        entity, key, start = self.identifier()
        numeric = entity is Entity.METRIC or (entity is Entity.ATTRIBUTE and key in self.time_attributes)
        if self.keyword("IS", "NOT", "NULL"):
            op: str = "IS NOT NULL"
        elif self.keyword("IS", "NULL"):
            op = "IS NULL"
        elif self.keyword("NOT", "IN"):
            op = "NOT IN"
        elif self.keyword("IN"):
            op = "IN"
        elif self.keyword("NOT", "LIKE"):
            raise self.fail("NOT LIKE is not supported", start)
        elif self.keyword("LIKE"):
            op = "LIKE"
        elif self.keyword("ILIKE"):
            op = "ILIKE"
        else:
            token = self.take()
            if token.kind != "op":
                raise self.fail(f"expected a comparison operator after {key!r}, got {token.text!r}", token)
            op = token.text
        name = f"{entity.value} {key!r}"
        if numeric:
            if op in ("IS NULL", "IS NOT NULL") and entity is Entity.METRIC:
                return Comparison(entity, key, op, None)
            if op not in NUMERIC_OPS:
                raise self.fail(f"{op} does not apply to {name}: use = != < <= > >=", start)
            token = self.take()
            if token.kind != "number":
                raise self.fail(f"{name} compares with a number, got {token.text!r}", token)
            return Comparison(entity, key, op, float(token.text))
        if op not in STRING_OPS:
            raise self.fail(f"{op} does not apply to {name}: use = != LIKE ILIKE IN NOT IN", start)
        if op in ("IS NULL", "IS NOT NULL"):
            if entity is Entity.ATTRIBUTE:
                raise self.fail(f"{op} does not apply to attributes", start)
            return Comparison(entity, key, op, None)
        if op in ("IN", "NOT IN"):
            return Comparison(entity, key, op, self.string_list(name))
        token = self.take()
        if token.kind != "string":
            raise self.fail(f"{name} compares with a quoted string, got {token.text!r}", token)
        if entity is Entity.ATTRIBUTE and key == "status" and op in ("=", "!="):
            _check_status(token.text)
        return Comparison(entity, key, op, token.text)

    def string_list(self, name: str) -> tuple[str, ...]:
        token = self.take()
        if token.kind != "lparen":
            raise self.fail(f"IN on {name} takes a parenthesised list such as ('a', 'b')", token)
        values: list[str] = []
        while True:
            token = self.take()
            if token.kind != "string":
                raise self.fail(f"IN on {name} takes quoted strings, got {token.text!r}", token)
            values.append(token.text)
            token = self.take()
            if token.kind == "rparen":
                return tuple(values)
            if token.kind != "comma":
                raise self.fail(f"expected ',' or ')', got {token.text!r}", token)

    def filter(self) -> list[Expr]:
        if not self.tokens:
            return []
        expr = self.disjunction()
        token = self.peek()
        if token is not None:
            if token.kind == "rparen":
                raise self.fail("unbalanced ')'", token)
            raise self.fail(f"expected AND or OR, got {token.text!r}", token)
        return list(expr.operands) if isinstance(expr, BoolOp) and expr.op == "AND" else [expr]

    def disjunction(self) -> Expr:
        operands = [self.conjunction()]
        while self.keyword("OR"):
            operands.append(self.conjunction())
        return operands[0] if len(operands) == 1 else BoolOp("OR", tuple(operands))

    def conjunction(self) -> Expr:
        operands = [self.term()]
        while self.keyword("AND"):
            operands.append(self.term())
        # Nested ANDs flatten: (a AND b) AND c is a AND b AND c.
        flat: list[Expr] = []
        for operand in operands:
            flat.extend(operand.operands if isinstance(operand, BoolOp) and operand.op == "AND" else [operand])
        return flat[0] if len(flat) == 1 else BoolOp("AND", tuple(flat))

    def term(self) -> Expr:
        token = self.peek()
        if token is not None and token.kind == "lparen":
            self.take()
            expr = self.disjunction()
            closing = self.peek()
            if closing is None or closing.kind != "rparen":
                raise self.fail(f"expected ')' to close the '(' at position {token.pos}", closing)
            self.take()
            return expr
        return self.comparison()

    def order_key(self) -> OrderKey:
        entity, key, _ = self.identifier()
        ascending = True
        if self.keyword("DESC"):
            ascending = False
        else:
            self.keyword("ASC")
        token = self.peek()
        if token is not None:
            raise self.fail(f"unexpected {token.text!r} after the sort key", token)
        return OrderKey(entity, key, ascending)


def _check_status(value: str) -> None:
    if value not in RunStatus.__members__:
        raise InvalidArgument(f"unknown run status {value!r} (known: {', '.join(RunStatus.__members__)})")


def parse_filter(text: str) -> list[Expr]:
    """Parse a search filter into the expressions that must all hold (top-level ``AND``); a filter
    without ``OR`` gives plain comparisons. An empty or blank filter matches every run."""
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidArgument(f"filter is {len(text)} characters long; at most {MAX_FILTER_LENGTH}")
    conjuncts = _Parser(text).filter()
    count = sum(count_comparisons(c) for c in conjuncts)
    if count > MAX_COMPARISONS:
        raise InvalidArgument(f"filter has {count} comparisons; at most {MAX_COMPARISONS}")
    return conjuncts


class _ExperimentParser(_Parser):
    """Experiment filters (SearchExperiments): ``name``, ``creation_time``, ``last_update_time``
    (bare or as ``attributes.``) and ``tags.``."""

    string_attributes = EXPERIMENT_STRING_ATTRIBUTES
    time_attributes = EXPERIMENT_TIME_ATTRIBUTES
    attribute_aliases = {"experiment_name": "name"}
    entities = frozenset({Entity.ATTRIBUTE, Entity.TAG})
    bare_attributes = True


class _ExperimentOrderParser(_ExperimentParser):
    string_attributes = EXPERIMENT_STRING_ATTRIBUTES | {"experiment_id"}
    entities = frozenset({Entity.ATTRIBUTE})


def parse_experiment_filter(text: str) -> list[Expr]:
    """Parse a SearchExperiments filter, e.g. ``name LIKE 'churn%' and tags.team = 'risk'``
    (same grammar as runs, including OR); times are epoch milliseconds."""
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidArgument(f"filter is {len(text)} characters long; at most {MAX_FILTER_LENGTH}")
    conjuncts = _ExperimentParser(text).filter()
    count = sum(count_comparisons(c) for c in conjuncts)
    if count > MAX_COMPARISONS:
        raise InvalidArgument(f"filter has {count} comparisons; at most {MAX_COMPARISONS}")
    return conjuncts


def parse_experiment_order_by(clauses: list[str] | tuple[str, ...]) -> list[OrderKey]:
    """Parse SearchExperiments sort keys: ``name``, ``experiment_id``, ``creation_time``,
    ``last_update_time`` (bare or ``attributes.``), ASC by default."""
    if len(clauses) > MAX_ORDER_BY:
        raise InvalidArgument(f"{len(clauses)} order_by keys; at most {MAX_ORDER_BY}")
    return [_ExperimentOrderParser(clause).order_key() for clause in clauses]


def parse_order_by(clauses: list[str] | tuple[str, ...]) -> list[OrderKey]:
    """Parse sort keys such as ``metrics.rmse ASC`` or ``attributes.start_time DESC`` (ASC by default)."""
    if len(clauses) > MAX_ORDER_BY:
        raise InvalidArgument(f"{len(clauses)} order_by keys; at most {MAX_ORDER_BY}")
    return [_Parser(clause).order_key() for clause in clauses]


# -- page tokens -------------------------------------------------------------------------------

def encode_page_token(offset: int) -> str:
    """An opaque token for the page starting at ``offset`` (URL-safe base64 of JSON)."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    """The offset in a token from :func:`encode_page_token`; 0 for an empty token."""
    if not token:
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset = data["offset"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidArgument(f"invalid page_token {token[:40]!r}: pass next_page_token of the previous page") from None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidArgument(f"invalid page_token {token[:40]!r}: pass next_page_token of the previous page")
    return offset


def page_size(requested: int, *, default: int = 100, maximum: int = 1000) -> int:
    """The page size to use: ``default`` for 0, else ``requested`` within 1..``maximum``."""
    if requested == 0:
        return default
    if requested < 0 or requested > maximum:
        raise InvalidArgument(f"page_size {requested} is out of range: use 1 to {maximum} (0 for {default})")
    return requested
