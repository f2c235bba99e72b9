"""MLflow's search grammar for the model registry (the subset Gyre answers), turned into SQL.

The registry's dialect of the shared grammar (:mod:`gyre_common.mlflow.search`): clauses joined by
``AND`` (case-insensitive; no ``OR``, no parentheses), each ``<key> <op> <value>``:

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
field (``filter:`` / ``order_by:``) and the offending part, never a silently ignored clause.

Limits (the shared grammar's): a filter has at most :data:`MAX_FILTER_LENGTH` characters and
:data:`MAX_CLAUSES` clauses, ``version_number`` values fit PostgreSQL's bigint, ``order_by`` has at
most :data:`MAX_ORDER_BY` entries of :data:`MAX_ORDER_BY_LENGTH` characters; parsing is linear in
the length of the text.

The SQL produced reads the registry's own tables: ``registered_models`` (alias ``m``) and
``model_versions`` (alias ``v``), through the column maps below; values are always bind
parameters, never spliced into the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gyre_common.mlflow import search as grammar
from gyre_common.mlflow.search import MAX_COMPARISONS as MAX_CLAUSES
from gyre_common.mlflow.search import MAX_FILTER_LENGTH, MAX_ORDER_BY, Comparison, Dialect, Operand
from gyre_common.mlflow.search_sql import Args, Column, ColumnMap, JsonbKeys, where_sql
from gyre_registry.domain.errors import InvalidArgument

__all__ = ["MAX_CLAUSES", "MAX_FILTER_LENGTH", "MAX_ORDER_BY", "MAX_ORDER_BY_LENGTH", "Clause", "Entity", "Sql",
           "parse_filter", "parse_order_by", "to_sql"]

Entity = Literal["model", "version"]

MAX_ORDER_BY_LENGTH = 256
"""Longest ``order_by`` entry (characters); the longest valid one has 29."""

_STRING = Operand("string", frozenset({"=", "!=", "LIKE", "ILIKE"}))
_TAG, _ATTRIBUTE = "tag", "attribute"


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


def _dialect(attributes: dict[str, Operand]) -> Dialect:
    return Dialect(error=InvalidArgument, prefixes={"tags": _TAG, "tag": _TAG}, keyed={_TAG: _STRING},
                   attributes=attributes, attribute_entity=_ATTRIBUTE, bare_attributes=True, fold_case=True,
                   boolean=False, max_order_by_length=MAX_ORDER_BY_LENGTH)


_FILTERS: dict[Entity, Dialect] = {
    "model": _dialect({"name": _STRING}),
    "version": _dialect({"name": _STRING, "source_path": _STRING,
                         "run_id": Operand("string", frozenset({"=", "!=", "IN"})),
                         "version_number": Operand("integer", grammar.NUMERIC_OPS)}),
}
_ORDER_COLUMNS: dict[Entity, dict[str, str]] = {
    "model": {"name": "m.name", "creation_timestamp": "m.created_at", "last_updated_timestamp": "m.updated_at",
              "timestamp": "m.updated_at"},
    "version": {"name": "v.model_name", "version_number": "v.version", "creation_timestamp": "v.created_at",
                "last_updated_timestamp": "v.updated_at", "timestamp": "v.updated_at"},
}
_ORDERS: dict[Entity, Dialect] = {
    entity: Dialect(error=InvalidArgument, attributes=dict.fromkeys(columns, _STRING), attribute_entity=_ATTRIBUTE,
                    bare_attributes=True, fold_case=True, boolean=False, max_order_by_length=MAX_ORDER_BY_LENGTH)
    for entity, columns in _ORDER_COLUMNS.items()
}
_DEFAULT_ORDER: dict[Entity, list[str]] = {"model": ["m.name ASC"], "version": ["v.model_name ASC", "v.version DESC"]}
_TIE_BREAK = _DEFAULT_ORDER

_RUN_ID = "coalesce(v.lineage ->> 'runId', '')"
_FILTER_COLUMNS: dict[Entity, ColumnMap] = {
    "model": {(_ATTRIBUTE, "name"): Column("m.name"), (_TAG, None): JsonbKeys("m.tags")},
    "version": {
        (_ATTRIBUTE, "name"): Column("v.model_name"),
        (_ATTRIBUTE, "run_id"): Column(_RUN_ID, list_expression="(v.lineage ->> 'runId')"),
        (_ATTRIBUTE, "source_path"): Column("v.artifact_uri"),
        (_ATTRIBUTE, "version_number"): Column("v.version"),
        (_TAG, None): JsonbKeys("v.tags"),
    },
}
"""Where each key reads (the shared grammar's column maps for the registry's schema)."""


def parse_filter(text: str, entity: Entity) -> list[Clause]:
    """The clauses of an MLflow filter string (empty for an empty filter), in time linear in its length.

    Raises:
        InvalidArgument: longer than :data:`MAX_FILTER_LENGTH` characters, more than
            :data:`MAX_CLAUSES` clauses, syntax outside the subset above, a key the entity has not,
            or a ``version_number`` outside bigint.
    """
    clauses = []
    for expr in grammar.parse_filter(_FILTERS[entity], text):
        assert isinstance(expr, Comparison)  # the dialect has no OR
        key = f"tags.{expr.key}" if expr.entity == _TAG else expr.key
        assert expr.value is not None and not isinstance(expr.value, float)  # no IS NULL, no float operand
        clauses.append(Clause(key, expr.op, expr.value))
    return clauses


def parse_order_by(entries: list[str], entity: Entity) -> list[str]:
    """SQL ORDER BY terms for MLflow ``order_by`` entries (``"name DESC"``), with a unique tie-break
    so offset paging is stable.

    Raises:
        InvalidArgument: an unknown column or direction, more than :data:`MAX_ORDER_BY` entries, or
            one longer than :data:`MAX_ORDER_BY_LENGTH` characters.
    """
    if not entries:
        return list(_DEFAULT_ORDER[entity])
    terms = [f"{_ORDER_COLUMNS[entity][key.key]} {'ASC' if key.ascending else 'DESC'}"
             for key in grammar.parse_order_by(_ORDERS[entity], entries)]
    return terms + [t for t in _TIE_BREAK[entity] if t.split()[0] not in {x.split()[0] for x in terms}]


def _comparison(clause: Clause) -> Comparison:
    if clause.key.startswith("tags."):
        return Comparison(_TAG, clause.key[len("tags."):], clause.op, clause.value)
    return Comparison(_ATTRIBUTE, clause.key, clause.op, clause.value)


def to_sql(clauses: list[Clause], order_by: list[str], entity: Entity, first: int = 1) -> Sql:
    """The WHERE condition for ``clauses`` and the ORDER BY of ``order_by`` entries.

    Args:
        clauses: from :func:`parse_filter`.
        order_by: MLflow ``order_by`` entries.
        entity: ``model`` (table alias ``m``) or ``version`` (``v``).
        first: number of the first bind parameter (``$first``).
    """
    args = Args(first)
    conditions = where_sql([_comparison(clause) for clause in clauses], _FILTER_COLUMNS[entity], args)
    return Sql(where=" AND ".join(conditions) or "TRUE", order_by=", ".join(parse_order_by(order_by, entity)),
               params=args.values)
