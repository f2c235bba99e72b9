"""Idempotent consumers: remember which events were processed.

At-least-once delivery means a handler can see an event again (after a crash, a rebalance, or a
producer retry). Two helpers, keyed on ``ce_id`` or a natural key:

* :class:`SeenEvents`, an in-memory bounded LRU, for handlers whose effect is itself in memory or
  harmless to repeat rarely (it forgets on restart);
* :func:`claim_event`, a row in ``<schema>.processed_events`` written in the same PostgreSQL
  transaction as the handler's effect, so "processed" and "effect" commit or roll back together.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from datetime import datetime
from typing import Any

PROCESSED_EVENTS_DDL = """\
CREATE TABLE IF NOT EXISTS processed_events (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS processed_events_processed_at ON processed_events (processed_at);
"""
"""DDL of the processed-events table, unqualified: put it in the service's migrations, which run
with ``search_path`` set to the service's schema (or use :func:`processed_events_ddl`)."""

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _table(schema: str | None) -> str:
    if schema is None:
        return "processed_events"
    if not _IDENTIFIER.match(schema):
        raise ValueError(f"schema {schema!r} must be a lower-case SQL identifier")
    return f"{schema}.processed_events"


def processed_events_ddl(schema: str) -> str:
    """:data:`PROCESSED_EVENTS_DDL` with the table qualified by ``schema``.

    Raises:
        ValueError: ``schema`` is not a plain lower-case identifier (no quoting games).
    """
    table = _table(schema)
    return PROCESSED_EVENTS_DDL.replace(
        "EXISTS processed_events (", f"EXISTS {table} ("
    ).replace("ON processed_events (", f"ON {table} (")


async def claim_event(conn: Any, consumer: str, event_id: str, *, schema: str | None = None) -> bool:
    """Record that ``consumer`` processes ``event_id``; True the first time, False for a repeat.

    Call it inside the transaction that applies the event's effect (asyncpg ``conn.transaction()``):
    when the transaction rolls back the claim goes too, and a concurrent duplicate waits on the
    primary key until the first one commits, then gets False.

    Args:
        conn: an asyncpg connection (or anything with asyncpg's ``fetchval``).
        consumer: who processes (usually the consumer group), so several consumers can share a table.
        event_id: the dedupe key: ``Envelope.ce_id`` or a natural key.
        schema: schema of the table; None resolves it through ``search_path``.
    """
    inserted = await conn.fetchval(
        f"INSERT INTO {_table(schema)} (consumer, event_id) VALUES ($1, $2) "
        "ON CONFLICT DO NOTHING RETURNING true",
        consumer,
        event_id,
    )
    return bool(inserted)


async def prune_processed_events(conn: Any, older_than: datetime, *, schema: str | None = None) -> int:
    """Forget claims processed before ``older_than`` (aware datetime); returns how many went.

    Keep claims longer than any redelivery can arrive (the topic's retention is a safe bound).
    """
    status = await conn.execute(f"DELETE FROM {_table(schema)} WHERE processed_at < $1", older_than)
    return int(str(status).rsplit(" ", 1)[-1])


class SeenEvents:
    """Bounded LRU set of event ids for in-memory deduplication (forgets on restart)."""

    def __init__(self, maxsize: int = 100_000) -> None:
        """``maxsize``: most ids remembered; the least recently seen go first."""
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._ids: OrderedDict[str, None] = OrderedDict()

    def check_and_add(self, event_id: str) -> bool:
        """True when ``event_id`` is new (and now remembered), False when it was seen before."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.maxsize:
            self._ids.popitem(last=False)
        return True

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def discard(self, event_id: str) -> None:
        """Forget ``event_id`` (e.g. when its handler failed after :meth:`check_and_add`)."""
        self._ids.pop(event_id, None)
