"""MLflow's search grammar for the model registry (the subset Gyre answers), turned into SQL.

Filters are clauses joined by ``AND`` (case-insensitive), each ``<key> <op> <value>``:

| key | ops | value |
|---|---|---|
| ``name`` | ``=``, ``!=``, ``LIKE``, ``ILIKE`` | a quoted string |
| ``run_id`` (versions only) | ``=``, ``!=``, ``IN`` | a quoted string, or ``('a', 'b')`` |
| ``source_path`` (versions only) | ``=``, ``!=``, ``LIKE``, ``ILIKE`` | a quoted string |
| ``version_number`` (versions only) | ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` | an integer |
| ``tags.<key>`` / ``tag.<key>`` (key may be back-quoted) | ``=``, ``!=``, ``LIKE``, ``ILIKE`` | a quoted string |

Order by (``order_by`` entries, ``ASC`` by default): ``name``, ``creation_timestamp``,
``last_updated_timestamp`` and, for versions, ``version_number``. Anything else is an
:class:`~gyre_registry.domain.errors.InvalidArgument` (MLflow's INVALID_PARAMETER_VALUE) naming the
offending part, never a silently ignored clause.

Limits: a filter has at most :data:`MAX_FILTER_LENGTH` characters and :data:`MAX_CLAUSES` clauses,
``version_number`` values fit PostgreSQL's bigint, ``order_by`` has at most :data:`MAX_ORDER_BY`
entries of :data:`MAX_ORDER_BY_LENGTH` characters. The scanner is hand-written, linear in the
length of the text (no regular expression that could backtrack). The grammar has no grouping
parentheses, so there is no nesting to limit.

The SQL produced reads the registry's own tables: ``registered_models`` (alias ``m``) and
``model_versions`` (alias ``v``); values are always bind parameters, never spliced into the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gyre_registry.domain.errors import InvalidArgument

Entity = Literal["model", "version"]

MAX_FILTER_LENGTH = 8192
"""Longest filter accepted (characters): room for :data:`MAX_CLAUSES` clauses, or one clause with
a 5,000-character tag value (the registry's longest); longer filters are refused before they are
scanned (MLflow itself sets no limit)."""
MAX_CLAUSES = 50
"""Most clauses in one filter (each one is a condition in the query)."""
MAX_ORDER_BY = 10
"""Most ``order_by`` entries."""
MAX_ORDER_BY_LENGTH = 256
"""Longest ``order_by`` entry (characters); the longest valid one has 29."""
_BIGINT = (-(2**63), 2**63 - 1)
"""What PostgreSQL's ``bigint`` (the version column) holds."""

_DIGITS = frozenset("0123456789")
_WORD_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_OPERATORS = ("!=", "<=", ">=", "=", "<", ">")

_STRING_OPS = {"=", "!=", "LIKE", "ILIKE"}
_SQL_OPS = {"=": "=", "!=": "<>", "LIKE": "LIKE", "ILIKE": "ILIKE", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


@dataclass(frozen=True)
class Clause:
    """One comparison: ``key`` is ``name``, ``run_id``, ``source_path``, ``version_number`` or
    ``tags.<key>``; ``value`` a string, an int, or a tuple of strings (``IN``)."""

    key: str
    op: str
    value: str | int | tuple[str, ...]


@dataclass
class Sql:
    """A WHERE condition and ORDER BY list with their bind parameters (``$n`` from ``first``)."""

    where: str = "TRUE"
    order_by: str = ""
    params: list[object] = field(default_factory=list)


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _where(text: str, position: int) -> str:
    return f"at position {position} (near {text[position:position + 40]!r})"


def _quoted_end(text: str, start: int) -> int:
    """End of the quoted string or back-quoted key at ``start`` (a backslash escapes the next
    character in strings, not in keys)."""
    quote = text[start]
    position = start + 1
    while position < len(text):
        char = text[position]
        if char == quote:
            return position + 1
        position += 2 if char == "\\" and quote != "`" else 1
    raise InvalidArgument("filter", f"unclosed quote {quote} {_where(text, start)}")


def _unescape(body: str) -> str:
    out: list[str] = []
    position = 0
    while position < len(body):
        if body[position] == "\\" and position + 1 < len(body):
            position += 1
        out.append(body[position])
        position += 1
    return "".join(out)


def _tokens(text: str) -> list[tuple[str, str]]:
    """``(kind, text)`` of each token: ``string`` (its value, unquoted), ``ident`` (``name``,
    ``tags.key``, ``tags.`key```, or a keyword such as ``AND``), ``op``, ``number``, ``punct``.

    A hand-written scanner that looks at each character a bounded number of times: time linear in
    ``len(text)``, whatever the text holds.
    """
    out: list[tuple[str, str]] = []
    position = 0
    end = len(text)
    while position < end:
        char = text[position]
        start = position
        if char.isspace():
            position += 1
        elif char in "'\"":
            position = _quoted_end(text, start)
            out.append(("string", _unescape(text[start + 1:position - 1])))
        elif char in _WORD_START or char == "`":
            if char != "`":
                while position < end and (_is_word(text[position]) or text[position] == "."):
                    position += 1
            # A back-quoted key, alone or after tags. / tag. (keys with spaces, dots, dashes).
            if position < end and text[position] == "`" and text[start:position].lower() in ("", "tags.", "tag."):
                tick = position
                position = _quoted_end(text, tick)
                if position == tick + 2:
                    raise InvalidArgument("filter", f"an empty back-quoted key {_where(text, tick)}")
            out.append(("ident", text[start:position]))
        elif char in _DIGITS or (char == "-" and position + 1 < end and text[position + 1] in _DIGITS):
            position += 1
            while position < end and text[position] in _DIGITS:
                position += 1
            if position < end and (_is_word(text[position]) or text[position] == "."):
                raise InvalidArgument("filter", f"malformed number {_where(text, start)}: use an integer")
            out.append(("number", text[start:position]))
        elif char in "(),":
            position += 1
            out.append(("punct", char))
        else:
            operator = next((op for op in _OPERATORS if text.startswith(op, position)), None)
            if operator is None:
                raise InvalidArgument("filter", f"cannot parse {_where(text, start)}")
            position += len(operator)
            out.append(("op", operator))
    return out


def _key(ident: str, entity: Entity) -> str:
    lowered = ident.lower()
    for prefix in ("tags.", "tag."):
        if lowered.startswith(prefix):
            key = ident[len(prefix):]
            if key.startswith("`") and key.endswith("`"):
                key = key[1:-1]
            if not key:
                raise InvalidArgument("filter", "a tag key is empty")
            return "tags." + key
    allowed = {"name"} if entity == "model" else {"name", "run_id", "source_path", "version_number"}
    if lowered not in allowed:
        raise InvalidArgument(
            "filter", f"cannot search {'registered models' if entity == 'model' else 'model versions'} by "
            f"{_short(ident)}; use {', '.join(sorted(allowed))} or tags.<key>",
        )
    return lowered


def _short(value: str) -> str:
    return repr(value) if len(value) <= 40 else repr(value[:40]) + "…"


def parse_filter(text: str, entity: Entity) -> list[Clause]:
    """The clauses of an MLflow filter string (empty for an empty filter), in time linear in its length.

    Raises:
        InvalidArgument: longer than :data:`MAX_FILTER_LENGTH` characters, more than
            :data:`MAX_CLAUSES` clauses, syntax outside the subset above, a key the entity has not,
            or a ``version_number`` outside bigint.
    """
    text = text or ""
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidArgument("filter", f"is {len(text)} characters long; at most {MAX_FILTER_LENGTH}")
    tokens = _tokens(text)
    clauses: list[Clause] = []
    i = 0
    while i < len(tokens):
        if clauses:
            if tokens[i][0] != "ident" or tokens[i][1].upper() != "AND":
                raise InvalidArgument("filter", f"expected AND between clauses, got {_short(tokens[i][1])}")
            i += 1
        if len(clauses) == MAX_CLAUSES:
            raise InvalidArgument("filter", f"has more than {MAX_CLAUSES} clauses")
        if i + 1 >= len(tokens):
            raise InvalidArgument("filter", "a clause needs a key, an operator and a value")
        kind, ident = tokens[i]
        if kind != "ident":
            raise InvalidArgument("filter", f"expected a key, got {_short(ident)}")
        key = _key(ident, entity)
        op_kind, op = tokens[i + 1]
        op = op.upper()
        if op_kind not in ("op", "ident") or op not in {*_SQL_OPS, "IN"}:
            raise InvalidArgument("filter", f"unsupported comparator {_short(op)} after {_short(ident)}")
        i += 2
        if op == "IN":
            if key != "run_id":
                raise InvalidArgument("filter", f"IN works on run_id only, not {_short(ident)}")
            values, i = _in_list(tokens, i)
            clauses.append(Clause(key, op, values))
            continue
        if i >= len(tokens):
            raise InvalidArgument("filter", f"{_short(ident)} {op} needs a value")
        value_kind, raw = tokens[i]
        i += 1
        if key == "version_number":
            if value_kind != "number" or op in ("LIKE", "ILIKE"):
                raise InvalidArgument("filter", "version_number compares with =, !=, <, <=, >, >= and an integer")
            number = int(raw)
            if not _BIGINT[0] <= number <= _BIGINT[1]:
                raise InvalidArgument("filter", f"version_number {_short(raw)} is outside -2^63..2^63-1")
            clauses.append(Clause(key, op, number))
            continue
        if value_kind != "string":
            raise InvalidArgument("filter", f"the value of {_short(ident)} must be a quoted string, got {_short(raw)}")
        allowed = {"=", "!="} if key == "run_id" else _STRING_OPS
        if op not in allowed:
            raise InvalidArgument("filter", f"{_short(ident)} supports {', '.join(sorted(allowed))}, not {op}")
        clauses.append(Clause(key, op, raw))
    return clauses


def _in_list(tokens: list[tuple[str, str]], i: int) -> tuple[tuple[str, ...], int]:
    if i >= len(tokens) or tokens[i] != ("punct", "("):
        raise InvalidArgument("filter", "IN needs a parenthesised list of quoted strings")
    i += 1
    values: list[str] = []
    while i < len(tokens):
        kind, raw = tokens[i]
        if kind != "string":
            raise InvalidArgument("filter", f"IN lists hold quoted strings, got {_short(raw)}")
        values.append(raw)
        i += 1
        if i < len(tokens) and tokens[i] == ("punct", ","):
            i += 1
            continue
        if i < len(tokens) and tokens[i] == ("punct", ")"):
            return tuple(values), i + 1
        break
    raise InvalidArgument("filter", "unterminated IN list")


_ORDER_COLUMNS: dict[Entity, dict[str, str]] = {
    "model": {"name": "m.name", "creation_timestamp": "m.created_at", "last_updated_timestamp": "m.updated_at",
              "timestamp": "m.updated_at"},
    "version": {"name": "v.model_name", "version_number": "v.version", "creation_timestamp": "v.created_at",
                "last_updated_timestamp": "v.updated_at", "timestamp": "v.updated_at"},
}
_DEFAULT_ORDER: dict[Entity, list[str]] = {"model": ["m.name ASC"], "version": ["v.model_name ASC", "v.version DESC"]}
_TIE_BREAK: dict[Entity, list[str]] = {"model": ["m.name ASC"], "version": ["v.model_name ASC", "v.version DESC"]}


def parse_order_by(entries: list[str], entity: Entity) -> list[str]:
    """SQL ORDER BY terms for MLflow ``order_by`` entries (``"name DESC"``), with a unique tie-break
    so offset paging is stable.

    Raises:
        InvalidArgument: an unknown column or direction, more than :data:`MAX_ORDER_BY` entries, or
            one longer than :data:`MAX_ORDER_BY_LENGTH` characters.
    """
    if not entries:
        return list(_DEFAULT_ORDER[entity])
    if len(entries) > MAX_ORDER_BY:
        raise InvalidArgument("order_by", f"has {len(entries)} entries; at most {MAX_ORDER_BY}")
    terms: list[str] = []
    for entry in entries:
        if len(entry) > MAX_ORDER_BY_LENGTH:
            raise InvalidArgument("order_by", f"an entry is {len(entry)} characters long; at most "
                                  f"{MAX_ORDER_BY_LENGTH}")
        parts = entry.split()
        if not parts or len(parts) > 2:
            raise InvalidArgument("order_by", f"expected '<column> [ASC|DESC]', got {entry[:80]!r}")
        column = _ORDER_COLUMNS[entity].get(parts[0].lower())
        if column is None:
            raise InvalidArgument("order_by", f"cannot order by {parts[0][:80]!r}; use "
                                  f"{', '.join(sorted(_ORDER_COLUMNS[entity]))}")
        direction = parts[1].upper() if len(parts) == 2 else "ASC"
        if direction not in ("ASC", "DESC"):
            raise InvalidArgument("order_by", f"direction must be ASC or DESC, got {parts[1][:20]!r}")
        terms.append(f"{column} {direction}")
    return terms + [t for t in _TIE_BREAK[entity] if t.split()[0] not in {x.split()[0] for x in terms}]


def to_sql(clauses: list[Clause], order_by: list[str], entity: Entity, first: int = 1) -> Sql:
    """The WHERE condition for ``clauses`` and the ORDER BY of ``order_by`` entries.

    Args:
        clauses: from :func:`parse_filter`.
        order_by: MLflow ``order_by`` entries.
        entity: ``model`` (table alias ``m``) or ``version`` (``v``).
        first: number of the first bind parameter (``$first``).
    """
    sql = Sql(order_by=", ".join(parse_order_by(order_by, entity)))
    conditions: list[str] = []
    table = "m" if entity == "model" else "v"
    for clause in clauses:
        n = first + len(sql.params)
        if clause.key.startswith("tags."):
            sql.params.extend([clause.key[len("tags."):], clause.value])
            if clause.op == "=":
                # Containment uses the GIN index on tags.
                conditions.append(f"{table}.tags @> jsonb_build_object(${n}::text, ${n + 1}::text)")
                continue
            column = f"{table}.tags ->> ${n}::text"
            if clause.op == "!=":
                # An absent tag matches != (MLflow's clients hide prompts with
                # tags.`mlflow.prompt.is_prompt` != 'true', which must keep every untagged model).
                conditions.append(f"{column} IS DISTINCT FROM ${n + 1}::text")
                continue
            conditions.append(f"{column} {_SQL_OPS[clause.op]} ${n + 1}::text")
            continue
        if clause.op == "IN":
            sql.params.append(list(clause.value))  # type: ignore[arg-type]
            conditions.append(f"(v.lineage ->> 'runId') = ANY(${n}::text[])")
            continue
        column = {
            "name": "m.name" if entity == "model" else "v.model_name",
            "run_id": "coalesce(v.lineage ->> 'runId', '')",
            "source_path": "v.artifact_uri",
            "version_number": "v.version",
        }[clause.key]
        sql.params.append(clause.value)
        conditions.append(f"{column} {_SQL_OPS[clause.op]} ${n}")
    if conditions:
        sql.where = " AND ".join(conditions)
    return sql
