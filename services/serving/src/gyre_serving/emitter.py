"""Inference events to ``inference.events`` without ever blocking or failing a prediction.

The request path calls :meth:`InferenceEmitter.emit`, which only appends the answered request to a
bounded in-memory queue (capacity counted in predictions). A background task drains the queue:
it builds one ``InferenceEvent`` per row and hands them to the bus :class:`Publisher` (key =
prediction id), waiting for acknowledgements a batch at a time.

What cannot be queued (queue full) or delivered (broker down or refusing) goes to an
:class:`EventOverflow`. Today's overflow, :class:`DroppingOverflow`, counts the events in
``gyre_serving_inference_events_dropped{reason}`` and logs (at most every few seconds). It is the
seam for a disk spool: an overflow that keeps batches and hands them back through
:meth:`EventOverflow.take` when the broker is back, which the drainer already asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gyre_common.bus import Publisher
from gyre_common.topics import INFERENCE_EVENTS
from gyre_serving import metrics
from gyre_serving.domain.events import ServedBatch, inference_events

log = logging.getLogger(__name__)

QUEUE_FULL = "queue_full"
BROKER_ERROR = "broker_error"
SHUTDOWN = "shutdown"


class EventOverflow(ABC):
    """Takes answered requests whose events the emitter could not queue or deliver."""

    @abstractmethod
    def spill(self, batch: ServedBatch, reason: str) -> None:
        """Take ``batch`` (all its rows); ``reason`` is ``queue_full``, ``broker_error`` or ``shutdown``.
        Must not block: it runs on the request path when the queue is full."""

    def take(self, max_rows: int) -> list[ServedBatch]:
        """Hand back spilled batches (up to about ``max_rows`` rows) to deliver now; [] keeps nothing."""
        return []


class DroppingOverflow(EventOverflow):
    """Drops what it is given, counting it (metric + :attr:`dropped`) and logging every ``log_every_s``."""

    def __init__(self, log_every_s: float = 10.0) -> None:
        self.dropped: dict[str, int] = {}
        self._log_every_s = log_every_s
        self._last_log = float("-inf")
        self._since_log: dict[str, int] = {}

    def spill(self, batch: ServedBatch, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + batch.rows
        self._since_log[reason] = self._since_log.get(reason, 0) + batch.rows
        metrics.EVENTS_DROPPED.labels(reason).inc(batch.rows)
        now = time.monotonic()
        if now - self._last_log >= self._log_every_s:
            self._last_log = now
            counts = ", ".join(f"{n} ({r})" for r, n in sorted(self._since_log.items()))
            log.warning("dropped inference events: %s; predictions were answered, their events are lost",
                        counts, extra={"dropped": dict(self._since_log)})
            self._since_log.clear()


@dataclass
class EmitterStats:
    """Counts since start, in events (rows)."""

    queued: int = 0
    published: int = 0
    failed: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


class InferenceEmitter:
    """Bounded queue + background publisher of inference events. Start/stop it with the service.

    Args:
        publisher_factory: makes an unstarted :class:`Publisher`; called again after the broker
            could not be reached.
        capacity_rows: most events waiting in memory.
        batch_rows: most events in flight to the broker at once.
        overflow: where undeliverable events go (:class:`DroppingOverflow` by default).
        reconnect_delay_s: first wait between attempts to reach the broker, doubling to 5 s.
        prepare: awaited before each connection attempt, e.g. creating the topic (optional).
    """

    def __init__(self, publisher_factory: Callable[[], Publisher], *, capacity_rows: int, batch_rows: int,
                 overflow: EventOverflow | None = None, reconnect_delay_s: float = 0.2,
                 prepare: Callable[[], Awaitable[object]] | None = None) -> None:
        self._factory = publisher_factory
        self._prepare = prepare
        self.capacity_rows = capacity_rows
        self.batch_rows = batch_rows
        self.overflow = overflow or DroppingOverflow()
        self.stats = EmitterStats()
        self._reconnect_delay_s = reconnect_delay_s
        self._queue: deque[ServedBatch] = deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._publisher: Publisher | None = None

    @property
    def queued_rows(self) -> int:
        """Events waiting in memory."""
        return self._queued_rows

    def emit(self, batch: ServedBatch) -> bool:
        """Queue the events of an answered request; never blocks, never raises.

        Returns False when the queue had no room (the batch went to the overflow, reason
        ``queue_full``) or the emitter is stopping.
        """
        if self._stopping or self._queued_rows + batch.rows > self.capacity_rows:
            self._spill(batch, SHUTDOWN if self._stopping else QUEUE_FULL)
            return False
        self._queue.append(batch)
        self._queued_rows += batch.rows
        self.stats.queued += batch.rows
        metrics.EVENT_QUEUE_ROWS.set(self._queued_rows)
        self._wakeup.set()
        return True

    async def start(self) -> None:
        """Start the background drainer (it connects to the broker on its own, retrying)."""
        self._task = asyncio.create_task(self._run(), name="gyre-serving-inference-events")

    async def stop(self) -> None:
        """Deliver what is queued (bounded by the caller's deadline), then disconnect.

        Whatever is still queued when the drainer ends or is cancelled is counted as ``shutdown``.
        """
        self._stopping = True
        self._wakeup.set()
        try:
            if self._task is not None:
                await self._task
        finally:
            if self._task is not None and not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            while self._queue:
                self._spill(self._pop(), SHUTDOWN)
            if self._publisher is not None:
                publisher, self._publisher = self._publisher, None
                with contextlib.suppress(Exception):
                    await publisher.stop()

    # -- the drainer ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._queue.extend(self.overflow.take(self.batch_rows))
                self._queued_rows = sum(batch.rows for batch in self._queue)
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            publisher = await self._connected()
            if publisher is None:
                return
            taken: list[ServedBatch] = []
            rows = 0
            while self._queue and (not taken or rows + self._queue[0].rows <= self.batch_rows):
                batch = self._pop()
                taken.append(batch)
                rows += batch.rows
            try:
                await self._deliver(publisher, taken)
            except asyncio.CancelledError:
                for batch in taken:
                    self._spill(batch, SHUTDOWN)
                raise
            except Exception:  # a bug in building events must not kill the drainer
                log.exception("building or sending %d inference events failed", rows)
                for batch in taken:
                    self._spill(batch, BROKER_ERROR)

    def _pop(self) -> ServedBatch:
        batch = self._queue.popleft()
        self._queued_rows -= batch.rows
        metrics.EVENT_QUEUE_ROWS.set(self._queued_rows)
        return batch

    def _spill(self, batch: ServedBatch, reason: str) -> None:
        self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + batch.rows
        try:
            self.overflow.spill(batch, reason)
        except Exception:  # the overflow must never fail a prediction
            log.exception("inference event overflow failed")

    async def _connected(self) -> Publisher | None:
        """The started publisher; None when stopping before the broker could be reached."""
        delay = self._reconnect_delay_s
        while self._publisher is None:
            if self._stopping:
                return None
            publisher = self._factory()
            try:
                if self._prepare is not None:
                    await self._prepare()
                await publisher.start()
                self._publisher = publisher
                log.info("inference events: connected to the broker")
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await publisher.stop()
                log.warning("inference events: broker unreachable (%r), retrying in %.1fs; %d queued",
                            exc, delay, self._queued_rows)
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), delay)
                delay = min(delay * 2, 5.0)
        return self._publisher

    async def _deliver(self, publisher: Publisher, batches: list[ServedBatch]) -> None:
        pending: list[tuple[ServedBatch, list[asyncio.Future[object]]]] = []
        for batch in batches:
            futures: list[asyncio.Future[object]] = []
            try:
                for event in inference_events(batch):
                    futures.append(await publisher.send(INFERENCE_EVENTS, event, key=event.prediction_id))  # type: ignore[arg-type]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("handing inference events to the producer failed: %r", exc)
                for future in futures:
                    future.cancel()
                self.stats.failed += batch.rows
                self._spill(batch, BROKER_ERROR)
                continue
            pending.append((batch, futures))
        for batch, futures in pending:
            results = await asyncio.gather(*futures, return_exceptions=True)
            failures = sum(1 for result in results if isinstance(result, BaseException))
            delivered = len(results) - failures
            self.stats.published += delivered
            metrics.EVENTS_PUBLISHED.inc(delivered)
            if failures:
                # At batch granularity: a disk spool re-sends the whole batch (consumers dedupe on
                # prediction_id), the dropping overflow counts every row of it.
                self.stats.failed += failures
                self._spill(batch, BROKER_ERROR)
