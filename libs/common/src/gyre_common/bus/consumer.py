"""Consuming Gyre events: decode, handle with retries, dead-letter, commit after success.

Delivery is at-least-once. Offsets are committed only for records whose handler succeeded or that
went to the dead-letter topic, so a crash (or a lost group membership) means redelivery, never
loss; handlers must therefore be idempotent (see :mod:`gyre_common.bus.idempotency`).

Lifecycle: :meth:`Consumer.start` returns at once and runs everything in a background task, which
connects (retrying with capped back-off while the broker is unreachable), joins the group and
polls; :meth:`Consumer.stop` finishes the in-flight batch, commits and leaves. So a consumer is a
runner background component as it is: ``ctx.add_task(consumer)``; :func:`add_consumer` also adds
its progress to the service's readiness.

Failures are sorted by :func:`gyre_common.bus.failures.classify_failure`: transient ones (the
database or broker away) are waited out with back-off, for as long as it takes, never dead-lettered;
permanent ones (invalid content) are dead-lettered at once; unknown ones get bounded retries, then
the dead-letter topic. A failing batch is split in halves until the failing record is alone, so one
record never holds back the others. While records wait without progress the stall clock runs
(``gyre_bus_consumer_stalled_seconds``); past ``consumer_stall_after_s`` readiness says not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from opentelemetry import trace
from opentelemetry.metrics import Meter
from opentelemetry.trace import TracerProvider

from gyre_common.bus import tracing
from gyre_common.bus.admin import ensure_topics
from gyre_common.bus.codec import EventDecodeError, topic_spec
from gyre_common.bus.deadletter import Rejected
from gyre_common.bus.envelope import Envelope, decode_record
from gyre_common.bus.failures import Failure, classify_failure, failure_detail, failure_reason
from gyre_common.bus.headers import DLQ_CUT, DLQ_ERROR_MAX_CHARS, Headers, dead_letter_headers
from gyre_common.bus.metrics import METER_NAME, BusMetrics, bus_metrics
from gyre_common.bus.publisher import producer_config
from gyre_common.bus.retry import RetryPolicy
from gyre_common.health import Check
from gyre_common.retry import backoff_s
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

# Wait between attempts while the broker is unreachable, in seconds (doubling, capped).
_BROKER_FIRST_WAIT_S = 0.2
_BROKER_MAX_WAIT_S = 5.0
# Longest pause between attempts while a transient failure (database, broker) lasts: short enough
# that the consumer resumes within seconds of the dependency coming back.
_TRANSIENT_MAX_WAIT_S = 5.0
_TRANSIENT_FIRST_WAIT_S = 0.1

DEAD_LETTER_MAX_BYTES = 1_000_000
"""Largest dead-letter record the consumer sends as it is, in bytes (key + value + headers). Below
aiokafka's ``max_request_size`` (1 MiB) and Apache Kafka's default ``message.max.bytes``
(1 MiB + 12 B); a bigger record goes with its value cut (header ``gyre_dlq_cut`` says so)."""
_MINIMAL_KEY_BYTES = 1024
"""A key kept in the last-resort dead letter only up to this many bytes."""


def _broker_backoff_s(failures: int) -> float:
    return backoff_s(failures, first_s=_BROKER_FIRST_WAIT_S, max_s=_BROKER_MAX_WAIT_S)


class _Abandoned(Exception):
    """Stop was requested while the batch waited; its unfinished records are redelivered later."""


class ConsumerStalled(RuntimeError):
    """Readiness detail of a consumer that made no progress for longer than ``consumer_stall_after_s``."""


@dataclass
class ConsumerStats:
    """Counters of one consumer since it was made (for metrics and tests).

    Attributes:
        handled: records whose handler succeeded.
        retries: repeated handler calls after an unknown failure (bounded by the retry policy).
        transient_waits: pauses while a transient failure (database or broker away) lasted.
        splits: failing batches split in two to isolate the failing record.
        dead_lettered: records sent to the dead-letter topic.
        dead_letters_cut: of those, records sent with their value cut to fit the size limit.
        commits, broker_errors, connect_attempts: broker-side work.
    """

    handled: int = 0
    retries: int = 0
    transient_waits: int = 0
    splits: int = 0
    dead_lettered: int = 0
    dead_letters_cut: int = 0
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

    Per record: decode (any failure -> poison -> dead-letter topic at once), call the handler inside
    a CONSUMER span parented by the producer's trace context, and on failure act on its class
    (:func:`~gyre_common.bus.failures.classify_failure`): transient -> wait with back-off and call
    again, indefinitely; permanent (including :class:`DeadLetter`, or :class:`Rejected` records
    returned by a batch handler) -> dead-letter at once; unknown -> retry ``max_retries`` times with
    exponential back-off, then dead-letter the original bytes and move on. A batch call failing
    for a non-transient reason is split in halves, recursively, until the failing record is alone,
    so one bad record does not sink the batch. Offsets are committed after each batch. Broker
    errors are logged and retried with back-off; the loop never dies of them.
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
        meter: Meter | None = None,
        stall_after_s: float | None = None,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
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
            meter: where the bus metrics go (:mod:`gyre_common.bus.metrics`); the global meter
                provider when omitted (:func:`add_consumer` passes the service's).
            stall_after_s: seconds without progress on held records before :meth:`check_progress`
                fails; ``settings.consumer_stall_after_s`` when omitted.
            dead_letter_max_bytes: largest dead-letter record sent whole, in bytes; bigger ones
                go with their value cut.
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
        # Set by stop() and by a rebalance taking partitions away: a wait between attempts (an
        # outage, a retry) ends at once and the batch is left for redelivery, so neither a
        # shutdown nor the group's rebalance waits for the database to come back.
        self._interrupt = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._assigned = asyncio.Event()
        self._polling = False
        self._stall_after_s = stall_after_s if stall_after_s is not None else settings.consumer_stall_after_s
        self._dead_letter_max_bytes = dead_letter_max_bytes
        self._metrics: BusMetrics | None = None
        if meter is not None:
            self.use_meter(meter)
        # The stall clock (monotonic seconds): set when records arrive while none were held, moved
        # on by every finished record, cleared when a batch is done. Not cleared when a batch is
        # read again after an unexpected error, so being stuck on the same offsets shows.
        self._holding_since: float | None = None
        self._last_progress = 0.0
        self._last_failure = ""
        self._stuck_at = ""

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

    def use_meter(self, meter: Meter) -> None:
        """Export this consumer's metrics (stall gauge, dead-letter counter) through ``meter``."""
        self._metrics = bus_metrics(meter)
        self._metrics.watch(self)

    def _use_global_meter(self) -> None:
        self._metrics = bus_metrics(None)
        self._metrics.watch(self)

    def stalled_s(self) -> float:
        """Seconds this consumer has held records without finishing any (0 while idle or keeping up)."""
        if self._holding_since is None:
            return 0.0
        return max(0.0, time.monotonic() - max(self._holding_since, self._last_progress))

    async def check_progress(self) -> None:
        """A readiness check (:data:`gyre_common.health.Check`): passes unless the consumer has held
        records without progress for longer than ``stall_after_s``.

        Raises:
            ConsumerStalled: the message says for how long, where, and the last failure seen.
        """
        stalled = self.stalled_s()
        if stalled > self._stall_after_s:
            where = f" at {self._stuck_at}" if self._stuck_at else ""
            why = f"; last failure: {self._last_failure}" if self._last_failure else ""
            raise ConsumerStalled(f"consumer group {self.group_id} made no progress for {stalled:.0f}s{where}{why}")

    async def start(self) -> None:
        """Start the background task (connect, join, poll) and return at once; never raises for
        broker trouble. Calling it while running does nothing."""
        if self.running:
            return
        if self._metrics is None:
            self._use_global_meter()
        self._stopping.clear()
        self._interrupt.clear()
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
        self._interrupt.set()
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
        self._interrupt.set()
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
                delay = _broker_backoff_s(failures)
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
                await self._sleep_unless_stopping(_broker_backoff_s(failures))
                continue
            if batch:
                async with self._batch_lock:
                    try:
                        await self._process(batch)
                    except _Abandoned:
                        # Stopping, or the partitions are moving: the unfinished records are
                        # redelivered (here or to the member that gets them).
                        self._rewind(consumer, batch)
                        self._holding_since = None
                    except Exception as exc:
                        # A bug in the bus, not a handler failure (those are classified per call).
                        # Go back to the first unfinished record so nothing is committed past it,
                        # and try again; the stall clock keeps running, so readiness shows it.
                        failures += 1
                        self._last_failure = failure_detail(exc)[:200]
                        log.exception("consumer %s failed on a batch; it will be read again", self.group_id)
                        self._rewind(consumer, batch)
                        await self._sleep_unless_stopping(_broker_backoff_s(failures))
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
        now = time.monotonic()
        if self._holding_since is None:
            self._holding_since = now
        prefix = self.settings.topic_prefix
        decoded: list[tuple[ConsumerRecord, Envelope | EventDecodeError]] = []
        for records in batch.values():
            for record in records:
                try:
                    decoded.append((record, decode_record(record, prefix)))
                except EventDecodeError as exc:
                    decoded.append((record, exc))
                except Exception as exc:  # decode_record wraps everything; this guards the guard
                    decoded.append((record, EventDecodeError("decode_error", failure_detail(exc))))
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
            await self._run_batch(good)
            for record in poison:
                self._done(record)
        else:
            for record, item in decoded:
                if isinstance(item, EventDecodeError):
                    await self._dead_letter(record, item.reason, item.detail, attempts=0)
                else:
                    await self._handle_one(record, item)
                self._done(record)
        self._holding_since = None
        self._last_failure = self._stuck_at = ""

    async def _run_batch(self, items: list[tuple[ConsumerRecord, Envelope]]) -> None:
        """One batch-handler call for ``items``; a transient failure is waited out and the same
        call made again, any other failure splits the batch in halves (each handled the same way)
        until the failing record is alone, which then gets the per-record treatment."""
        if not items:
            return
        envelopes = [env for _, env in items]
        transient = 0
        while True:
            try:
                rejects = await self._invoke(envelopes)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                kind = classify_failure(exc)
                if kind is Failure.TRANSIENT:
                    transient += 1
                    await self._wait_out(exc, transient, items[0][0])
                    continue
                if len(items) == 1:
                    await self._handle_one(items[0][0], items[0][1], first_failure=exc)
                    self._done(items[0][0])
                    return
                self.stats.splits += 1
                half = len(items) // 2
                log.info("batch of %d from %s failed (%s); splitting it to find the failing record",
                         len(items), self.topics, failure_detail(exc)[:200])
                # Left half first: records of one partition stay in offset order.
                await self._run_batch(items[:half])
                await self._run_batch(items[half:])
                return
        chosen: list[tuple[ConsumerRecord, Rejected]] = []
        if rejects:
            records = {(r.topic, r.partition, r.offset): r for r, _ in items}
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
        for record, _ in items:
            last[(record.topic, record.partition)] = record  # offsets rise within a partition
        for record in last.values():
            self._done(record)

    async def _handle_one(self, record: ConsumerRecord, env: Envelope, *,
                          first_failure: Exception | None = None) -> None:
        """Handle one record until it succeeds or is dead-lettered (the caller marks it done).

        ``first_failure`` is the error of a call already made for it alone (a batch split down to
        this record); it counts as the first attempt.

        Raises:
            _Abandoned: stop was requested while waiting; the record is not finished.
        """
        attempts = 0
        unknown = 0
        transient = 0
        failure = first_failure
        while True:
            if failure is None:
                attempts += 1
                try:
                    rejects = await self._invoke([env])
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failure = exc
                else:
                    if rejects:
                        await self._dead_letter(record, rejects[0].reason, rejects[0].detail, attempts=attempts)
                    else:
                        self.stats.handled += 1
                    return
            else:
                attempts = max(attempts, 1)
            kind = classify_failure(failure)
            if kind is Failure.TRANSIENT:
                transient += 1
                await self._wait_out(failure, transient, record)
            elif kind is Failure.PERMANENT:
                await self._dead_letter(record, failure_reason(failure), failure_detail(failure), attempts=attempts)
                return
            else:
                unknown += 1
                transient = 0
                if unknown >= self._policy.attempts:
                    await self._dead_letter(record, HANDLER_FAILED, failure_detail(failure), attempts=attempts)
                    return
                log.warning("handler for %s[%d]@%d failed (attempt %d of %d), retrying: %s", record.topic,
                            record.partition, record.offset, unknown, self._policy.attempts, failure_detail(failure))
                self._note_failure(failure, record)
                self.stats.retries += 1
                await self._pause(self._policy.delay_s(unknown))
            failure = None

    async def _wait_out(self, exc: BaseException, failures: int, record: ConsumerRecord) -> None:
        """Pause after a transient failure (back-off, capped at a few seconds); never gives up.

        Raises:
            _Abandoned: stop was requested meanwhile.
        """
        self.stats.transient_waits += 1
        self._note_failure(exc, record)
        first = max(self._policy.backoff_ms / 1000.0, _TRANSIENT_FIRST_WAIT_S)
        delay = backoff_s(failures, first_s=first, max_s=_TRANSIENT_MAX_WAIT_S)
        if failures == 1 or failures % 20 == 0:
            log.warning("consumer %s waits for a dependency (%s) at %s; retrying every <= %.1fs, not dead-lettering",
                        self.group_id, failure_detail(exc)[:300], self._stuck_at, _TRANSIENT_MAX_WAIT_S)
        await self._pause(delay)

    async def _pause(self, delay_s: float) -> None:
        """Wait ``delay_s`` seconds between attempts.

        Raises:
            _Abandoned: stop or a rebalance interrupted the wait.
        """
        try:
            await asyncio.wait_for(self._interrupt.wait(), delay_s)
        except TimeoutError:
            return
        raise _Abandoned

    def _note_failure(self, exc: BaseException, record: ConsumerRecord) -> None:
        self._last_failure = failure_detail(exc)[:300]
        self._stuck_at = f"{record.topic}[{record.partition}]@{record.offset}"

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
        # max(): a batch's split path may mark records done after later (poison) ones were.
        self._pending[tp] = max(self._pending.get(tp, 0), record.offset + 1)
        self._last_progress = time.monotonic()

    async def _dead_letter(self, record: ConsumerRecord, reason: str, error: str, *, attempts: int) -> None:
        """Send the original record to the group's dead-letter topic; retried until acknowledged.

        A record too big for the producer or the broker (``MessageSizeTooLargeError`` and kin, or
        over ``dead_letter_max_bytes`` before sending) goes with its value cut, and then, if even
        that is refused, with no value and only the ``gyre_dlq_*`` and CloudEvents headers; header
        ``gyre_dlq_cut`` says what was cut. If the broker refuses even that, the record is logged
        and skipped: a size error never loops.
        """
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
        key, value = record.key, record.value
        original_size = _record_size(key, value, headers)
        stage = 0
        if original_size > self._dead_letter_max_bytes:
            stage = 1
            key, value, headers = self._cut(record, headers, stage, original_size, "over the size limit")
        failures = 0
        while True:
            try:
                await producer.send_and_wait(self.dead_letter_topic, value, key=key, headers=headers)
                break
            except (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError) as exc:
                stage += 1
                if stage > 2:
                    log.error("dead letter of %s[%d]@%d refused even without its payload (%r); skipped",
                              record.topic, record.partition, record.offset, exc)
                    return
                key, value, headers = self._cut(record, headers, stage, original_size, type(exc).__name__)
            except KafkaError as exc:
                # Committing past a record that is not safely dead-lettered would lose it.
                failures += 1
                self.stats.broker_errors += 1
                self._note_failure(exc, record)
                log.error("dead-lettering %s@%d failed, retrying: %r", record.topic, record.offset, exc)
                await asyncio.sleep(_broker_backoff_s(failures))
        self.stats.dead_lettered += 1
        if stage:
            self.stats.dead_letters_cut += 1
        if self._metrics is not None:
            self._metrics.dead_lettered.add(1, {"group": self.group_id, "reason": reason})
        log.warning(
            "dead-lettered %s[%d]@%d to %s: %s: %s",
            record.topic, record.partition, record.offset, self.dead_letter_topic, reason, error[:500],
        )

    def _cut(self, record: ConsumerRecord, headers: Headers, stage: int, original_size: int,
             why: str) -> tuple[bytes | None, bytes, Headers]:
        """The dead letter cut down: stage 1 keeps as much of the value as fits, stage 2 keeps no
        value, the original key only when short, and only the CloudEvents and dead-letter headers."""
        value = record.value or b""
        kept = [(k, v) for k, v in headers if k != DLQ_CUT]
        key = record.key
        if stage >= 2:
            kept = [(k, v) for k, v in kept if k.startswith(("gyre_dlq_", "ce_")) or k == "content-type"]
            kept = [(k, v[:DLQ_ERROR_MAX_CHARS] if v else v) for k, v in kept]
            if key is not None and len(key) > _MINIMAL_KEY_BYTES:
                key = key[:_MINIMAL_KEY_BYTES]
            new_value = b""
        else:
            room = self._dead_letter_max_bytes - _record_size(key, b"", kept) - 256
            new_value = value[:max(room, 0)]
        note = (f"value cut from {len(value)} to {len(new_value)} bytes ({why}; the whole record was "
                f"{original_size} bytes); read the original at {record.topic}[{record.partition}]@{record.offset}")
        kept.append((DLQ_CUT, note.encode()))
        log.warning("dead letter of %s[%d]@%d: %s", record.topic, record.partition, record.offset, note)
        return key, new_value, kept

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


class ServiceWiring(Protocol):
    """What :func:`add_consumer` needs of a service's wiring context (the runner's ``ServiceContext``)."""

    def add_task(self, task: Consumer, *, name: str | None = None) -> None: ...
    def add_check(self, name: str, check: Check) -> None: ...


def add_consumer(ctx: ServiceWiring, consumer: Consumer, *, name: str | None = None) -> Consumer:
    """Run ``consumer`` as a background task of the service and make its progress part of readiness.

    Adds the task (started after the servers, stopped in reverse order, committing on stop), a
    readiness check ``consumer:<group>`` (:meth:`Consumer.check_progress`: not ready while the
    consumer holds records without progress for longer than ``consumer_stall_after_s``), and
    exports the bus metrics through the service's meter when the context has telemetry.
    Returns ``consumer``.
    """
    telemetry = getattr(ctx, "telemetry", None)
    if telemetry is not None and hasattr(telemetry, "meter"):
        consumer.use_meter(telemetry.meter(METER_NAME))
    ctx.add_task(consumer, name=name or f"consumer-{consumer.group}")
    ctx.add_check(f"consumer:{consumer.group}", consumer.check_progress)
    return consumer


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits what was handled before partitions move, after the in-flight batch finished."""

    def __init__(self, owner: Consumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        owner = self.owner
        owner._assigned.clear()
        if revoked:
            owner._interrupt.set()  # a batch waiting out an outage gives way instead of blocking the group
        async with owner._batch_lock:
            if not owner._stopping.is_set():
                owner._interrupt.clear()
            if owner._commit_task is not None:
                await asyncio.wait({owner._commit_task})
            await owner._commit(set(revoked))
            for tp in revoked:
                owner._pending.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self.owner._assigned.set()


def _record_size(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> int:
    """Bytes of a record's key, value and headers (what counts against the broker's size limit,
    give or take a few bytes of framing)."""
    return (len(key or b"") + len(value or b"")
            + sum(len(k.encode()) + len(v or b"") + 4 for k, v in headers))
