"""Transactional outbox: publish events exactly when the database change they describe commits.

A service that changes its tables and must tell Kafka about it cannot do both atomically: publish
first and the commit may fail (a phantom event); commit first and the process may die before
publishing (a lost event). The outbox closes the gap:

1. the use case writes its rows *and* the event (:func:`add_event` / :func:`add_events`) in one
   transaction;
2. :class:`OutboxRelay`, a background task, reads unsent events in ``seq`` order, publishes them
   through :class:`gyre_common.bus.Publisher` with ``ce_id`` = the event's id and ``ce_time`` = when
   it happened, waits for the broker's acknowledgements (``acks=all``) and stamps ``published_at``.

Delivery is at-least-once: a crash between the acknowledgement and the stamp publishes the event
again with the same ``ce_id``, so consumers dedupe on ``ce_id``. While the broker is away the relay
retries with capped exponential back-off; events wait in the table, nothing is lost.

Order: events of one key keep their order as long as the transactions that write them are
serialised per key (e.g. the registry locks the model row first), because ``seq`` then follows
commit order per key. Several replicas may run a relay: a transaction-scoped advisory lock (per
schema and table) lets one publish at a time, so two relays never interleave.

Poison rows: a row whose payload cannot be decoded as its event type (or whose topic or type is
unknown) can never be published. It is stamped ``failed_at`` with the ``error``, logged, counted
(``gyre_outbox_dead_events_total``) and skipped, so the rows after it still go out; such a row
stays in the table for a person to inspect (it is never pruned). This is the one place where the
order of a key can have a gap.

Each service keeps the table in its own schema and its own migrations: :data:`OUTBOX_DDL` creates
it (like :data:`gyre_common.bus.PROCESSED_EVENTS_DDL`), :data:`OUTBOX_DEAD_LETTER_DDL` adds the
``failed_at``/``error`` columns to a table created by an older DDL. The event type of a row comes
from :mod:`gyre_common.topics` (the topic's event type); it is stored with the row so a payload
stays readable if a topic ever changes type.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from google.protobuf.message import DecodeError, Message
from prometheus_client import Counter

from gyre_common.bus import Publisher, UnknownTopicError, message_class, topic_spec
from gyre_common.retry import backoff_s

log = logging.getLogger(__name__)

_FIRST_BACKOFF_S = 0.1
"""Wait after the first failed relay pass, in seconds; doubles up to ``max_backoff_s``."""

DEAD_EVENTS = Counter(
    "gyre_outbox_dead_events",
    "Outbox rows that could not be published (undecodable payload, unknown topic or type) and were skipped.",
    ["table", "topic"],
)

OUTBOX_DDL = """\
CREATE TABLE outbox (
    seq           bigserial   PRIMARY KEY,
    event_id      text        NOT NULL UNIQUE,
    topic         text        NOT NULL,
    event_type    text        NOT NULL,
    message_key   text,
    payload       bytea       NOT NULL,
    occurred_at   timestamptz NOT NULL,
    published_at  timestamptz,
    failed_at     timestamptz,
    error         text
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
"""
"""DDL of the outbox table ``outbox``, unqualified (migrations run with ``search_path`` = the
service's schema). Columns: ``seq`` (order), ``event_id`` (``ce_id``, unique), ``topic`` (base
name), ``event_type`` (full protobuf name), ``message_key``, ``payload`` (protobuf bytes),
``occurred_at`` (``ce_time``), ``published_at``, and ``failed_at``/``error`` for poison rows."""

OUTBOX_DEAD_LETTER_DDL = """\
ALTER TABLE outbox ADD COLUMN failed_at timestamptz;
ALTER TABLE outbox ADD COLUMN error text;
"""
"""Upgrade of a table made by the first version of :data:`OUTBOX_DDL` (without ``failed_at``/``error``)."""


@dataclass(frozen=True)
class OutboxEvent:
    """One event to queue: base topic, the message (or its protobuf bytes), key, ``ce_id``, ``ce_time``.

    ``event_id`` None means a random UUID; ``occurred_at`` None means now (UTC).
    """

    topic: str
    message: Message | bytes
    key: str | None
    event_id: str | None = None
    occurred_at: datetime | None = None


async def add_event(conn: asyncpg.Connection, topic_base: str, message: Message | bytes, *, key: str | None,
                    event_id: str | None = None, occurred_at: datetime | None = None,
                    table: str = "outbox") -> str:
    """Queue ``message`` for ``topic_base``; call inside the transaction of the change it describes.

    Args:
        conn: a connection inside an open transaction.
        topic_base: base topic name from :mod:`gyre_common.topics`.
        message: the event, or its protobuf bytes; a message must be the topic's event type.
        key: record key (the entity whose order matters).
        event_id: ``ce_id`` (a random UUID when omitted). An id already in the table is ignored:
            the first event with an id wins, so deterministic ids make re-queuing idempotent.
        occurred_at: ``ce_time``, aware (now, UTC, when omitted).
        table: the outbox table.

    Returns:
        The event id (``ce_id``).

    Raises:
        ValueError: unknown topic or a message of another type than the topic carries.
    """
    [ident] = await add_events(conn, [OutboxEvent(topic_base, message, key, event_id, occurred_at)], table=table)
    return ident


async def add_events(conn: asyncpg.Connection, events: Iterable[OutboxEvent], *, table: str = "outbox") -> list[str]:
    """Queue several events in one round trip (see :func:`add_event`); their ids, in order.

    Raises:
        ValueError: unknown topic or a message of another type than its topic carries.
    """
    rows = []
    now = datetime.now(UTC)
    for event in events:
        try:
            spec = topic_spec(event.topic)
        except UnknownTopicError as exc:
            raise ValueError(str(exc)) from None
        if isinstance(event.message, Message):
            if event.message.DESCRIPTOR.full_name != spec.event_type:
                raise ValueError(f"topic {event.topic!r} carries {spec.event_type}, "
                                 f"not {event.message.DESCRIPTOR.full_name}")
            payload = event.message.SerializeToString()
        else:
            payload = bytes(event.message)
        rows.append((event.event_id or str(uuid.uuid4()), event.topic, spec.event_type, event.key, payload,
                     event.occurred_at or now))
    if rows:
        await conn.executemany(
            f"INSERT INTO {table} (event_id, topic, event_type, message_key, payload, occurred_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
            rows,
        )
    return [row[0] for row in rows]


async def unsent_events(conn: asyncpg.Connection | asyncpg.Pool, *, table: str = "outbox",
                        limit: int = 1000) -> list[tuple[str, str, Message]]:
    """``(topic, event_id, message)`` of the events not yet published (nor failed), in ``seq`` order.

    For inspection and tests. Raises DecodeError / UnknownTopicError on a poison row.
    """
    rows = await conn.fetch(
        f"SELECT topic, event_id, event_type, payload FROM {table} "
        "WHERE published_at IS NULL AND failed_at IS NULL ORDER BY seq LIMIT $1", limit)
    return [(row["topic"], row["event_id"], message_class(row["event_type"]).FromString(bytes(row["payload"])))
            for row in rows]


class OutboxRelay:
    """Background publisher of the outbox (an object with ``start()``/``stop()`` for the runner).

    Args:
        pool: the service's pool (search path on its schema).
        publisher_factory: makes a fresh, not yet started :class:`Publisher`; the relay starts it
            lazily and replaces it after a failure (so a broker that went away and came back, even
            with another identity, gets a clean client).
        table: the outbox table.
        poll_interval_s: seconds between looks for unsent events when nobody calls :meth:`wake`.
        batch_size: most events published per round.
        max_backoff_s: cap of the exponential back-off while publishing fails.
        retention: how long published rows are kept before being deleted; None keeps them.
        publish_timeout_s: how long one round waits for the broker's acknowledgements.
        on_connect: awaited before each new publisher starts, e.g. ``ensure_topics`` so that a
            broker that came back empty (Tansu keeps topics in memory) gets the topic with Gyre's
            partition count instead of an auto-created one. A failure counts as a failed round.
    """

    def __init__(self, pool: asyncpg.Pool, publisher_factory: Callable[[], Publisher], *,
                 table: str = "outbox", poll_interval_s: float = 0.5, batch_size: int = 200,
                 max_backoff_s: float = 5.0, retention: timedelta | None = timedelta(days=7),
                 publish_timeout_s: float = 30.0,
                 on_connect: Callable[[], Awaitable[object]] | None = None) -> None:
        self._pool = pool
        self._factory = publisher_factory
        self._table = table
        self.poll_interval_s = poll_interval_s
        self.batch_size = batch_size
        self.max_backoff_s = max_backoff_s
        self.retention = retention
        self.publish_timeout_s = publish_timeout_s
        self._on_connect = on_connect
        self._publisher: Publisher | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        self.published = 0
        """Events published since start (counting re-publications)."""
        self.dead_events = 0
        """Poison rows set aside since start."""
        self.last_error: str | None = None
        """Text of the last failed round; None once a round succeeds."""

    def wake(self) -> None:
        """Publish soon: call after committing a transaction that added events."""
        self._wake.set()

    async def start(self) -> None:
        """Start the relay loop. Never fails on an unreachable broker: the loop retries."""
        self._task = asyncio.create_task(self._loop(), name=f"outbox-relay-{self._table}")

    async def stop(self) -> None:
        """Stop the loop, make one bounded last attempt to publish, close the producer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            # Bounded: a broker that is away must not hold up shutdown; the rows stay for next time.
            await asyncio.wait_for(self.relay_once(), 2.0)
        await self._drop_publisher()

    async def pending(self) -> int:
        """Number of events not yet published."""
        return int(await self._pool.fetchval(
            f"SELECT count(*) FROM {self._table} WHERE published_at IS NULL AND failed_at IS NULL"))

    async def dead(self) -> int:
        """Number of rows given up on (``failed_at`` set)."""
        return int(await self._pool.fetchval(f"SELECT count(*) FROM {self._table} WHERE failed_at IS NOT NULL"))

    async def relay_once(self) -> int:
        """Publish the oldest unsent events (up to ``batch_size``) and stamp them; the count.

        Returns 0 when there is nothing to send or another relay holds the lock. Rows that cannot be
        decoded are marked failed in the same transaction and not counted.

        Raises:
            aiokafka.errors.KafkaError, TimeoutError: the broker did not acknowledge every event
                (none is stamped; the whole batch is sent again next round).
            asyncpg.PostgresError, OSError: the database is unreachable.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext('gyre.outbox'), hashtext(current_schema() || $1))",
                "." + self._table,
            )
            if not locked:
                return 0
            rows = await conn.fetch(
                f"SELECT seq, event_id, topic, event_type, message_key, payload, occurred_at FROM {self._table} "
                "WHERE published_at IS NULL AND failed_at IS NULL ORDER BY seq LIMIT $1",
                self.batch_size,
            )
            if not rows:
                return 0
            decoded: list[tuple[asyncpg.Record, Message]] = []
            for row in rows:
                try:
                    topic_spec(row["topic"])
                    decoded.append((row, message_class(row["event_type"]).FromString(bytes(row["payload"]))))
                except (DecodeError, UnknownTopicError, ValueError) as exc:
                    await self._give_up(conn, row, f"{type(exc).__name__}: {exc}")
            if decoded:
                publisher = await self._ensure_publisher()
                deliveries: list[asyncio.Future[Any]] = []
                for row, message in decoded:
                    deliveries.append(await publisher.send(
                        row["topic"], message, row["message_key"], event_id=row["event_id"], time=row["occurred_at"],
                    ))
                await asyncio.wait_for(asyncio.gather(*deliveries), self.publish_timeout_s)
                await conn.execute(f"UPDATE {self._table} SET published_at = now() WHERE seq = ANY($1::bigint[])",
                                   [row["seq"] for row, _ in decoded])
        self.published += len(decoded)
        return len(decoded)

    async def _give_up(self, conn: asyncpg.Connection, row: asyncpg.Record, error: str) -> None:
        # A poison row would block every row after it forever: set it aside, loudly, and go on.
        log.error("outbox %s: event %s (seq %d, topic %s, type %s) cannot be published and is skipped: %s",
                  self._table, row["event_id"], row["seq"], row["topic"], row["event_type"], error)
        DEAD_EVENTS.labels(self._table, row["topic"]).inc()
        self.dead_events += 1
        await conn.execute(f"UPDATE {self._table} SET failed_at = now(), error = $2 WHERE seq = $1",
                           row["seq"], error[:2000])

    async def prune(self) -> int:
        """Delete rows published longer than ``retention`` ago; the number deleted."""
        if self.retention is None:
            return 0
        status = await self._pool.execute(
            f"DELETE FROM {self._table} WHERE published_at IS NOT NULL AND published_at < now() - $1::interval",
            self.retention,
        )
        return int(status.split()[-1])

    async def _ensure_publisher(self) -> Publisher:
        if self._publisher is None:
            if self._on_connect is not None:
                await self._on_connect()
            publisher = self._factory()
            try:
                await publisher.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(publisher.stop(), 2.0)
                raise
            self._publisher = publisher
        return self._publisher

    async def _drop_publisher(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(publisher.stop(), 2.0)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            self._wake.clear()
            try:
                sent = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                text = f"{type(exc).__name__}: {exc}"
                if self.last_error is None:
                    log.warning("outbox relay cannot publish, retrying every <= %.1fs: %s", self.max_backoff_s, text)
                self.last_error = text
                await self._drop_publisher()
                await asyncio.sleep(backoff_s(failures, first_s=_FIRST_BACKOFF_S, max_s=self.max_backoff_s))
                continue
            if self.last_error is not None:
                log.info("outbox relay publishing again")
                self.last_error = None
            failures = 0
            if sent >= self.batch_size:
                continue  # more are waiting
            if loop.time() - self._last_prune > 3600:
                self._last_prune = loop.time()
                try:
                    await self.prune()
                except Exception as exc:
                    log.warning("outbox prune failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
