"""The one MLflow search grammar: a linear tokenizer and a parser with per-service dialects.

A filter is comparisons ``<key> <op> <value>`` joined by ``AND`` (case-insensitive). A dialect
(:class:`Dialect`) says what else the service takes:

* ``boolean``: ``OR`` and grouping parentheses (``AND`` binds tighter); tracking's run and
  experiment filters (Gyre's addition: MLflow's own server accepts ``AND`` only). Without it the
  filter is a flat ``AND`` (the registry's subset of MLflow's grammar).
* ``prefixes``: entity prefixes of keys (``metrics.``, ``params.``, ``tags.``...) and what each
  key of that entity compares as (:class:`Operand`); ``attributes`` the attribute names (written
  ``attributes.<name>``, or bare with ``bare_attributes``).

Keys made of letters, digits, ``_`` and ``.`` may be written bare; others are quoted with
backticks or double quotes (``metrics.`val loss```). Strings use single or double quotes; a
doubled quote stands for the quote, and a backslash takes the next character as it is. Numbers are
``[-+]digits[.digits][e[-+]digits]``; an ``integer`` operand takes ``[-]digits`` within
PostgreSQL's bigint only.

Limits, so that no filter can hold the event loop: at most :data:`MAX_FILTER_LENGTH` characters,
:data:`MAX_NESTING` levels of parentheses and :data:`MAX_COMPARISONS` comparisons; order_by: at
most :data:`MAX_ORDER_BY` keys of a dialect's ``max_order_by_length`` characters. The scanner is
hand-written and looks at each character a bounded number of times, so parsing is linear in the
length of the text. (The regular expression tracking had before had ``\\d+\\.?\\d*`` under a
negative lookahead: a long run of digits followed by a letter took quadratic time.)

Every problem raises the dialect's error (``dialect.error(field, message)``, field ``filter`` or
``order_by``: each service's own InvalidArgument, MLflow's INVALID_PARAMETER_VALUE) with the
position of the problem, never another exception.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

MAX_FILTER_LENGTH = 8192
"""Longest filter accepted (characters). Generous: it holds :data:`MAX_COMPARISONS` comparisons of
160 characters each, or one comparison with a param value of MLflow's full 6,000 characters and a
250-character key (a registry tag value has at most 5,000); a longer filter is refused before it
is scanned (MLflow itself sets no limit)."""
MAX_NESTING = 32
"""Deepest nesting of parentheses in a filter (levels). The parser recurses once per level, so the
limit also keeps a hostile filter far from Python's recursion limit."""
MAX_COMPARISONS = 50
"""Most comparisons (clauses) in one filter (each one is a condition, join or semi-join in the query)."""
MAX_ORDER_BY = 10
"""Most order_by keys."""
BIGINT = (-(2**63), 2**63 - 1)
"""What PostgreSQL's ``bigint`` holds: the range of an ``integer`` operand."""
_MAX_ECHO = 120
"""Longest part of a filter quoted back in an error message (characters)."""

NUMERIC_OPS = frozenset({"=", "!=", "<", "<=", ">", ">="})
STRING_OPS = frozenset({"=", "!=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL"})
NULL_OPS = frozenset({"IS NULL", "IS NOT NULL"})

Value = float | int | str | tuple[str, ...] | None


@dataclass(frozen=True)
class Operand:
    """What a key compares as.

    Attributes:
        kind: ``number`` (a float), ``integer`` (an int within bigint) or ``string`` (quoted).
        ops: the comparators it takes (``IN``, ``NOT IN`` with a list of strings; ``IS NULL``,
            ``IS NOT NULL`` without a value).
    """

    kind: Literal["number", "integer", "string"]
    ops: frozenset[str]


@dataclass(frozen=True)
class Comparison:
    """One condition of a filter.

    Attributes:
        entity: the dialect's entity (e.g. ``metric``, ``tag``, ``attribute``).
        key: metric/param/tag key, or the canonical attribute name.
        op: ``= != < <= > >= LIKE ILIKE IN NOT IN IS NULL IS NOT NULL`` (``<>`` becomes ``!=``).
        value: a float or an int for numbers, a str, a tuple of str for IN / NOT IN, None for IS [NOT] NULL.
    """

    entity: str
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


@dataclass(frozen=True)
class OrderKey:
    """One sort key."""

    entity: str
    key: str
    ascending: bool


def count_comparisons(expr: Expr) -> int:
    """How many comparisons ``expr`` holds."""
    if isinstance(expr, Comparison):
        return 1
    return sum(count_comparisons(operand) for operand in expr.operands)


@dataclass(frozen=True)
class Dialect:
    """What one search endpoint accepts (see the module docstring).

    Attributes:
        error: builds the exception to raise from ``(field, message)``; field is ``filter`` or ``order_by``.
        prefixes: entity of each key prefix (``"metrics": "metric"``; the attribute entity too).
        keyed: how a key of each non-attribute entity compares (``"metric": Operand("number", ...)``).
        attributes: attribute names and how each compares.
        attribute_entity: the entity of attributes.
        aliases: other names of attributes (``created`` for ``start_time``).
        bare_attributes: attributes may be written without a prefix (``name``).
        fold_case: attribute names are case-insensitive.
        boolean: ``OR`` and parentheses.
        check: called with each comparison (e.g. known run statuses); raises the dialect's error.
        max_order_by_length: longest order_by key (characters).
        subject: what the filter searches, for messages ("runs").
    """

    error: Callable[[str, str], Exception]
    prefixes: Mapping[str, str] = field(default_factory=dict)
    keyed: Mapping[str, Operand] = field(default_factory=dict)
    attributes: Mapping[str, Operand] = field(default_factory=dict)
    attribute_entity: str = "attribute"
    aliases: Mapping[str, str] = field(default_factory=dict)
    bare_attributes: bool = False
    fold_case: bool = False
    boolean: bool = True
    check: Callable[[Comparison], None] | None = None
    max_order_by_length: int = 1024
    subject: str = ""


# -- lexer -------------------------------------------------------------------------------------

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


def _excerpt(text: str, pos: int | None) -> str:
    """Where ``pos`` is in ``text``, for a message: the whole text when short, else the part
    around ``pos`` (a message never echoes thousands of characters back)."""
    if len(text) <= _MAX_ECHO:
        return f"of {text!r}"
    at = len(text) if pos is None else pos
    start = max(0, at - _MAX_ECHO // 2)
    return f"of the filter (near {text[start:start + _MAX_ECHO]!r})"


def short(value: str) -> str:
    """``repr(value)``, cut to 60 characters of ``value``."""
    return repr(value) if len(value) <= 60 else repr(value[:60]) + "…"


def _where(text: str, pos: int | None) -> str:
    return f"{'at the end' if pos is None else f'at position {pos}'} {_excerpt(text, pos)}"


def tokenize(text: str, fail: Callable[[str], Exception]) -> list[Token]:
    """Split a filter or order_by expression into tokens, in time linear in ``len(text)``.

    Raises:
        ``fail(message)``: a character that starts no token, a number running into a letter, or an
            unclosed quote (with its position).
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
                    raise fail(f"malformed number {short(text[pos:number_end + 1])} {_where(text, pos)}")
                tokens.append(Token("number", text[pos:number_end], pos))
                pos = number_end
                continue
            if char == ".":
                tokens.append(Token("dot", ".", pos))
                pos += 1
                continue
            raise fail(f"unexpected character {text[pos]!r} {_where(text, pos)}")
        if char in _IDENT_START:
            ident_end = _scan_ident(text, pos)
            tokens.append(Token("ident", text[pos:ident_end], pos))
            pos = ident_end
            continue
        if char in "'\"`":
            quoted = _scan_quoted(text, pos)
            if quoted is None:
                raise fail(f"unclosed quote {char} {_where(text, pos)}")
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
            raise fail(f"unexpected character {text[pos]!r} {_where(text, pos)}")
        punctuation = _PUNCTUATION.get(char)
        if punctuation is None:
            raise fail(f"unexpected character {text[pos]!r} {_where(text, pos)}")
        tokens.append(Token(punctuation, char, pos))
        pos += 1
    return tokens


# -- parser ------------------------------------------------------------------------------------

class _Parser:
    def __init__(self, dialect: Dialect, text: str, field_name: str) -> None:
        self.dialect = dialect
        self.text = text
        self.field_name = field_name
        self.tokens = tokenize(text, lambda message: dialect.error(field_name, message))
        self.i = 0
        self.depth = 0
        self.count = 0

    def fail(self, message: str, token: Token | None = None) -> Exception:
        return self.dialect.error(self.field_name, f"{message} {_where(self.text, token.pos if token else None)}")

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise self.fail(f"unexpected end of the {'filter' if self.field_name == 'filter' else 'sort key'}")
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

    def identifier(self) -> tuple[str, str, Operand, Token]:
        d = self.dialect
        token = self.take()
        if token.kind != "ident":
            raise self.fail(f"expected a key, got {short(token.text)}", token)
        prefix, _, key = token.text.partition(".")
        entity = d.prefixes.get(prefix.lower())
        if entity is None and d.bare_attributes and not key:
            entity, key = d.attribute_entity, prefix
        if entity is None:
            known = sorted({f"{e}s." for e in d.prefixes.values()})
            if d.bare_attributes:
                known = self._attribute_names() + known
            raise self.fail(f"unknown identifier {short(token.text)}: use {', '.join(known)}", token)
        if not key:
            dot = self.take()
            if dot.kind != "dot":
                raise self.fail(f"expected '.' after {short(prefix)}", dot)
            quoted = self.take()
            if quoted.kind != "quoted_key":
                raise self.fail("expected a key after '.'", quoted)
            key = quoted.text
        if not key:
            raise self.fail("empty key", token)
        if entity == d.attribute_entity:
            name = key.lower() if d.fold_case else key
            name = d.aliases.get(name, name)
            operand = d.attributes.get(name)
            if operand is None:
                raise self.fail(f"unknown attribute {short(key)} (known: {', '.join(self._attribute_names())})",
                                token)
            return entity, name, operand, token
        return entity, key, d.keyed[entity], token

    def _attribute_names(self) -> list[str]:
        return sorted(self.dialect.attributes)

    def comparison(self) -> Comparison:
        entity, key, operand, start = self.identifier()
        if self.count == MAX_COMPARISONS:
            raise self.dialect.error(self.field_name, f"the filter has more than {MAX_COMPARISONS} clauses "
                                                      f"(comparisons); at most {MAX_COMPARISONS}")
        self.count += 1
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
                raise self.fail(f"expected a comparison operator after {short(key)}, got {short(token.text)}", token)
            op = token.text
        name = f"{entity} {short(key)}"
        if op not in operand.ops:
            raise self.fail(f"{op} does not apply to {name}: use {' '.join(_ordered(operand.ops))}", start)
        if op in NULL_OPS:
            return self._checked(Comparison(entity, key, op, None))
        if op in ("IN", "NOT IN"):
            return self._checked(Comparison(entity, key, op, self.string_list(name)))
        token = self.take()
        if operand.kind == "string":
            if token.kind != "string":
                raise self.fail(f"{name} compares with a quoted string, got {short(token.text)}", token)
            return self._checked(Comparison(entity, key, op, token.text))
        if token.kind != "number":
            raise self.fail(f"{name} compares with a number, got {short(token.text)}", token)
        if operand.kind == "number":
            return self._checked(Comparison(entity, key, op, float(token.text)))
        return self._checked(Comparison(entity, key, op, self.integer(token, name)))

    def integer(self, token: Token, name: str) -> int:
        raw = token.text
        digits = raw[1:] if raw.startswith("-") else raw
        if not digits or not digits.isascii() or not digits.isdigit():
            raise self.fail(f"malformed number {short(raw)}: {name} takes an integer", token)
        # Compared by length first: int() of thousands of digits is slow and then refused by Python.
        number = int(raw) if len(digits) <= 19 else None
        if number is None or not BIGINT[0] <= number <= BIGINT[1]:
            raise self.fail(f"{name} {short(raw)} is outside -2^63..2^63-1", token)
        return number

    def _checked(self, comparison: Comparison) -> Comparison:
        if self.dialect.check is not None:
            self.dialect.check(comparison)
        return comparison

    def string_list(self, name: str) -> tuple[str, ...]:
        token = self.take()
        if token.kind != "lparen":
            raise self.fail(f"IN on {name} takes a parenthesised list such as ('a', 'b')", token)
        values: list[str] = []
        while True:
            token = self.take()
            if token.kind != "string":
                raise self.fail(f"IN on {name} takes quoted strings, got {short(token.text)}", token)
            values.append(token.text)
            token = self.take()
            if token.kind == "rparen":
                return tuple(values)
            if token.kind != "comma":
                raise self.fail(f"expected ',' or ')', got {short(token.text)}", token)

    def filter(self) -> list[Expr]:
        if not self.tokens:
            return []
        expr = self.disjunction()
        token = self.peek()
        if token is not None:
            if token.kind == "rparen":
                raise self.fail("unbalanced ')'", token)
            if not self.dialect.boolean and token.kind == "ident" and token.text.upper() == "OR":
                raise self.fail("OR is not supported here: join clauses with AND", token)
            expected = "AND or OR" if self.dialect.boolean else "AND between clauses"
            raise self.fail(f"expected {expected}, got {short(token.text)}", token)
        return list(expr.operands) if isinstance(expr, BoolOp) and expr.op == "AND" else [expr]

    def disjunction(self) -> Expr:
        operands = [self.conjunction()]
        while self.dialect.boolean and self.keyword("OR"):
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
            if not self.dialect.boolean:
                raise self.fail("parentheses are not supported here: join clauses with AND", token)
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
        entity, key, _, _ = self.identifier()
        ascending = True
        if self.keyword("DESC"):
            ascending = False
        else:
            self.keyword("ASC")
        token = self.peek()
        if token is not None:
            raise self.fail(f"unexpected {short(token.text)} after the sort key", token)
        return OrderKey(entity, key, ascending)


_OP_ORDER = ("=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL")


def _ordered(ops: frozenset[str]) -> list[str]:
    return [op for op in _OP_ORDER if op in ops]


def parse_filter(dialect: Dialect, text: str) -> list[Expr]:
    """Parse a filter into the expressions that must all hold (top-level ``AND``); a filter without
    ``OR`` gives plain comparisons. An empty or blank filter matches everything. Time and memory
    are linear in ``len(text)``.

    Raises:
        ``dialect.error("filter", ...)``: longer than :data:`MAX_FILTER_LENGTH` characters,
            parentheses nested deeper than :data:`MAX_NESTING`, more than :data:`MAX_COMPARISONS`
            comparisons, or anything outside the dialect's grammar (with its position).
    """
    text = text or ""
    if len(text) > MAX_FILTER_LENGTH:
        raise dialect.error("filter", f"the filter is {len(text)} characters long; at most {MAX_FILTER_LENGTH}")
    return _Parser(dialect, text, "filter").filter()


def parse_order_by(dialect: Dialect, keys: Sequence[str]) -> list[OrderKey]:
    """Parse sort keys such as ``metrics.rmse ASC`` or ``name DESC`` (ASC by default).

    Raises:
        ``dialect.error("order_by", ...)``: more than :data:`MAX_ORDER_BY` keys, one longer than the
            dialect's ``max_order_by_length``, or a key the dialect does not know.
    """
    if len(keys) > MAX_ORDER_BY:
        raise dialect.error("order_by", f"{len(keys)} order_by keys; at most {MAX_ORDER_BY}")
    for key in keys:
        if len(key) > dialect.max_order_by_length:
            raise dialect.error("order_by", f"an order_by key is {len(key)} characters long; at most "
                                            f"{dialect.max_order_by_length}")
    return [_Parser(dialect, key, "order_by").order_key() for key in keys]
