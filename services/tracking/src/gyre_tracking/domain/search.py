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

Limits, so that no filter can hold the event loop: at most :data:`MAX_FILTER_LENGTH` characters,
:data:`MAX_NESTING` levels of parentheses and :data:`MAX_COMPARISONS` comparisons; order_by keys
at most :data:`MAX_ORDER_BY_LENGTH` characters each. The scanner is hand-written and looks at each
character a bounded number of times, so parsing is linear in the length of the text.

Everything raises :class:`~gyre_tracking.domain.errors.InvalidArgument` (MLflow's
INVALID_PARAMETER_VALUE) with the position of the problem, never another exception.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from gyre_tracking.domain.errors import InvalidArgument
from gyre_tracking.domain.model import RunStatus, ViewType

MAX_FILTER_LENGTH = 8192
"""Longest filter accepted (characters). Generous: it holds :data:`MAX_COMPARISONS` comparisons of
160 characters each, or one comparison with a param value of MLflow's full 6,000 characters and a
250-character key; a longer filter is refused before it is scanned (MLflow itself sets no limit)."""
MAX_NESTING = 32
"""Deepest nesting of parentheses in a filter (levels). The parser recurses once per level, so the
limit also keeps a hostile filter far from Python's recursion limit."""
MAX_COMPARISONS = 50
"""Most comparisons in one filter (each one is a join or semi-join in the query)."""
MAX_ORDER_BY = 10
"""Most order_by keys."""
MAX_ORDER_BY_LENGTH = 1024
"""Longest order_by key (characters): a quoted 250-character key with its prefix and direction
fits several times over."""
MAX_PAGE_OFFSET = 2**53 - 1
"""Largest offset a page token may hold (rows): the largest integer a JSON double keeps exact, far
beyond any result set and well inside PostgreSQL's bigint for ``OFFSET``."""
MAX_PAGE_TOKEN_LENGTH = 256
"""Longest page token accepted (characters); the tokens this module writes have about 30."""
_MAX_ECHO = 120
"""Longest part of a filter quoted back in an error message (characters)."""


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
#
# A hand-written scanner: each character is looked at a bounded number of times, so scanning is
# linear in the length of the text whatever it holds. (The regular expression it replaces had
# ``\d+\.?\d*`` under a negative lookahead: a long run of digits followed by a letter made the
# engine try every split of the run, quadratic time; 10,000 characters held the event loop for
# seconds.)

TokenKind = Literal["ident", "string", "quoted_key", "number", "op", "lparen", "rparen", "comma", "dot"]


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str
    pos: int


_DIGITS = frozenset("0123456789")
_IDENT_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_PUNCTUATION: dict[str, TokenKind] = {"(": "lparen", ")": "rparen", ",": "comma"}


def _is_word(char: str) -> bool:
    """What ``\\w`` matches: letters and digits of any script, and ``_``."""
    return char.isalnum() or char == "_"


def _digits_end(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _DIGITS:
        pos += 1
    return pos


def _scan_number(text: str, start: int) -> int | None:
    """End of the number at ``start`` (``[-+]`` digits ``[.digits]`` ``[e[-+]digits]``, or
    ``.digits...``), or None when no number starts there."""
    pos = start
    if text[pos] in "+-":
        pos += 1
    integral_end = _digits_end(text, pos)
    has_integral = integral_end > pos
    pos = integral_end
    if pos < len(text) and text[pos] == ".":
        fraction_end = _digits_end(text, pos + 1)
        if not has_integral and fraction_end == pos + 1:
            return None
        pos = fraction_end
    elif not has_integral:
        return None
    if pos < len(text) and text[pos] in "eE":
        exponent = pos + 1
        if exponent < len(text) and text[exponent] in "+-":
            exponent += 1
        exponent_end = _digits_end(text, exponent)
        if exponent_end > exponent:
            pos = exponent_end
    return pos


def _scan_ident(text: str, start: int) -> int:
    """End of the identifier at ``start``: a word, then ``.word`` parts (``metrics.val.loss``)."""
    pos = start + 1
    while pos < len(text) and _is_word(text[pos]):
        pos += 1
    while pos + 1 < len(text) and text[pos] == "." and _is_word(text[pos + 1]):
        pos += 2
        while pos < len(text) and _is_word(text[pos]):
            pos += 1
    return pos


def _scan_quoted(text: str, start: int) -> tuple[str, int] | None:
    """The value and end of the quoted token at ``start``, or None when it is not closed.

    A doubled quote stands for the quote; in ``'...'`` and ``"..."`` a backslash takes the next
    character as it is (``'it\\'s'``); backticks have no backslash escapes.
    """
    quote = text[start]
    escapes = quote != "`"
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == quote:
            if pos + 1 < len(text) and text[pos + 1] == quote:
                out.append(quote)
                pos += 2
                continue
            return "".join(out), pos + 1
        if char == "\\" and escapes and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
            continue
        out.append(char)
        pos += 1
    return None


def tokenize(text: str) -> list[Token]:
    """Split a filter or order_by expression into tokens, in time linear in ``len(text)``.

    Raises:
        InvalidArgument: a character that starts no token, or an unclosed quote (with its position).
    """
    tokens: list[Token] = []
    pos = 0
    end = len(text)
    while pos < end:
        char = text[pos]
        if char.isspace():
            pos += 1
            continue
        if char in _DIGITS or char in "+-.":
            number_end = _scan_number(text, pos)
            if number_end is not None:
                if number_end < end and (_is_word(text[number_end]) or text[number_end] == "."):
                    raise InvalidArgument(f"malformed number {_short(text[pos:number_end + 1])} "
                                          f"{_where(text, pos)}")
                tokens.append(Token("number", text[pos:number_end], pos))
                pos = number_end
                continue
            if char == ".":
                tokens.append(Token("dot", ".", pos))
                pos += 1
                continue
            raise _unexpected(text, pos)
        if char in _IDENT_START:
            ident_end = _scan_ident(text, pos)
            tokens.append(Token("ident", text[pos:ident_end], pos))
            pos = ident_end
            continue
        if char in "'\"`":
            quoted = _scan_quoted(text, pos)
            if quoted is None:
                raise InvalidArgument(f"unclosed quote {char} {_where(text, pos)}")
            value, quoted_end = quoted
            # A double-quoted token is a key after a dot and a string anywhere else.
            after_dot = bool(tokens) and tokens[-1].kind == "dot"
            kind: TokenKind = "string" if char == "'" or (char == '"' and not after_dot) else "quoted_key"
            tokens.append(Token(kind, value, pos))
            pos = quoted_end
            continue
        if char in "<>=!":
            two = text[pos:pos + 2]
            if two in ("<=", ">=", "!=", "<>"):
                tokens.append(Token("op", "!=" if two == "<>" else two, pos))
                pos += 2
                continue
            if char != "!":
                tokens.append(Token("op", char, pos))
                pos += 1
                continue
            raise _unexpected(text, pos)
        punctuation = _PUNCTUATION.get(char)
        if punctuation is None:
            raise _unexpected(text, pos)
        tokens.append(Token(punctuation, char, pos))
        pos += 1
    return tokens


def _excerpt(text: str, pos: int | None) -> str:
    """Where ``pos`` is in ``text``, for a message: the whole text when short, else the part
    around ``pos`` (a message never echoes thousands of characters back)."""
    if len(text) <= _MAX_ECHO:
        return f"of {text!r}"
    at = len(text) if pos is None else pos
    start = max(0, at - _MAX_ECHO // 2)
    return f"of the filter (near {text[start:start + _MAX_ECHO]!r})"


def _short(value: str) -> str:
    """``repr(value)``, cut to 60 characters of ``value``."""
    return repr(value) if len(value) <= 60 else repr(value[:60]) + "…"


def _where(text: str, pos: int | None) -> str:
    return f"{'at the end' if pos is None else f'at position {pos}'} {_excerpt(text, pos)}"


def _unexpected(text: str, pos: int) -> InvalidArgument:
    return InvalidArgument(f"unexpected character {text[pos]!r} {_where(text, pos)}")


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
        self.depth = 0

    def fail(self, message: str, token: Token | None = None) -> InvalidArgument:
        return InvalidArgument(f"{message} {_where(self.text, token.pos if token else None)}")

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
            raise self.fail(f"expected an identifier such as metrics.rmse, got {_short(token.text)}", token)
        prefix, _, key = token.text.partition(".")
        entity = _ENTITY_PREFIXES.get(prefix.lower())
        if entity is None and self.bare_attributes and not key:
            entity, key = Entity.ATTRIBUTE, prefix
        if entity is None or entity not in self.entities:
            known = ", ".join(sorted(f"{e.value}s." for e in self.entities))
            raise self.fail(f"unknown identifier {_short(token.text)}: use {known}", token)
        if not key:
            dot = self.take()
            if dot.kind != "dot":
                raise self.fail(f"expected '.' after {_short(prefix)}", dot)
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
                raise self.fail(f"unknown attribute {_short(key)} (known: {known})", token)
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
                raise self.fail(f"expected a comparison operator after {_short(key)}, got {_short(token.text)}", token)
            op = token.text
        name = f"{entity.value} {_short(key)}"
        if numeric:
            if op in ("IS NULL", "IS NOT NULL") and entity is Entity.METRIC:
                return Comparison(entity, key, op, None)
            if op not in NUMERIC_OPS:
                raise self.fail(f"{op} does not apply to {name}: use = != < <= > >=", start)
            token = self.take()
            if token.kind != "number":
                raise self.fail(f"{name} compares with a number, got {_short(token.text)}", token)
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
            raise self.fail(f"{name} compares with a quoted string, got {_short(token.text)}", token)
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
                raise self.fail(f"IN on {name} takes quoted strings, got {_short(token.text)}", token)
            values.append(token.text)
            token = self.take()
            if token.kind == "rparen":
                return tuple(values)
            if token.kind != "comma":
                raise self.fail(f"expected ',' or ')', got {_short(token.text)}", token)

    def filter(self) -> list[Expr]:
        if not self.tokens:
            return []
        expr = self.disjunction()
        token = self.peek()
        if token is not None:
            if token.kind == "rparen":
                raise self.fail("unbalanced ')'", token)
            raise self.fail(f"expected AND or OR, got {_short(token.text)}", token)
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
            if self.depth == MAX_NESTING:
                raise self.fail(f"parentheses are nested more than {MAX_NESTING} levels deep", token)
            self.take()
            self.depth += 1
            expr = self.disjunction()
            self.depth -= 1
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
            raise self.fail(f"unexpected {_short(token.text)} after the sort key", token)
        return OrderKey(entity, key, ascending)


def _check_status(value: str) -> None:
    if value not in RunStatus.__members__:
        raise InvalidArgument(f"unknown run status {_short(value)} (known: {', '.join(RunStatus.__members__)})")


def _parse(parser: type[_Parser], text: str) -> list[Expr]:
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidArgument(f"the filter is {len(text)} characters long; at most {MAX_FILTER_LENGTH}")
    conjuncts = parser(text).filter()
    count = sum(count_comparisons(c) for c in conjuncts)
    if count > MAX_COMPARISONS:
        raise InvalidArgument(f"the filter has {count} comparisons; at most {MAX_COMPARISONS}")
    return conjuncts


def _parse_order_by(parser: type[_Parser], clauses: list[str] | tuple[str, ...]) -> list[OrderKey]:
    if len(clauses) > MAX_ORDER_BY:
        raise InvalidArgument(f"{len(clauses)} order_by keys; at most {MAX_ORDER_BY}")
    for clause in clauses:
        if len(clause) > MAX_ORDER_BY_LENGTH:
            raise InvalidArgument(f"an order_by key is {len(clause)} characters long; at most {MAX_ORDER_BY_LENGTH}")
    return [parser(clause).order_key() for clause in clauses]


def parse_filter(text: str) -> list[Expr]:
    """Parse a search filter into the expressions that must all hold (top-level ``AND``); a filter
    without ``OR`` gives plain comparisons. An empty or blank filter matches every run.

    Time and memory are linear in ``len(text)``.

    Raises:
        InvalidArgument: longer than :data:`MAX_FILTER_LENGTH` characters, parentheses nested
            deeper than :data:`MAX_NESTING`, more than :data:`MAX_COMPARISONS` comparisons, or
            anything outside the grammar (with its position).
    """
    return _parse(_Parser, text)


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
    (same grammar, limits and errors as :func:`parse_filter`); times are epoch milliseconds."""
    return _parse(_ExperimentParser, text)


def parse_experiment_order_by(clauses: list[str] | tuple[str, ...]) -> list[OrderKey]:
    """Parse SearchExperiments sort keys: ``name``, ``experiment_id``, ``creation_time``,
    ``last_update_time`` (bare or ``attributes.``), ASC by default."""
    return _parse_order_by(_ExperimentOrderParser, clauses)


def parse_order_by(clauses: list[str] | tuple[str, ...]) -> list[OrderKey]:
    """Parse sort keys such as ``metrics.rmse ASC`` or ``attributes.start_time DESC`` (ASC by default)."""
    return _parse_order_by(_Parser, clauses)


# -- page tokens -------------------------------------------------------------------------------

def encode_page_token(offset: int) -> str:
    """An opaque token for the page starting at ``offset`` (URL-safe base64 of JSON)."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    """The offset (rows) in a token from :func:`encode_page_token`; 0 for an empty token.

    Raises:
        InvalidArgument: anything else: not base64, not JSON, JSON of another shape, an offset that
            is not an integer in 0..:data:`MAX_PAGE_OFFSET`, or a token longer than
            :data:`MAX_PAGE_TOKEN_LENGTH` characters.
    """
    if not token:
        return 0
    invalid = InvalidArgument(f"invalid page_token {token[:40]!r}: pass next_page_token of the previous page")
    if len(token) > MAX_PAGE_TOKEN_LENGTH:
        raise invalid
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    # RecursionError: JSON nested deeper than the interpreter's limit.
    except (binascii.Error, ValueError, RecursionError):
        raise invalid from None
    offset = data.get("offset") if isinstance(data, dict) else None
    if type(offset) is not int or not 0 <= offset <= MAX_PAGE_OFFSET:
        raise invalid
    return offset


def page_size(requested: int, *, default: int = 100, maximum: int = 1000) -> int:
    """The page size to use: ``default`` for 0, else ``requested`` within 1..``maximum``."""
    if requested == 0:
        return default
    if requested < 0 or requested > maximum:
        raise InvalidArgument(f"page_size {requested} is out of range: use 1 to {maximum} (0 for {default})")
    return requested
