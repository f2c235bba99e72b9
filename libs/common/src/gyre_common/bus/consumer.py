"""Consuming Gyre events: decode, handle with retries, dead-letter, commit after success.

Delivery is at-least-once. Offsets are committed only for records whose handler succeeded or that
went to the dead-letter topic, so a crash (or a lost group membership) means redelivery, never
loss; handlers must therefore be idempotent (see :mod:`gyre_common.bus.idempotency`).

Lifecycle: :meth:`Consumer.start` returns at once and runs everything in a background task, which
connects (retrying with capped back-off while the broker is unreachable), joins the group and
polls; :meth:`Consumer.stop` finishes the in-flight batch, commits and leaves. So a consumer is a
runner background component as it is: ``ctx.add_task(consumer)``.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from gyre_common.bus.deadletter import DeadLetter, Rejected
from gyre_common.bus.envelope import Envelope, decode_record
from gyre_common.bus.headers import dead_letter_headers
from gyre_common.bus.publisher import producer_config
from gyre_common.bus.retry import RetriesExhausted, RetryPolicy, call_with_retries
from gyre_common.settings import KafkaSettings
from gyre_common.topics import dead_letter_topic, full_name

log = logging.getLogger(__name__)

EventHandler = Callable[[Envelope], Awaitable[None]]
"""Handles one event; raising means "retry me", raising :class:`DeadLetter` "dead-letter me now"."""
BatchHandler = Callable[[list[Envelope]], Awaitable[Sequence[Rejected] | None]]
"""Handles a batch of events (possibly from several partitions, each in offset order); may return
the records it rejects (dead-lettered at once, the rest count as handled)."""

HANDLER_FAILED = "handler_failed"
"""``gyre_dlq_reason`` of a record whose handler kept failing; decode failures have their own."""

# Wait between attempts when the broker is unreachable, in seconds (doubling, capped).
_BROKER_BACKOFF_S = (0.2, 5.0)


def _backoff_s(failures: int) -> float:
    first, ceiling = _BROKER_BACKOFF_S
    return float(min(first * 2 ** min(max(failures, 1) - 1, 10), ceiling))


@dataclass
class ConsumerStats:
    """Counters of one consumer since it was made (for metrics and tests)."""

    handled: int = 0
    retries: int = 0
    dead_lettered: int = 0
    commits: int = 0
    broker_errors: int = 0
    connect_attempts: int = 0


class Consumer:
    """One consumer-group member reading Gyre topics and calling a handler.

    Give exactly one of ``handler`` (per event) or ``batch_handler`` (per batch of up to
    ``batch_max_records``). ``await start()`` returns at once: a background task connects, joins
    the group and polls until ``await stop()``, which finishes the in-flight batch, commits and
    leaves the group. ``async with Consumer(...)`` is start/stop; ``ctx.add_task(consumer)`` runs it
    in a service. While the broker is unreachable the task retries with capped back-off, logging
    one line per attempt; the service keeps running (its broker readiness check says not ready).

    Per record: decode (poison -> dead-letter topic at once), call the handler inside a CONSUMER span
    parented by the producer's trace context, retry failures ``max_retries`` times with exponential
    back-off, then dead-letter the original bytes and move on. A handler raising :class:`DeadLetter`
    (or a batch handler returning :class:`Rejected` records) dead-letters at once, without retries.
    A failing batch call falls back to one call per record, so one bad record does not sink the
    batch. Offsets are committed after each batch. Broker errors are logged and retried with
    back-off; the loop never dies of them.
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
            settings: broker address, prefix, batch size, retry policy defaults; broker calls the
                consumer makes at stop (commit, leave) are bounded by ``request_timeout_ms``.
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
        self._io_timeout_s = max(settings.request_timeout_ms / 1000, 1.0)
        self._tracer = tracing.LiveTracer(tracer_provider)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._pending: dict[TopicPartition, int] = {}
        # Held while a batch is processed and committed; a rebalance waits for it (see _Listener).
        self._batch_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._assigned = asyncio.Event()
        self._polling = False

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def assignment(self) -> set[TopicPartition]:
        """Partitions this member owns right now."""
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    @property
    def connected(self) -> bool:
        """True once the background task reached the broker (and until stop)."""
        return self._polling

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop` while the background task is alive."""
        return self._task is not None and not self._task.done()

    async def wait_assigned(self, within_s: float = 30.0) -> None:
        """Wait until the group gave this member partitions. Raises ``TimeoutError`` after ``within_s``."""
        await asyncio.wait_for(self._assigned.wait(), within_s)

    async def start(self) -> None:
        """Start the background task (connect, join, poll) and return at once; never raises for
        broker trouble. Calling it while running does nothing."""
        if self.running:
            return
        self._stopping.clear()
        self._task = asyncio.create_task(self._main(), name=f"gyre-consumer-{self.group}")

    async def run(self) -> None:
        """Start (when not started) and wait until the consumer is stopped.

        Cancelling ``run()`` stops the consumer like :meth:`stop`, so ``ctx.add_task(consumer.run)``
        works too (``ctx.add_task(consumer)`` is the usual way).
        """
        await self.start()
        task = self._task
        assert task is not None
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await self.stop()
            raise

    async def stop(self, grace_s: float | None = 30.0) -> None:
        """Finish the in-flight batch, commit, leave the group, disconnect. Safe to call twice.

        Args:
            grace_s: seconds to wait for the in-flight batch; past it the batch is cancelled and its
                unfinished records are redelivered to the group later. The commit and the leave
                that follow take at most ``request_timeout_ms`` each.
        """
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            if not self._polling:
                task.cancel()  # still connecting: nothing was handled, nothing to finish
            _, unfinished = await asyncio.wait({task}, timeout=grace_s)
            if unfinished:
                log.warning("consumer %s: the in-flight batch did not finish within %ss; cancelled",
                            self.group_id, grace_s)
                task.cancel()
                await asyncio.wait({task}, timeout=self._io_timeout_s)
            elif not task.cancelled() and task.exception() is not None:
                log.error("consumer loop of %s ended with an error", self.group_id, exc_info=task.exception())
        if self._consumer is not None:
            await self._commit_settled()
        await self._close_clients()
        self._polling = False

    async def abort(self) -> None:
        """Stop at once: cancel the in-flight batch and disconnect WITHOUT committing.

        What was not committed is redelivered to the group, as after a crash. For fatal errors and
        for tests of redelivery; use :meth:`stop` for a normal shutdown.
        """
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=self._io_timeout_s)
        self._pending.clear()
        if self._commit_task is not None:
            self._commit_task.cancel()
            await asyncio.wait({self._commit_task}, timeout=self._io_timeout_s)
            self._commit_task = None
        await self._close_clients()
        self._polling = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _main(self) -> None:
        if await self._connect():
            await self._poll()

    async def _connect(self) -> bool:
        """Create topics, connect the dead-letter producer and the consumer, subscribe; retried with
        capped back-off until it works or :meth:`stop` is called (then False)."""
        failures = 0
        servers = self.settings.bootstrap_servers
        while not self._stopping.is_set():
            self.stats.connect_attempts += 1
            try:
                await self._open()
            except (KafkaError, OSError, TimeoutError) as exc:
                await self._close_clients()
                failures += 1
                self.stats.broker_errors += 1
                delay = _backoff_s(failures)
                log.warning("broker %s unreachable, retrying in %.1fs (consumer group %s: %s)",
                            servers, delay, self.group_id, exc)
                await self._sleep_unless_stopping(delay)
                continue
            if failures:
                log.info("broker %s reachable; consumer group %s joining", servers, self.group_id)
            self._polling = True
            return True
        return False

    async def _open(self) -> None:
        if self._create_topics:
            await asyncio.wait_for(
                ensure_topics(self.settings, self.bases, dead_letter_groups=[self.group]), self._io_timeout_s
            )
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
        # Subscribing after start(): aiokafka's start() would otherwise wait, without any deadline,
        # until the group join completes. This way the join runs in aiokafka's coordinator task and
        # getmany() simply returns nothing until partitions are assigned.
        await self._consumer.start()
        self._consumer.subscribe(list(self.topics), listener=_Listener(self))

    async def _close_clients(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        self._assigned.clear()
        for name, client in (("consumer", consumer), ("dead-letter producer", producer)):
            if client is None:
                continue
            try:
                # stop() leaves the group (partitions move on at once); bounded, the broker may be gone.
                await asyncio.wait_for(client.stop(), self._io_timeout_s)
            except Exception as exc:  # closing is best effort: the process may be going away anyway
                log.warning("closing the %s of %s failed: %r", name, self.group_id, exc)

    async def _sleep_unless_stopping(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay_s)

    async def _poll(self) -> None:
        """Poll, handle and commit until :meth:`stop`; the final commit is :meth:`stop`'s."""
        consumer = self._consumer
        assert consumer is not None
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
                await self._sleep_unless_stopping(_backoff_s(failures))
                continue
            if batch:
                async with self._batch_lock:
                    try:
                        await self._process(batch)
                    except Exception:
                        # A bug, not a handler failure (those are caught per record). Go back to the
                        # first unfinished record so nothing is committed past it, and try again.
                        failures += 1
                        log.exception("consumer %s failed on a batch; it will be read again", self.group_id)
                        self._rewind(consumer, batch)
                        await self._sleep_unless_stopping(_backoff_s(failures))
            self._commit_soon()

    def _rewind(self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        for tp, records in batch.items():
            if records:
                with contextlib.suppress(IllegalStateError, AssertionError):  # no longer assigned
                    consumer.seek(tp, max(self._pending.get(tp, 0), records[0].offset))

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
            await asyncio.wait({self._commit_task})  # bounded: _commit has a deadline
            self._commit_task = None
        await self._commit()

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
            rejects = await self._invoke(envelopes)
        except asyncio.CancelledError:
            raise
        except DeadLetter as exc:
            if len(decoded) != 1:
                # Which records? Ask one at a time; each single call may dead-letter its record.
                log.info("batch of %d from %s refused (%r); retrying record by record",
                         len(envelopes), self.topics, exc)
                await self._one_by_one(decoded)
                return
            await self._dead_letter(decoded[0][0], exc.reason, exc.detail, attempts=1)
            self._done(decoded[0][0])
            return
        except Exception as exc:
            log.warning("batch of %d from %s failed (%r); retrying record by record",
                        len(envelopes), self.topics, exc)
            await self._one_by_one(decoded)
            return
        chosen: list[tuple[ConsumerRecord, Rejected]] = []
        if rejects:
            records = {(r.topic, r.partition, r.offset): r for r, _ in decoded}
            for reject in rejects:
                env = reject.envelope
                record = records.pop((env.topic, env.partition, env.offset), None)
                if record is None:
                    log.error("batch handler of %s rejected %s@%d, which is not in its batch (or twice); ignored",
                              self.group_id, env.topic, env.offset)
                else:
                    chosen.append((record, reject))
            await asyncio.gather(*(self._dead_letter(record, r.reason, r.detail, attempts=1) for record, r in chosen))
        self.stats.handled += len(envelopes) - len(chosen)
        last: dict[tuple[str, int], ConsumerRecord] = {}
        for record, _ in decoded:
            last[(record.topic, record.partition)] = record  # offsets rise within a partition
        for record in last.values():
            self._done(record)

    async def _one_by_one(self, decoded: list[tuple[ConsumerRecord, Envelope]]) -> None:
        for record, env in decoded:
            await self._handle_with_retries(record, env)
            self._done(record)

    async def _handle_with_retries(self, record: ConsumerRecord, env: Envelope) -> None:
        calls = 0
        verdict: DeadLetter | None = None

        async def attempt() -> None:
            nonlocal calls, verdict
            calls += 1
            if calls > 1:
                self.stats.retries += 1
            try:
                rejects = await self._invoke([env])
            except DeadLetter as exc:
                verdict = exc  # not an error to retry: the handler's final word
                return
            if rejects:
                verdict = DeadLetter(rejects[0].reason, rejects[0].detail)

        try:
            await call_with_retries(attempt, self._policy, describe=f"handler for {env.topic}@{env.offset}")
        except RetriesExhausted as exc:
            await self._dead_letter(record, HANDLER_FAILED, repr(exc.last), attempts=exc.attempts)
            return
        if verdict is not None:
            await self._dead_letter(record, verdict.reason, verdict.detail, attempts=calls)
        else:
            self.stats.handled += 1

    async def _invoke(self, envelopes: list[Envelope]) -> Sequence[Rejected]:
        """Call the handler in a CONSUMER span; the records a batch handler rejected (or none)."""
        tracer = self._tracer.get()
        if tracer is None:
            # Tracing off: no span. A per-event handler still runs in the producer's trace context,
            # so what it publishes continues that trace; a batch (many traces) runs in none.
            if self._handler is not None:
                parent = tracing.remote_parent(envelopes[0])
                if parent is None:
                    await self._handler(envelopes[0])
                else:
                    with trace.use_span(parent, record_exception=False, set_status_on_exception=False):
                        await self._handler(envelopes[0])
                return ()
            assert self._batch_handler is not None
            return await self._batch_handler(envelopes) or ()
        span = tracing.process_span(tracer, self.group_id, envelopes)
        with trace.use_span(span, end_on_exit=True, record_exception=True, set_status_on_exception=True):
            if self._handler is not None:
                await self._handler(envelopes[0])
                return ()
            assert self._batch_handler is not None
            return await self._batch_handler(envelopes) or ()

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
                await asyncio.sleep(_backoff_s(failures))
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
            # aiokafka retries retriable commit errors forever; the deadline keeps stop() bounded.
            await asyncio.wait_for(consumer.commit(offsets), self._io_timeout_s)
            self.stats.commits += 1
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another member: it resumes from the last commit, so the
            # uncommitted records are redelivered there (at-least-once).
            log.warning("commit of %s failed after a rebalance: %r", offsets, exc)
        except (KafkaError, TimeoutError) as exc:
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
                await asyncio.wait({owner._commit_task})
            await owner._commit(set(revoked))
            for tp in revoked:
                owner._pending.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self.owner._assigned.set()
