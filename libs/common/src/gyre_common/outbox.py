"""Transactional outbox: publish events exactly when the database change they describe commits.

A service that changes its tables and must tell Kafka about it cannot do both atomically: publish
first and the commit may fail (a phantom event); commit first and the process may die before
publishing (a lost event). The outbox closes the gap:

1. the use case writes its rows *and* the events (:func:`add_events`) in one transaction;
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

The table ``outbox`` lives in each publishing service's own schema and is created by ONE shared
migration set, :mod:`gyre_common.outbox_migrations`, which the migration runner applies to every
service whose ``ServiceSpec`` says ``outbox=True`` (:data:`OUTBOX_DDL` is its text). The event type
of a row comes from :mod:`gyre_common.topics` (the topic's event type); it is stored with the row so
a payload stays readable if a topic ever changes type.

A service wires its relay with one call, :func:`add_outbox` (settings from
:class:`gyre_common.settings.OutboxSettings`), and queues events with :func:`add_events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any

import asyncpg
from google.protobuf.message import DecodeError, Message
from prometheus_client import Counter

from gyre_common.bus import Publisher, UnknownTopicError, ensure_topics, message_class, topic_spec
from gyre_common.retry import backoff_s
from gyre_common.service import OUTBOX_MIGRATIONS
from gyre_common.settings import OutboxSettings

if TYPE_CHECKING:
    from gyre_common.runner import ServiceContext

log = logging.getLogger(__name__)

_FIRST_BACKOFF_S = 0.1
"""Wait after the first failed relay pass, in seconds; doubles up to ``max_backoff_s``."""

DEAD_EVENTS = Counter(
    "gyre_outbox_dead_events",
    "Outbox rows that could not be published (undecodable payload, unknown topic or type) and were skipped.",
    ["table", "topic"],
)

OUTBOX_DDL = (resources.files(OUTBOX_MIGRATIONS) / "0001_outbox.sql").read_text(encoding="utf-8")
"""DDL of the outbox table ``outbox``, unqualified and idempotent (the shared migration; migrations
run with ``search_path`` = the service's schema). Columns: ``seq`` (order), ``event_id`` (``ce_id``,
unique), ``topic`` (base name), ``event_type`` (full protobuf name), ``message_key``, ``payload``
(protobuf bytes), ``occurred_at`` (``ce_time``), ``published_at``, and ``failed_at``/``error`` for
poison rows."""


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


async def add_events(conn: asyncpg.Connection, events: Iterable[OutboxEvent], *, table: str = "outbox") -> list[str]:
    """Queue ``events``; call inside the transaction of the change they describe (one round trip).

    Args:
        conn: a connection inside an open transaction.
        events: each with its base topic (from :mod:`gyre_common.topics`), the message (of the
            topic's event type) or its protobuf bytes, the record key, and optionally ``event_id``
            (``ce_id``; a random UUID when None; an id already in the table is ignored, so
            deterministic ids make re-queuing idempotent) and ``occurred_at`` (``ce_time``, aware;
            now, UTC, when None).
        table: the outbox table.

    Returns:
        The event ids (``ce_id``), in order.

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
        wake_coalesce_s: seconds :meth:`wake` waits before waking the loop, so that a burst of
            commits is published in one round (one transaction and one broker round trip) instead
            of one round each; 0 wakes at once.
    """

    def __init__(self, pool: asyncpg.Pool, publisher_factory: Callable[[], Publisher], *,
                 table: str = "outbox", poll_interval_s: float = 0.5, batch_size: int = 200,
                 max_backoff_s: float = 5.0, retention: timedelta | None = timedelta(days=7),
                 publish_timeout_s: float = 30.0,
                 on_connect: Callable[[], Awaitable[object]] | None = None,
                 wake_coalesce_s: float = 0.0) -> None:
        self._pool = pool
        self._factory = publisher_factory
        self._table = table
        self.poll_interval_s = poll_interval_s
        self.batch_size = batch_size
        self.max_backoff_s = max_backoff_s
        self.retention = retention
        self.publish_timeout_s = publish_timeout_s
        self._on_connect = on_connect
        self.wake_coalesce_s = wake_coalesce_s
        self._wake_pending = False
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
        """Publish soon: call after committing a transaction that added events (inside the event loop)."""
        if self.wake_coalesce_s <= 0:
            self._wake.set()
        elif not self._wake_pending:
            self._wake_pending = True
            asyncio.get_running_loop().call_later(self.wake_coalesce_s, self._wake_now)

    def _wake_now(self) -> None:
        self._wake_pending = False
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


PUBLISH_TIMEOUT_MARGIN_S = 5.0
"""Seconds a relay round waits for acknowledgements beyond the producer's own request timeout
(``GYRE_KAFKA_REQUEST_TIMEOUT_MS``). The producer fails a send that outlives its request timeout
with a clear error (which broker, which timeout); the margin covers what happens before a send is
on the wire (the linger of a batch, a metadata refresh after a leader change), so that the relay's
own, vaguer timeout only fires when the producer is stuck, not in its place."""


def add_outbox(ctx: ServiceContext, *, topics: Sequence[str], wake_coalesce_s: float = 0.0,
               table: str = "outbox") -> OutboxRelay:
    """Wire the service's outbox relay: a background task of ``ctx`` publishing ``table`` to Kafka.

    The settings come from ``ctx.settings`` (an :class:`~gyre_common.settings.OutboxSettings`); the
    publisher is the service's (``ctx.spec.name``, traced like its other clients); before each new
    publisher, ``topics`` are created with Gyre's partition count if the broker lacks them. The
    relay is added as the task ``outbox-relay`` now, so call this before adding consumers: tasks
    stop in reverse order, and consumers then stop (and commit) before the relay's last pass.
    The service's ``ServiceSpec`` must say ``outbox=True`` so that the table is migrated.

    Args:
        ctx: the runner's context (``ctx.db`` is required).
        topics: base names of the topics the service queues events for.
        wake_coalesce_s: see :class:`OutboxRelay`.
        table: the outbox table.

    Returns:
        The relay: pass ``relay.wake`` to whatever commits events.

    Raises:
        TypeError: ``ctx.settings`` is not an ``OutboxSettings``.
    """
    settings = ctx.settings
    if not isinstance(settings, OutboxSettings):
        raise TypeError(f"{type(settings).__name__} must derive from gyre_common.settings.OutboxSettings")
    kafka, names = ctx.kafka, list(topics)
    relay = OutboxRelay(
        ctx.db,
        lambda: Publisher(kafka, service=ctx.spec.name, tracer_provider=ctx.telemetry.active_tracer_provider),
        table=table,
        poll_interval_s=settings.outbox_poll_interval_s,
        batch_size=settings.outbox_batch_size,
        max_backoff_s=settings.outbox_max_backoff_s,
        retention=timedelta(hours=settings.outbox_retention_hours) if settings.outbox_retention_hours else None,
        publish_timeout_s=kafka.request_timeout_ms / 1000 + PUBLISH_TIMEOUT_MARGIN_S,
        on_connect=lambda: ensure_topics(kafka, names),
        wake_coalesce_s=wake_coalesce_s,
    )
    ctx.add_task(relay, name="outbox-relay")
    return relay
