"""Filters of :mod:`gyre_common.mlflow.search` as SQL conditions, through a small column map each
service supplies for its own schema.

Every value travels as a bind parameter (:class:`Args` hands out ``$n``); only the fixed column
expressions of the service's map and the operators below are spliced into the text, so a filter
cannot inject SQL. A column map says, per ``(entity, key)`` (or ``(entity, None)`` for every key of
an entity), where a comparison reads:

* :class:`Column`: an expression of the searched row (``r.status``, ``v.version``);
* :class:`KeyedRows`: rows of a key/value table belonging to the searched row (tracking's metrics,
  params and tags): one ``EXISTS`` semi-join per comparison;
* :class:`JsonbKeys`: a ``jsonb`` object column of the searched row (the registry's tags).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gyre_common.mlflow.search import BoolOp, Comparison, Expr

SQL_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "LIKE": "LIKE", "ILIKE": "ILIKE"}
"""Filter comparators and their SQL."""


class Args:
    """Collects bind parameters and hands out their ``$n`` placeholders (from ``$first``)."""

    def __init__(self, first: int = 1) -> None:
        self.values: list[Any] = []
        self.first = first

    def add(self, value: Any, cast: str = "") -> str:
        """The placeholder of ``value`` (with ``cast``, e.g. ``::text``)."""
        self.values.append(value)
        return f"${self.first + len(self.values) - 1}{cast}"


def value_condition(column: str, op: str, value: Any, args: Args, cast: str = "", list_column: str = "") -> str:
    """``column <op> $n`` (``IN``: ``= ANY($n::text[])``, ``NOT IN``: ``<> ALL(...)`` over
    ``list_column`` when given); ``IS [NOT] NULL`` without a parameter."""
    if op == "IN":
        return f"{list_column or column} = ANY({args.add(list(value or ()), '::text[]')})"
    if op == "NOT IN":
        return f"{list_column or column} <> ALL({args.add(list(value or ()), '::text[]')})"
    if op in ("IS NULL", "IS NOT NULL"):
        return f"{column} {op}"
    return f"{column} {SQL_OPS[op]} {args.add(value, cast)}"


class ColumnSql(Protocol):
    """Where one comparison reads: its SQL condition, parameters added to ``args``."""

    def condition(self, comparison: Comparison, args: Args) -> str: ...


@dataclass(frozen=True)
class Column:
    """A column expression of the searched row.

    Attributes:
        expression: e.g. ``r.status``, ``floor(extract(epoch FROM r.start_time) * 1000)::float8``.
        cast: the value parameter's cast (``::text``, ``::float8``, or none).
        list_expression: the expression ``IN`` / ``NOT IN`` compare instead, when it differs.
    """

    expression: str
    cast: str = ""
    list_expression: str = ""

    def condition(self, comparison: Comparison, args: Args) -> str:
        return value_condition(self.expression, comparison.op, comparison.value, args, self.cast,
                               self.list_expression)


@dataclass(frozen=True)
class KeyedRows:
    """Rows ``(owner, key, value)`` of a table, e.g. a run's params: ``EXISTS`` a row of the key
    whose value matches (``IS NULL``: no row of the key).

    Attributes:
        table: the table (aliased ``x``).
        owner: the condition tying ``x`` to the searched row (``x.run_pk = r.run_pk``).
        cast: the value parameter's cast.
        scope: more conditions on ``x`` (e.g. the searched experiments, so an index range serves it).
    """

    table: str
    owner: str
    cast: str = "::text"
    scope: str = ""

    def condition(self, comparison: Comparison, args: Args) -> str:
        where = f"{self.owner} AND x.key = {args.add(comparison.key, '::text')}"
        if self.scope:
            where += f" AND {self.scope}"
        if comparison.op == "IS NULL":
            return f"NOT EXISTS (SELECT 1 FROM {self.table} x WHERE {where})"
        if comparison.op == "IS NOT NULL":
            return f"EXISTS (SELECT 1 FROM {self.table} x WHERE {where})"
        matches = value_condition("x.value", comparison.op, comparison.value, args, self.cast)
        return f"EXISTS (SELECT 1 FROM {self.table} x WHERE {where} AND {matches})"


@dataclass(frozen=True)
class JsonbKeys:
    """Keys of a ``jsonb`` object column (text values): ``=`` is containment (the GIN index
    serves it); ``!=`` also holds where the key is absent (MLflow's clients hide prompts with
    ``tags.`mlflow.prompt.is_prompt` != 'true'``, which must keep every untagged row)."""

    column: str

    def condition(self, comparison: Comparison, args: Args) -> str:
        key, value = args.add(comparison.key, "::text"), args.add(comparison.value, "::text")
        if comparison.op == "=":
            return f"{self.column} @> jsonb_build_object({key}, {value})"
        if comparison.op == "!=":
            return f"{self.column} ->> {key} IS DISTINCT FROM {value}"
        return f"{self.column} ->> {key} {SQL_OPS[comparison.op]} {value}"


ColumnMap = Mapping[tuple[str, str | None], ColumnSql]
"""Where each ``(entity, key)`` reads; ``(entity, None)`` serves every key of the entity."""


def expr_sql(expr: Expr, columns: ColumnMap, args: Args) -> str:
    """The SQL condition of one filter expression (groups parenthesised)."""
    if isinstance(expr, Comparison):
        found = columns.get((expr.entity, expr.key))
        return (found if found is not None else columns[(expr.entity, None)]).condition(expr, args)
    assert isinstance(expr, BoolOp)
    return "(" + f" {expr.op} ".join(expr_sql(operand, columns, args) for operand in expr.operands) + ")"


def where_sql(exprs: Sequence[Expr], columns: ColumnMap, args: Args) -> list[str]:
    """The conditions (to be joined with ``AND``) of a parsed filter."""
    return [expr_sql(expr, columns, args) for expr in exprs]
