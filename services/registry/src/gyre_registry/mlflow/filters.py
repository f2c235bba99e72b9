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

The SQL produced reads the registry's own tables: ``registered_models`` (alias ``m``) and
``model_versions`` (alias ``v``); values are always bind parameters, never spliced into the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from gyre_registry.domain.errors import InvalidArgument

Entity = Literal["model", "version"]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<ident>(?:tags?\.)?(?:`[^`]+`|[A-Za-z_][\w.]*))
      | (?P<op>!=|<=|>=|=|<|>)
      | (?P<number>-?\d+)
      | (?P<punct>[(),])
    )""",
    re.VERBOSE,
)

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


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise InvalidArgument("filter", f"cannot parse {text[position:position + 40]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        position = match.end()
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
            f"{ident!r}; use {', '.join(sorted(allowed))} or tags.<key>",
        )
    return lowered


def parse_filter(text: str, entity: Entity) -> list[Clause]:
    """The clauses of an MLflow filter string (empty for an empty filter).

    Raises:
        InvalidArgument: syntax outside the subset above, or a key the entity has not.
    """
    tokens = _tokens(text or "")
    clauses: list[Clause] = []
    i = 0
    while i < len(tokens):
        if clauses:
            if tokens[i][0] != "ident" or tokens[i][1].upper() != "AND":
                raise InvalidArgument("filter", f"expected AND between clauses, got {tokens[i][1]!r}")
            i += 1
        if i + 1 >= len(tokens):
            raise InvalidArgument("filter", "a clause needs a key, an operator and a value")
        kind, ident = tokens[i]
        if kind != "ident":
            raise InvalidArgument("filter", f"expected a key, got {ident!r}")
        key = _key(ident, entity)
        op_kind, op = tokens[i + 1]
        op = op.upper()
        if op_kind not in ("op", "ident") or op not in {*_SQL_OPS, "IN"}:
            raise InvalidArgument("filter", f"unsupported comparator {op!r} after {ident!r}")
        i += 2
        if op == "IN":
            if key != "run_id":
                raise InvalidArgument("filter", f"IN works on run_id only, not {ident!r}")
            values, i = _in_list(tokens, i)
            clauses.append(Clause(key, op, values))
            continue
        if i >= len(tokens):
            raise InvalidArgument("filter", f"{ident} {op} needs a value")
        value_kind, raw = tokens[i]
        i += 1
        if key == "version_number":
            if value_kind != "number" or op in ("LIKE", "ILIKE"):
                raise InvalidArgument("filter", "version_number compares with =, !=, <, <=, >, >= and an integer")
            clauses.append(Clause(key, op, int(raw)))
            continue
        if value_kind != "string":
            raise InvalidArgument("filter", f"the value of {ident} must be a quoted string, got {raw!r}")
        allowed = {"=", "!="} if key == "run_id" else _STRING_OPS
        if op not in allowed:
            raise InvalidArgument("filter", f"{ident} supports {', '.join(sorted(allowed))}, not {op}")
        clauses.append(Clause(key, op, _unquote(raw)))
    return clauses


def _in_list(tokens: list[tuple[str, str]], i: int) -> tuple[tuple[str, ...], int]:
    if i >= len(tokens) or tokens[i][1] != "(":
        raise InvalidArgument("filter", "IN needs a parenthesised list of quoted strings")
    i += 1
    values: list[str] = []
    while i < len(tokens):
        kind, raw = tokens[i]
        if kind != "string":
            raise InvalidArgument("filter", f"IN lists hold quoted strings, got {raw!r}")
        values.append(_unquote(raw))
        i += 1
        if i < len(tokens) and tokens[i][1] == ",":
            i += 1
            continue
        if i < len(tokens) and tokens[i][1] == ")":
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
        InvalidArgument: an unknown column or direction.
    """
    if not entries:
        return list(_DEFAULT_ORDER[entity])
    terms: list[str] = []
    for entry in entries:
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
