"""Inference events to ``inference.events`` without ever blocking or failing a prediction.

The request path calls :meth:`InferenceEmitter.emit`, which only appends the answered request to a
bounded in-memory queue (capacity counted in predictions). A background task drains the queue:
it builds one ``InferenceEvent`` per row and hands them to the bus :class:`Publisher` (key =
prediction id), waiting for acknowledgements a batch at a time.

What cannot be queued (queue full) or delivered (broker down or refusing) goes to an
:class:`EventOverflow`. The service uses :class:`SpoolingOverflow`: the events are appended to a
local :class:`~gyre_serving.spool.DiskSpool` and the drainer re-sends them, oldest first, once the
broker answers again, moving the spool's cursor only after the broker acknowledged them
(at-least-once; every event keeps its ``ce_id`` so consumers dedupe). While the spool holds
anything, new events are appended behind it rather than queued, so they are sent in the order
they were answered. :class:`DroppingOverflow` (no spool, or the spool full or failing) counts the
events in ``gyre_serving_inference_events_dropped{reason}`` and logs at most every few seconds.

The drainer is supervised: if it fails unexpectedly (a bug, a disk error while reading the spool)
the failure is logged with its traceback, counted in
``gyre_serving_inference_event_drainer_restarts``, and the drainer starts again after a back-off
(doubling from ``reconnect_delay_s`` to 5 s). Requests never notice: they only append to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gyre_common.bus import Publisher
from gyre_common.retry import backoff_s
from gyre_common.topics import INFERENCE_EVENTS
from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_serving import metrics
from gyre_serving.convert import inference_events
from gyre_serving.domain.events import ServedBatch
from gyre_serving.spool import DiskSpool, SpoolChunk, SpoolFullError

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0
"""Longest wait between attempts at the broker (and between drainer restarts), in seconds."""

BUILD_SLICE_ROWS = 32
"""Events built and handed to the producer between two yields to the event loop."""

QUEUE_FULL = "queue_full"
BROKER_ERROR = "broker_error"
SHUTDOWN = "shutdown"
BACKLOG = "backlog"
SPOOL_FULL = "spool_full"
DISK_FULL = "disk_full"
SPOOL_ERROR = "spool_error"


class EventOverflow(ABC):
    """Takes answered requests whose events the emitter could not queue or deliver."""

    @abstractmethod
    def spill(self, batch: ServedBatch, reason: str) -> None:
        """Take ``batch`` (all its rows); ``reason`` is ``queue_full``, ``broker_error`` or ``shutdown``.
        Must not block: it runs on the request path when the queue is full."""

    @property
    def backlog(self) -> int:
        """Events kept and waiting to be re-sent (0 for an overflow that keeps nothing)."""
        return 0

    def read(self, max_events: int) -> SpoolChunk:
        """The oldest kept events (up to ``max_events``), not yet forgotten: see :meth:`commit`."""
        return SpoolChunk([], (0, 0))

    def commit(self, chunk: SpoolChunk) -> None:
        """The broker acknowledged every event of ``chunk``: forget them."""
        return None

    def close(self) -> None:
        """Release files (at shutdown)."""
        return None


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


class SpoolingOverflow(EventOverflow):
    """Keeps events in a :class:`DiskSpool` until the broker takes them.

    Spilling builds the batch's events and appends them in one write. When the spool is full
    (``spool_max_bytes``), the disk is full (ENOSPC) or the disk fails otherwise, the events go to
    ``fallback`` (dropped and counted as ``spool_full`` / ``disk_full`` / ``spool_error``): a
    prediction never fails or waits because of the spool.
    """

    def __init__(self, spool: DiskSpool, fallback: DroppingOverflow | None = None) -> None:
        self.spool = spool
        self.fallback = fallback or DroppingOverflow()
        metrics.EVENT_SPOOL_EVENTS.set(spool.pending)

    def spill(self, batch: ServedBatch, reason: str) -> None:
        try:
            self.spool.append((batch.ce_id(row) or "", event.SerializeToString())
                              for row, event in enumerate(inference_events(batch)))
        except SpoolFullError:
            self.fallback.spill(batch, SPOOL_FULL)
            return
        except OSError as exc:
            metrics.EVENT_SPOOL_ERRORS.labels("write").inc()
            disk_full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            if not disk_full:
                log.exception("writing inference events to the spool failed")
            self.fallback.spill(batch, DISK_FULL if disk_full else SPOOL_ERROR)
            return
        metrics.EVENTS_SPOOLED.labels(reason).inc(batch.rows)
        metrics.EVENT_SPOOL_EVENTS.set(self.spool.pending)

    @property
    def backlog(self) -> int:
        return self.spool.pending

    def read(self, max_events: int) -> SpoolChunk:
        return self.spool.read(max_events)

    def commit(self, chunk: SpoolChunk) -> None:
        self.spool.commit(chunk)
        metrics.EVENTS_DRAINED.inc(len(chunk.events))
        metrics.EVENT_SPOOL_EVENTS.set(self.spool.pending)

    def close(self) -> None:
        self.spool.close()


@dataclass
class EmitterStats:
    """Counts since start, in events (rows)."""

    queued: int = 0
    published: int = 0
    failed: int = 0
    drained: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    """Events handed to the overflow, by reason (spooled or dropped, as the overflow decides)."""
    restarts: int = 0
    """Times the drainer failed unexpectedly and was restarted."""


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
        self._stop_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._publisher: Publisher | None = None

    @property
    def queued_rows(self) -> int:
        """Events waiting in memory."""
        return self._queued_rows

    def emit(self, batch: ServedBatch) -> bool:
        """Queue the events of an answered request; never blocks, never raises.

        Returns False when the batch went to the overflow instead: the emitter is stopping
        (``shutdown``), the overflow holds older events (``backlog``: keeps them in order) or the
        queue had no room (``queue_full``).
        """
        if self._stopping or self._queued_rows + batch.rows > self.capacity_rows or self.overflow.backlog:
            self._spill(batch, SHUTDOWN if self._stopping else BACKLOG if self.overflow.backlog else QUEUE_FULL)
            self._wakeup.set()
            return False
        self._queue.append(batch)
        self._queued_rows += batch.rows
        self.stats.queued += batch.rows
        metrics.EVENT_QUEUE_ROWS.set(self._queued_rows)
        self._wakeup.set()
        return True

    async def start(self) -> None:
        """Start the background drainer (it connects to the broker on its own, retrying)."""
        self._task = asyncio.create_task(self._supervised(), name="gyre-serving-inference-events")

    async def stop(self) -> None:
        """Deliver what is queued (bounded by the caller's deadline), then disconnect.

        Whatever is still queued when the drainer ends or is cancelled is counted as ``shutdown``.
        """
        self._stopping = True
        self._stop_event.set()
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
                await self._drop_publisher()
            self.overflow.close()

    # -- the drainer ---------------------------------------------------------------------------

    async def _supervised(self) -> None:
        """Run the drainer; restart it after an unexpected failure (see the module docstring)."""
        restarts = 0
        while True:
            try:
                await self._run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                restarts += 1
                self.stats.restarts += 1
                metrics.EVENT_DRAINER_RESTARTS.inc()
                if self._stopping:  # stop() spills what is still queued
                    log.exception("the inference event drainer failed while stopping")
                    return
                log.exception("the inference event drainer failed; restarting it (restart %d)", restarts)
                await self._drop_publisher()
                await self._backoff(restarts)

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._queue and self.overflow.backlog and not self._stopping:
                # The spool holds the oldest events: send them first (when stopping they stay on
                # disk for the next start).
                delivered = await self._drain_overflow()
                failures = 0 if delivered else failures + 1
                if not delivered:
                    await self._backoff(failures)
                continue
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
                delivered = await self._deliver(publisher, taken)
            except asyncio.CancelledError:
                for batch in taken:
                    self._spill(batch, SHUTDOWN)
                raise
            except Exception:  # a bug in building events must not kill the drainer
                log.exception("building or sending %d inference events failed", rows)
                for batch in taken:
                    self._spill(batch, BROKER_ERROR)
                delivered = False
            if not delivered:
                # The broker is away: what is queued follows the failed batch to the overflow, in
                # order, and new events queue up behind them there until it is drained.
                while self._queue:
                    self._spill(self._pop(), BROKER_ERROR)
                await self._drop_publisher()
                failures += 1
                await self._backoff(failures)
            else:
                failures = 0

    async def _drain_overflow(self) -> bool:
        """Send one chunk of the overflow's oldest events; True when the broker acknowledged all of it."""
        publisher = await self._connected()
        if publisher is None:
            return False
        try:
            chunk = self.overflow.read(self.batch_rows)
        except OSError as exc:
            metrics.EVENT_SPOOL_ERRORS.labels("read").inc()
            log.error("reading spooled inference events failed, retrying: %s", exc)
            return False
        if not chunk.events:
            self.overflow.commit(chunk)  # may move past records the spool set aside
            return True
        records = []
        for spooled in chunk.events:
            try:
                event = events_pb2.InferenceEvent.FromString(spooled.payload)
            except Exception as exc:  # sound on disk but not an event: re-sending it would never succeed
                metrics.EVENT_SPOOL_QUARANTINED.labels("undecodable").inc()
                log.error("skipping spooled inference event %s: not an InferenceEvent (%s)", spooled.ce_id, exc)
                continue
            records.append((event.prediction_id, event, spooled.ce_id or None))
        try:
            if records:
                await (await publisher.send_batch(INFERENCE_EVENTS, records))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("re-sending spooled inference events failed: %r", exc)
            await self._drop_publisher()
            return False
        self.overflow.commit(chunk)
        self.stats.drained += len(chunk.events)
        self.stats.published += len(chunk.events)
        metrics.EVENTS_PUBLISHED.inc(len(chunk.events))
        if not self.overflow.backlog:
            log.info("inference events: the spool is drained")
        return True

    async def _backoff(self, failures: int) -> None:
        """Wait before trying the broker again (woken early by stop)."""
        delay = backoff_s(failures, first_s=self._reconnect_delay_s, max_s=MAX_BACKOFF_S)
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), delay)

    async def _drop_publisher(self) -> None:
        """Forget the producer after a failure; the next attempt connects afresh (and re-creates the
        topic, which a broker that lost its state needs)."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(publisher.stop(), 2.0)

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
        attempts = 0
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
                attempts += 1
                delay = backoff_s(attempts, first_s=self._reconnect_delay_s, max_s=MAX_BACKOFF_S)
                log.warning("inference events: broker unreachable (%r), retrying in %.1fs; %d queued",
                            exc, delay, self._queued_rows)
                # Not woken by new events (they arrive at request rate): only stop cuts the wait short.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), delay)
        return self._publisher

    async def _deliver(self, publisher: Publisher, batches: list[ServedBatch]) -> bool:
        """Send ``batches`` as one chunk; False when the broker did not take all of it (then every
        batch of the chunk went to the overflow: a spool re-sends them whole, consumers dedupe on
        ``ce_id`` and prediction id)."""
        rows = sum(batch.rows for batch in batches)
        try:
            deliveries = []
            records: list[tuple[str, events_pb2.InferenceEvent, str | None]] = []
            for batch in batches:
                records.extend((event.prediction_id, event, batch.ce_id(row))
                               for row, event in enumerate(inference_events(batch)))
                if len(records) >= BUILD_SLICE_ROWS:
                    deliveries.append(await publisher.send_batch(INFERENCE_EVENTS, records))
                    records = []
                    # Building events holds the event loop: let waiting requests run between
                    # slices (500 events at once showed as a doubled p99 on REST at c8).
                    await asyncio.sleep(0)
            if records:
                deliveries.append(await publisher.send_batch(INFERENCE_EVENTS, records))
            await asyncio.gather(*deliveries)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("sending %d inference events failed: %r", rows, exc)
            self.stats.failed += rows
            for batch in batches:
                self._spill(batch, BROKER_ERROR)
            return False
        self.stats.published += rows
        metrics.EVENTS_PUBLISHED.inc(rows)
        return True
