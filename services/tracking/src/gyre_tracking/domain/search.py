"""MLflow's run and experiment search grammar as tracking speaks it: the dialects of the shared
grammar (:mod:`gyre_common.mlflow.search`), order_by keys and page tokens, parsed into plain data.

Filter: comparisons joined by ``AND`` and ``OR`` (case-insensitive; ``AND`` binds tighter),
grouped with parentheses, e.g.
``metrics.rmse < 0.5 and (params.model = 'rf' or tags."team name" LIKE 'risk%')``.
``OR`` and parentheses are Gyre's addition: MLflow's own server accepts ``AND`` only.

* ``metrics.<key>`` (``metric.`` too): the run's latest value; ``= != <> < <= > >=`` with a number,
  ``IS NULL`` / ``IS NOT NULL``.
* ``params.<key>`` / ``tags.<key>`` (``param.``, ``tag.``): ``= != <> LIKE ILIKE`` with a quoted
  string, ``IN`` / ``NOT IN`` with a parenthesised list of strings, ``IS NULL`` / ``IS NOT NULL``.
* ``attributes.<name>`` (``attribute.``, ``attr.``, ``run.``): ``run_id``, ``run_name``,
  ``status``, ``user_id``, ``artifact_uri`` compare like params; ``start_time``, ``end_time``
  (``created`` is ``start_time``) compare like metrics, in milliseconds since the Unix epoch.

Keys, quoting, numbers and the limits (:data:`MAX_FILTER_LENGTH` characters, :data:`MAX_NESTING`
levels of parentheses, :data:`MAX_COMPARISONS` comparisons, order_by keys of at most
:data:`MAX_ORDER_BY_LENGTH` characters) are the shared grammar's; parsing is linear in the length
of the text.

Everything raises :class:`~gyre_tracking.domain.errors.InvalidArgument` (MLflow's
INVALID_PARAMETER_VALUE) with the position of the problem, never another exception.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from enum import StrEnum

from gyre_common.mlflow import search as grammar
from gyre_common.mlflow.search import (
    MAX_COMPARISONS,
    MAX_FILTER_LENGTH,
    MAX_NESTING,
    MAX_ORDER_BY,
    NULL_OPS,
    NUMERIC_OPS,
    STRING_OPS,
    BoolOp,
    Comparison,
    Dialect,
    Expr,
    Operand,
    OrderKey,
    count_comparisons,
)
from gyre_tracking.domain.errors import InvalidArgument
from gyre_tracking.domain.model import RunStatus, ViewType

__all__ = [
    "MAX_COMPARISONS", "MAX_FILTER_LENGTH", "MAX_NESTING", "MAX_ORDER_BY", "MAX_ORDER_BY_LENGTH", "MAX_PAGE_OFFSET",
    "MAX_PAGE_TOKEN_LENGTH", "NUMERIC_OPS", "STRING_OPS", "BoolOp", "Comparison", "Entity", "Expr", "OrderKey",
    "SearchQuery", "count_comparisons", "decode_page_token", "encode_page_token", "page_size",
    "parse_experiment_filter", "parse_experiment_order_by", "parse_filter", "parse_order_by",
]

MAX_ORDER_BY_LENGTH = 1024
"""Longest order_by key (characters): a quoted 250-character key with its prefix and direction
fits several times over."""
MAX_PAGE_OFFSET = 2**53 - 1
"""Largest offset a page token may hold (rows): the largest integer a JSON double keeps exact, far
beyond any result set and well inside PostgreSQL's bigint for ``OFFSET``."""
MAX_PAGE_TOKEN_LENGTH = 256
"""Longest page token accepted (characters); the tokens this module writes have about 30."""


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

_METRIC = Operand("number", NUMERIC_OPS | NULL_OPS)
_TEXT = Operand("string", STRING_OPS)
_STRING_ATTRIBUTE = Operand("string", STRING_OPS - NULL_OPS)
_TIME = Operand("number", NUMERIC_OPS)

_PREFIXES = {
    "metrics": Entity.METRIC, "metric": Entity.METRIC,
    "params": Entity.PARAM, "param": Entity.PARAM, "parameters": Entity.PARAM,
    "tags": Entity.TAG, "tag": Entity.TAG,
    "attributes": Entity.ATTRIBUTE, "attribute": Entity.ATTRIBUTE, "attr": Entity.ATTRIBUTE,
    "run": Entity.ATTRIBUTE,
}


def _error(_field: str, message: str) -> InvalidArgument:
    return InvalidArgument(message)


def _check_status(comparison: Comparison) -> None:
    if comparison.entity is Entity.ATTRIBUTE and comparison.key == "status" and comparison.op in ("=", "!=") \
            and comparison.value not in RunStatus.__members__:
        raise InvalidArgument(f"unknown run status {grammar.short(str(comparison.value))} "
                              f"(known: {', '.join(RunStatus.__members__)})")


def _attributes(strings: frozenset[str], times: frozenset[str]) -> dict[str, Operand]:
    return {**{name: _STRING_ATTRIBUTE for name in strings}, **{name: _TIME for name in times}}


RUNS = Dialect(
    error=_error, prefixes=_PREFIXES,
    keyed={Entity.METRIC: _METRIC, Entity.PARAM: _TEXT, Entity.TAG: _TEXT},
    attributes=_attributes(STRING_ATTRIBUTES, TIME_ATTRIBUTES), attribute_entity=Entity.ATTRIBUTE,
    aliases={"run_uuid": "run_id", "created": "start_time", "user": "user_id", "name": "run_name"},
    check=_check_status, max_order_by_length=MAX_ORDER_BY_LENGTH,
)
"""Run filters and sort keys (SearchRuns): metrics., params., tags. and run attributes."""

EXPERIMENTS = Dialect(
    error=_error, prefixes={p: e for p, e in _PREFIXES.items() if e in (Entity.ATTRIBUTE, Entity.TAG)},
    keyed={Entity.TAG: _TEXT}, attributes=_attributes(EXPERIMENT_STRING_ATTRIBUTES, EXPERIMENT_TIME_ATTRIBUTES),
    attribute_entity=Entity.ATTRIBUTE, aliases={"experiment_name": "name"}, bare_attributes=True,
    max_order_by_length=MAX_ORDER_BY_LENGTH,
)
"""Experiment filters (SearchExperiments): ``name``, ``creation_time``, ``last_update_time`` (bare or
as ``attributes.``) and ``tags.``."""

EXPERIMENT_ORDER = Dialect(
    error=_error, prefixes={p: e for p, e in _PREFIXES.items() if e is Entity.ATTRIBUTE},
    attributes=_attributes(EXPERIMENT_STRING_ATTRIBUTES | {"experiment_id"}, EXPERIMENT_TIME_ATTRIBUTES),
    attribute_entity=Entity.ATTRIBUTE, aliases={"experiment_name": "name"}, bare_attributes=True,
    max_order_by_length=MAX_ORDER_BY_LENGTH,
)
"""Experiment sort keys: ``name``, ``experiment_id``, ``creation_time``, ``last_update_time``."""


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


def parse_filter(text: str) -> list[Expr]:
    """Parse a run filter into the expressions that must all hold (top-level ``AND``); a filter
    without ``OR`` gives plain comparisons. An empty or blank filter matches every run.

    Time and memory are linear in ``len(text)``.

    Raises:
        InvalidArgument: longer than :data:`MAX_FILTER_LENGTH` characters, parentheses nested
            deeper than :data:`MAX_NESTING`, more than :data:`MAX_COMPARISONS` comparisons, or
            anything outside the grammar (with its position).
    """
    return grammar.parse_filter(RUNS, text)


def parse_experiment_filter(text: str) -> list[Expr]:
    """Parse a SearchExperiments filter, e.g. ``name LIKE 'churn%' and tags.team = 'risk'``
    (same grammar, limits and errors as :func:`parse_filter`); times are epoch milliseconds."""
    return grammar.parse_filter(EXPERIMENTS, text)


def parse_experiment_order_by(clauses: list[str] | tuple[str, ...]) -> list[OrderKey]:
    """Parse SearchExperiments sort keys: ``name``, ``experiment_id``, ``creation_time``,
    ``last_update_time`` (bare or ``attributes.``), ASC by default."""
    return grammar.parse_order_by(EXPERIMENT_ORDER, clauses)


def parse_order_by(clauses: list[str] | tuple[str, ...]) -> list[OrderKey]:
    """Parse sort keys such as ``metrics.rmse ASC`` or ``attributes.start_time DESC`` (ASC by default)."""
    return grammar.parse_order_by(RUNS, clauses)


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
