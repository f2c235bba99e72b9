"""The inference-event emitter never blocks a prediction: bounded queue, drops counted, broker retried."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from gyre_common.topics import INFERENCE_EVENTS
from gyre_serving.domain.events import ServedBatch, prediction_ids
from gyre_serving.emitter import DroppingOverflow, EventOverflow, InferenceEmitter, SpoolingOverflow
from gyre_serving.settings import ServingSettings
from gyre_serving.spool import DiskSpool


def batch(request_id: str, rows: int = 1) -> ServedBatch:
    return ServedBatch("m", 1, "production", request_id, prediction_ids(request_id, rows), ("a",),
                       (np.arange(rows, dtype=float),), (("predict", np.zeros(rows, dtype=int)),),
                       datetime.now(UTC), 1.0)


class FakePublisher:
    """Records what is sent; fails starts and deliveries on demand."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def start(self) -> None:
        self.world.starts += 1
        if self.world.unreachable:
            raise KafkaConnectionError("no broker")

    async def stop(self) -> None:
        self.world.stops += 1

    async def send_batch(self, topic: str, records: list[tuple[str, Any, str | None]]) -> asyncio.Future[int]:
        assert topic == INFERENCE_EVENTS
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        for key, message, event_id in records:
            assert key == message.prediction_id
            self.world.ce_ids.append(event_id)
        if self.world.failing:
            future.set_exception(KafkaTimeoutError())
        else:
            self.world.sent.extend(message.prediction_id for _, message, _ in records)
            future.set_result(len(records))
        return future


class World:
    def __init__(self) -> None:
        self.unreachable = False
        self.failing = False
        self.starts = 0
        self.stops = 0
        self.sent: list[str] = []
        self.ce_ids: list[str | None] = []


def emitter(world: World, capacity: int = 100, overflow: EventOverflow | None = None) -> InferenceEmitter:
    return InferenceEmitter(lambda: FakePublisher(world), capacity_rows=capacity, batch_rows=10,  # type: ignore[arg-type, return-value]
                            overflow=overflow, reconnect_delay_s=0.01)


async def wait_until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_events_are_published_one_per_row_keyed_by_prediction_id() -> None:
    world = World()
    emit = emitter(world)
    await emit.start()
    assert emit.emit(batch("a")) and emit.emit(batch("b", rows=3))
    await wait_until(lambda: len(world.sent) == 4)
    assert world.sent == ["a", "b:0", "b:1", "b:2"]
    await emit.stop()
    assert emit.stats.published == 4 and world.stops == 1


async def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    world = World()
    world.unreachable = True
    overflow = DroppingOverflow()
    emit = emitter(world, capacity=5, overflow=overflow)
    await emit.start()
    started = time.perf_counter()
    accepted = [emit.emit(batch(f"r{i}", rows=2)) for i in range(4)]
    assert time.perf_counter() - started < 0.05
    assert accepted == [True, True, False, False]
    assert overflow.dropped == {"queue_full": 4} and emit.queued_rows == 4
    # The broker comes back: what was queued is delivered.
    await wait_until(lambda: world.starts >= 2)
    world.unreachable = False
    await wait_until(lambda: len(world.sent) == 4)
    await emit.stop()


async def test_delivery_failures_are_counted_and_the_drainer_goes_on() -> None:
    world = World()
    world.failing = True
    emit = emitter(world)
    await emit.start()
    emit.emit(batch("x", rows=2))
    await wait_until(lambda: emit.stats.dropped.get("broker_error") == 2)
    world.failing = False
    emit.emit(batch("y"))
    await wait_until(lambda: world.sent == ["y"])
    await emit.stop()
    assert emit.stats.failed == 2 and emit.stats.published == 1


async def test_stop_without_a_broker_counts_what_was_left() -> None:
    world = World()
    world.unreachable = True
    emit = emitter(world)
    await emit.start()
    emit.emit(batch("z", rows=3))
    await asyncio.wait_for(emit.stop(), 2)
    assert emit.stats.dropped == {"shutdown": 3}
    assert not emit.emit(batch("late"))


async def test_the_spool_keeps_undelivered_events_and_drains_them_in_order_with_stable_ids(tmp_path: Path) -> None:
    world = World()
    world.failing = True
    overflow = SpoolingOverflow(DiskSpool(tmp_path))
    emit = emitter(world, overflow=overflow)
    await emit.start()
    first = replace(batch("s", rows=2), event_id="e1")
    emit.emit(first)
    await wait_until(lambda: overflow.backlog == 2)
    # While the spool holds events, new ones go behind them (never ahead).
    assert not emit.emit(replace(batch("t"), event_id="e2"))
    assert emit.stats.dropped == {"broker_error": 2, "backlog": 1}
    failed_ids = list(world.ce_ids)
    world.failing = False
    await wait_until(lambda: world.sent[-3:] == ["s:0", "s:1", "t"])
    assert overflow.backlog == 0 and emit.stats.drained == 3
    # A re-sent event keeps its CloudEvents id, so consumers can dedupe.
    assert failed_ids == ["e1.0", "e1.1"] and world.ce_ids[-3:] == ["e1.0", "e1.1", "e2.0"]
    assert emit.emit(batch("u"))  # the spool is empty: back to the in-memory queue
    await wait_until(lambda: world.sent[-1] == "u")
    await emit.stop()


async def test_events_left_at_shutdown_stay_in_the_spool_for_the_next_start(tmp_path: Path) -> None:
    world = World()
    world.unreachable = True
    emit = emitter(world, overflow=SpoolingOverflow(DiskSpool(tmp_path)))
    await emit.start()
    emit.emit(batch("z", rows=3))
    await asyncio.wait_for(emit.stop(), 2)
    world.unreachable = False
    again = emitter(world, overflow=SpoolingOverflow(DiskSpool(tmp_path)))
    await again.start()
    await wait_until(lambda: world.sent == ["z:0", "z:1", "z:2"])
    await again.stop()


def test_settings_read_comma_separated_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GYRE_SERVING_MODELS", "churn, fraud")
    monkeypatch.setenv("GYRE_SERVING_TRUSTED_TYPES", "sklearn.tree._tree.Tree")
    settings = ServingSettings()
    assert settings.models == ("churn", "fraud") and settings.trusted_types == ("sklearn.tree._tree.Tree",)
    assert (settings.http_port, settings.grpc_port, settings.alias) == (8080, 8081, "production")
