"""Consuming Gyre events: decode, handle with retries, dead-letter, commit after success.

Delivery is at-least-once. Offsets are committed only for records whose handler succeeded or that
went to the dead-letter topic, so a crash (or a lost group membership) means redelivery, never
loss; handlers must therefore be idempotent (see :mod:`gyre_common.bus.idempotency`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from gyre_common.bus import tracing
from gyre_common.bus.admin import ensure_topics
from gyre_common.bus.codec import EventDecodeError, topic_spec
from gyre_common.bus.envelope import Envelope, decode_record
from gyre_common.bus.headers import dead_letter_headers
from gyre_common.bus.publisher import producer_config
from gyre_common.bus.retry import RetriesExhausted, RetryPolicy, call_with_retries
from gyre_common.settings import KafkaSettings
from gyre_common.topics import dead_letter_topic, full_name

log = logging.getLogger(__name__)

EventHandler = Callable[[Envelope], Awaitable[None]]
"""Handles one event; raising means "retry me"."""
BatchHandler = Callable[[list[Envelope]], Awaitable[None]]
"""Handles a batch of events (possibly from several partitions, each in offset order)."""

HANDLER_FAILED = "handler_failed"
"""``gyre_dlq_reason`` of a record whose handler kept failing; decode failures have their own."""

# Wait between attempts when the broker is unreachable, in seconds (doubling, capped).
_BROKER_BACKOFF_S = (0.1, 5.0)


@dataclass
class ConsumerStats:
    """Counters of one consumer since start (for metrics and tests)."""

    handled: int = 0
    retries: int = 0
    dead_lettered: int = 0
    commits: int = 0
    broker_errors: int = 0


class Consumer:
    """One consumer-group member reading Gyre topics and calling a handler.

    Give exactly one of ``handler`` (per event) or ``batch_handler`` (per batch of up to
    ``batch_max_records``). Run it with ``async with Consumer(...)`` (starts a background loop,
    stops cleanly on exit) or ``await start()``, ``await run()`` and ``await stop()``.

    Per record: decode (poison -> dead-letter topic at once), call the handler inside a CONSUMER span
    parented by the producer's trace context, retry failures ``max_retries`` times with exponential
    back-off, then dead-letter the original bytes and move on. A failing batch call falls back to
    one call per record, so one bad record does not sink the batch. Offsets are committed after
    each batch. Broker errors are logged and retried with back-off; the loop never dies of them.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group: str,
        topics: Sequence[str],
        service: str,
        handler: EventHandler | None = None,
        batch_handler: BatchHandler | None = None,
        retry: RetryPolicy | None = None,
        create_topics: bool = True,
        poll_timeout_ms: int = 200,
        tracer_provider: TracerProvider | None = None,
        **consumer_options: object,
    ) -> None:
        """
        Args:
            settings: broker address, prefix, batch size, retry policy defaults.
            group: consumer group name without prefix; the broker sees ``topic_prefix + group``
                (so stacks with different prefixes never share a group), and the dead-letter topic
                is ``topic_prefix + group + ".dlq"``.
            topics: base topic names from :data:`gyre_common.topics.TOPICS`.
            service: name of the consuming service (client id).
            handler / batch_handler: the work; exactly one must be given.
            retry: overrides ``max_retries`` / ``retry_backoff_ms`` from settings.
            create_topics: create the topics and the dead-letter topic at start if missing.
            poll_timeout_ms: longest wait for records in one poll; bounds how long :meth:`stop` waits
                for an idle loop.
            tracer_provider: where spans go; the global provider when omitted.
            consumer_options: extra ``AIOKafkaConsumer`` keyword arguments (e.g. session_timeout_ms).

        Raises:
            ValueError: no topics, an unknown topic, or not exactly one handler.
        """
        if (handler is None) == (batch_handler is None):
            raise ValueError("give exactly one of handler= (per event) or batch_handler= (per batch)")
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        for base in topics:
            topic_spec(base)  # raises a clear error for an unknown topic
        self.settings = settings
        self.group = group
        self.group_id = f"{settings.topic_prefix}{group}"
        self.bases = tuple(topics)
        self.service = service
        self.topics = tuple(full_name(base, settings.topic_prefix) for base in topics)
        self.dead_letter_topic = dead_letter_topic(group, settings.topic_prefix)
        self.stats = ConsumerStats()
        self._handler = handler
        self._batch_handler = batch_handler
        self._policy = retry or RetryPolicy(settings.max_retries, settings.retry_backoff_ms)
        self._create_topics = create_topics
        self._poll_timeout_ms = poll_timeout_ms
        self._options = consumer_options
        self._client_id = f"{settings.client_id}-{service}"
        self._tracer = tracing.tracer(tracer_provider)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._pending: dict[TopicPartition, int] = {}
        # Held while a batch is processed and committed; a rebalance waits for it (see _Listener).
        self._batch_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._assigned = asyncio.Event()

    @property
    def assignment(self) -> set[TopicPartition]:
        """Partitions this member owns right now."""
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    async def wait_assigned(self, within_s: float = 30.0) -> None:
        """Wait until the group gave this member partitions. Raises ``TimeoutError`` after ``within_s``."""
        await asyncio.wait_for(self._assigned.wait(), within_s)

    async def start(self) -> None:
        """Create missing topics (optional), connect and join the group.

        Raises:
            aiokafka.errors.KafkaConnectionError: the broker cannot be reached.
        """
        if self._create_topics:
            await ensure_topics(self.settings, self.bases, dead_letter_groups=[self.group])
        self._producer = AIOKafkaProducer(**producer_config(self.settings, self._client_id))  # type: ignore[arg-type]
        await self._producer.start()
        options: dict[str, object] = {
            "bootstrap_servers": self.settings.bootstrap_servers,
            "client_id": self._client_id,
            "group_id": self.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": self.settings.batch_max_records,
            "request_timeout_ms": self.settings.request_timeout_ms,
            "retry_backoff_ms": self.settings.retry_backoff_ms,
            "session_timeout_ms": self.settings.session_timeout_ms,
            "heartbeat_interval_ms": self.settings.heartbeat_interval_ms,
        }
        options.update(self._options)
        self._consumer = AIOKafkaConsumer(**options)  # type: ignore[arg-type]
        self._consumer.subscribe(list(self.topics), listener=_Listener(self))
        try:
            await self._consumer.start()
        except BaseException:
            await self._producer.stop()
            raise

    async def run(self) -> None:
        """Poll, handle and commit until :meth:`stop`; returns after the final commit."""
        consumer = self._require_consumer()
        failures = 0
        while not self._stopping.is_set():
            try:
                batch = await consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self.settings.batch_max_records
                )
                failures = 0
            except KafkaError as exc:
                failures += 1
                self.stats.broker_errors += 1
                log.warning("polling %s failed, backing off: %r", self.topics, exc)
                await self._backoff(failures)
                continue
            async with self._batch_lock:
                if batch:
                    await self._process(batch)
            self._commit_soon()
        await self._commit_settled()

    def _commit_soon(self) -> None:
        """Commit what is pending in the background, overlapping the round trip with the next fetch.

        At most one commit is in flight; offsets handled meanwhile go with the next one. Only
        handled records are ever in ``_pending``, so an earlier commit never skips work.
        """
        if self._pending and (self._commit_task is None or self._commit_task.done()):
            self._commit_task = asyncio.create_task(self._commit())

    async def _commit_settled(self) -> None:
        """Wait for an in-flight background commit, then commit whatever is still pending."""
        if self._commit_task is not None:
            await asyncio.gather(self._commit_task, return_exceptions=True)
            self._commit_task = None
        await self._commit()

    async def stop(self, grace_s: float | None = 30.0) -> None:
        """Finish the in-flight batch, commit, leave the group, disconnect.

        Args:
            grace_s: seconds to wait for the in-flight batch; past it the batch is cancelled and its
                unfinished records are redelivered to the group later.
        """
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace_s)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            except Exception:
                log.exception("consumer loop of %s ended with an error", self.group)
            self._task = None
        if self._consumer is not None:
            await self._commit_settled()
            await self._consumer.stop()  # leaves the group, so partitions move on at once
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def abort(self) -> None:
        """Stop at once: cancel the in-flight batch and disconnect WITHOUT committing.

        What was not committed is redelivered to the group, as after a crash. For fatal errors and
        for tests of redelivery; use :meth:`stop` for a normal shutdown.
        """
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._pending.clear()
        if self._commit_task is not None:
            self._commit_task.cancel()
            await asyncio.gather(self._commit_task, return_exceptions=True)
            self._commit_task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> Self:
        await self.start()
        self._task = asyncio.create_task(self.run(), name=f"gyre-consumer-{self.group}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _require_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("Consumer is not started: use `async with` or await start()")
        return self._consumer

    async def _backoff(self, failures: int) -> None:
        first, ceiling = _BROKER_BACKOFF_S
        delay = min(first * 2 ** min(failures - 1, 10), ceiling)
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            pass

    # -- processing -------------------------------------------------------------------------

    async def _process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        prefix = self.settings.topic_prefix
        decoded: list[tuple[ConsumerRecord, Envelope | EventDecodeError]] = []
        for records in batch.values():
            for record in records:
                try:
                    decoded.append((record, decode_record(record, prefix)))
                except EventDecodeError as exc:
                    decoded.append((record, exc))
        if self._batch_handler is not None:
            good: list[tuple[ConsumerRecord, Envelope]] = []
            poison: list[ConsumerRecord] = []
            for record, item in decoded:
                if isinstance(item, EventDecodeError):
                    # Poison never reaches the handler. It is marked done only after the good
                    # records before it, so an interrupted batch cannot commit past unhandled ones.
                    await self._dead_letter(record, item.reason, item.detail, attempts=0)
                    poison.append(record)
                else:
                    good.append((record, item))
            await self._process_batch(good)
            for record in poison:
                self._done(record)
            return
        for record, item in decoded:
            if isinstance(item, EventDecodeError):
                await self._dead_letter(record, item.reason, item.detail, attempts=0)
            else:
                await self._handle_with_retries(record, item)
            self._done(record)

    async def _process_batch(self, decoded: list[tuple[ConsumerRecord, Envelope]]) -> None:
        if not decoded:
            return
        envelopes = [env for _, env in decoded]
        try:
            await self._invoke(envelopes)
            self.stats.handled += len(envelopes)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "batch of %d from %s failed (%r); retrying record by record", len(envelopes), self.topics, exc
            )
            for record, env in decoded:
                await self._handle_with_retries(record, env)
                self._done(record)
            return
        last: dict[tuple[str, int], ConsumerRecord] = {}
        for record, _ in decoded:
            last[(record.topic, record.partition)] = record  # offsets rise within a partition
        for record in last.values():
            self._done(record)

    async def _handle_with_retries(self, record: ConsumerRecord, env: Envelope) -> None:
        calls = 0

        async def attempt() -> None:
            nonlocal calls
            calls += 1
            if calls > 1:
                self.stats.retries += 1
            await self._invoke([env])

        try:
            await call_with_retries(attempt, self._policy, describe=f"handler for {env.topic}@{env.offset}")
            self.stats.handled += 1
        except RetriesExhausted as exc:
            await self._dead_letter(record, HANDLER_FAILED, repr(exc.last), attempts=exc.attempts)

    async def _invoke(self, envelopes: list[Envelope]) -> None:
        span = tracing.process_span(self._tracer, self.group_id, envelopes)
        with trace.use_span(span, end_on_exit=True, record_exception=True, set_status_on_exception=True):
            if self._handler is not None:
                await self._handler(envelopes[0])
            else:
                assert self._batch_handler is not None
                await self._batch_handler(envelopes)

    def _done(self, record: ConsumerRecord) -> None:
        tp = TopicPartition(record.topic, record.partition)
        # max(): a batch's fallback path may mark records done after later (poison) ones were.
        self._pending[tp] = max(self._pending.get(tp, 0), record.offset + 1)

    async def _dead_letter(self, record: ConsumerRecord, reason: str, error: str, *, attempts: int) -> None:
        """Send the original record to the group's dead-letter topic; retried until acknowledged."""
        producer = self._producer
        assert producer is not None
        headers = dead_letter_headers(
            record.headers,
            reason=reason,
            error=error,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            group=self.group_id,
            attempts=attempts,
        )
        failures = 0
        while True:
            try:
                await producer.send_and_wait(
                    self.dead_letter_topic, record.value, key=record.key, headers=headers
                )
                break
            except KafkaError as exc:
                # Committing past a record that is not safely dead-lettered would lose it.
                failures += 1
                self.stats.broker_errors += 1
                log.error("dead-lettering %s@%d failed, retrying: %r", record.topic, record.offset, exc)
                await asyncio.sleep(min(0.1 * 2 ** min(failures - 1, 10), 5.0))
        self.stats.dead_lettered += 1
        log.warning(
            "dead-lettered %s[%d]@%d to %s: %s: %s",
            record.topic, record.partition, record.offset, self.dead_letter_topic, reason, error,
        )

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None or not self._pending:
            return
        offsets = {tp: off for tp, off in self._pending.items() if only is None or tp in only}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
            self.stats.commits += 1
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another member: it resumes from the last commit, so the
            # uncommitted records are redelivered there (at-least-once).
            log.warning("commit of %s failed after a rebalance: %r", offsets, exc)
        except KafkaError as exc:
            self.stats.broker_errors += 1
            log.warning("commit of %s failed, will retry: %r", offsets, exc)
            return
        for tp, off in offsets.items():
            if self._pending.get(tp) == off:
                del self._pending[tp]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits what was handled before partitions move, after the in-flight batch finished."""

    def __init__(self, owner: Consumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        owner = self.owner
        owner._assigned.clear()
        async with owner._batch_lock:
            if owner._commit_task is not None:
                await asyncio.gather(owner._commit_task, return_exceptions=True)
            await owner._commit(set(revoked))
            for tp in revoked:
                owner._pending.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self.owner._assigned.set()
