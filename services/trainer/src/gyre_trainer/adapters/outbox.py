"""Relays the outbox of training.events to Kafka (at-least-once, in outbox order)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC

from aiokafka.errors import KafkaError

from gyre_common.bus.publisher import Publisher
from gyre_common.topics import TRAINING_EVENTS
from gyre_trainer.store import JobStore

log = logging.getLogger(__name__)


class OutboxRelay:
    """Background task: publish outboxed events, then delete them.

    Started and stopped by the service runner (``start``/``stop``). ``wake()`` makes it look at
    once; otherwise it looks every ``poll_interval_s`` seconds. While the broker is away it backs
    off (doubling up to ``max_backoff_s``) and keeps the events; at stop it makes one last pass.
    """

    def __init__(self, store: JobStore, publisher: Publisher, *, poll_interval_s: float = 0.5,
                 batch_size: int = 200, max_backoff_s: float = 5.0) -> None:
        self.store = store
        self.publisher = publisher
        self.poll_interval_s = poll_interval_s
        self.batch_size = batch_size
        self.max_backoff_s = max_backoff_s
        self.published = 0
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Look at the outbox now."""
        self._wake.set()

    async def start(self) -> None:
        """Start the producer and the relay loop."""
        await self.publisher.start()
        self._task = asyncio.create_task(self._run(), name="trainer-outbox-relay")

    async def stop(self) -> None:
        """Stop the loop after a last pass, then flush and close the producer."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.publisher.stop()

    async def relay_once(self) -> int:
        """Publish one batch of pending events; how many were published."""
        pending = await self.store.pending_events(self.batch_size)
        if not pending:
            return 0
        deliveries = []
        for item in pending:
            occurred = item.message.occurred_at.ToDatetime(UTC) if item.message.HasField("occurred_at") else None
            deliveries.append(await self.publisher.send(TRAINING_EVENTS, item.message, key=item.key,
                                                        event_id=item.event_id, time=occurred))
        await asyncio.gather(*deliveries)
        await self.store.delete_events([item.seq for item in pending])
        self.published += len(pending)
        return len(pending)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                while await self.relay_once() == self.batch_size:
                    pass
                failures = 0
            except (KafkaError, OSError) as exc:
                failures += 1
                delay = min(0.1 * 2 ** min(failures, 10), self.max_backoff_s)
                log.warning("publishing training events failed (%r); retrying in %.1fs", exc, delay)
                if self._stopping.is_set():
                    return
                await asyncio.sleep(delay)
                continue
            except Exception:
                log.exception("outbox relay pass failed")
            if self._stopping.is_set():
                return
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
