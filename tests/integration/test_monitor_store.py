"""The monitor's handlers on real PostgreSQL: windows, alerts, debounce and crash/replay safety.

No broker here: events go straight to ``MonitorHandlers.ingest`` and "publishing" appends to a list,
which lets the tests crash a batch at chosen points and compare with a clean run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import pytest

from gyre_common.db import migrate
from gyre_common.profile import build_reference_profile
from gyre_common.topics import MONITOR_ALERTS, TRAINING_REQUESTS
from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_monitor.domain.predictions import Prediction
from gyre_monitor.domain.windows import WindowPolicy
from gyre_monitor.handlers import MonitorConfig, MonitorHandlers
from gyre_monitor.store import OutboxMessage, PostgresStore, PostgresTransaction

pytestmark = pytest.mark.integration

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
COLOURS = np.array(["red", "green", "blue"])
WINDOW = 200
SEED = 8  # with this seed the unshifted windows show no dataset drift, the first shifted one x1+colour


def columns(rng: np.random.Generator, n: int, shift: float = 0.0, tilt: float = 0.0) -> dict[str, list[Any]]:
    p = [0.5 - tilt, 0.3, 0.2 + tilt]
    return {"x1": rng.normal(10 + shift, 2, n).tolist(), "x2": rng.gamma(2, 3, n).tolist(),
            "colour": COLOURS[rng.choice(3, n, p=p)].tolist(), "plan": rng.integers(0, 4, n).tolist()}


def scenario(model: str = "churn") -> tuple[dict[str, np.ndarray], list[Prediction]]:
    """Reference data and 1000 predictions: 2 unshifted windows, then 3 with x1 and colour shifted."""
    rng = np.random.default_rng(SEED)
    reference = {k: np.asarray(v) for k, v in columns(rng, 800).items()}
    parts = [columns(rng, WINDOW) for _ in range(2)] + [columns(rng, WINDOW, 3.0, 0.3) for _ in range(3)]
    predictions = []
    for part in parts:
        for i in range(WINDOW):
            n = len(predictions)
            predictions.append(Prediction(f"p{n}", model, 1, T0 + timedelta(seconds=n),
                                          {k: v[i] for k, v in part.items()}))
    return reference, predictions


class Outbox:
    """What the relay would publish: the outbox table's events in order (no relay runs here)."""

    def __init__(self) -> None:
        self.pool: asyncpg.Pool | None = None
        self.wakes = 0

    def __call__(self) -> None:  # the handlers' on_events: the relay would be woken
        self.wakes += 1

    async def sent(self) -> list[OutboxMessage]:
        assert self.pool is not None
        rows = await self.pool.fetch("SELECT topic, message_key, event_id, payload FROM outbox ORDER BY seq")
        return [OutboxMessage(r["topic"], r["message_key"], r["event_id"], bytes(r["payload"])) for r in rows]

    async def on(self, topic: str) -> list[OutboxMessage]:
        return [m for m in await self.sent() if m.topic == topic]


@asynccontextmanager
async def monitor_store(database_url: str, schema: str) -> AsyncIterator[PostgresStore]:
    await migrate(database_url, schema, "gyre_monitor.migrations")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4,
                                     server_settings={"search_path": f"{schema}, public"})
    try:
        yield PostgresStore(pool)
    finally:
        await pool.close()


def handlers(store: PostgresStore, outbox: Outbox, cooldown_s: float = 3600.0) -> MonitorHandlers:
    outbox.pool = store.pool
    return MonitorHandlers(store, MonitorConfig(window=WindowPolicy(WINDOW), cooldown_s=cooldown_s,
                                                keep_windows=100), on_events=outbox)


async def outcome(store: PostgresStore) -> dict[str, Any]:
    """Everything observable about a run (wall-clock fields left out)."""
    async with store.pool.acquire() as conn:
        windows = [tuple(r) for r in await conn.fetch(
            "SELECT model_version, window_seq, status, row_count, window_start, window_end, drift_share, "
            "dataset_drift, drifted_features, alert_id FROM windows ORDER BY window_seq")]
        features = [tuple(r) for r in await conn.fetch(
            "SELECT window_seq, feature, test_name, statistic, p_value, drifted FROM feature_drift "
            "ORDER BY window_seq, feature")]
        rows = await conn.fetchval("SELECT count(*) FROM window_rows")
        alerts = [tuple(r) for r in await conn.fetch(
            "SELECT alert_id, window_seq, training_request_id FROM alerts ORDER BY alert_id")]
    return {"windows": windows, "features": features, "rows": rows, "alerts": alerts}


async def test_drift_raises_one_alert_and_one_debounced_request(database_url: str) -> None:
    reference, predictions = scenario()
    async with monitor_store(database_url, "monitor") as store:
        outbox = Outbox()
        monitor = handlers(store, outbox)
        await monitor.set_reference_profile(
            build_reference_profile(reference, model_name="churn", model_version=1), source="test",
            feature_view="customers", label="churned")
        clean = await monitor.ingest(predictions[:400])
        assert clean.windows_closed == 2 and clean.alerts == [] and await outbox.sent() == []

        drifted = await monitor.ingest(predictions[400:])
        assert drifted.windows_closed == 3
        assert len(drifted.alerts) == 1 and len(drifted.training_requests) == 1
        assert outbox.wakes >= 1  # the relay is woken after the commit
        [alert_msg] = await outbox.on(MONITOR_ALERTS)
        [request_msg] = await outbox.on(TRAINING_REQUESTS)
        alert = events_pb2.MonitorAlert.FromString(alert_msg.payload)
        assert sorted(f.feature for f in alert.feature_drifts if f.drifted) == ["colour", "x1"]
        assert alert.dataset_drift and alert.drift_share == 0.5 and alert.kind == events_pb2.ALERT_KIND_DRIFT
        request = events_pb2.TrainingRequest.FromString(request_msg.payload)
        assert request.reason == events_pb2.TRAINING_REASON_DRIFT and request.model_name == "churn"
        assert request.evidence["alert_id"] == alert.alert_id == alert_msg.event_id
        assert request.evidence["drifted_features"] == "x1,colour"
        assert (request.feature_view, request.label, request.requested_by) == ("customers", "churned", "monitor")
        assert request.request_id == request_msg.event_id

        latest = await monitor.latest_drift("churn")
        assert latest.window_seq == 4 and latest.dataset_drift
        assert [r.window_seq for r in await monitor.list_windows("churn", None, None, 10, 0)] == [0, 1, 2, 3, 4]


async def test_windows_wait_for_a_late_profile(database_url: str) -> None:
    reference, predictions = scenario()
    async with monitor_store(database_url, "monitor") as store:
        outbox = Outbox()
        monitor = handlers(store, outbox)
        result = await monitor.ingest(predictions)
        assert result.windows_closed == 5 and result.alerts == []  # no profile yet: windows wait
        _, late = await monitor.set_reference_profile(
            build_reference_profile(reference, model_name="churn", model_version=1), source="test")
        assert len(late.alerts) == 1 and len(late.training_requests) == 1
        assert len(await outbox.on(MONITOR_ALERTS)) == 1 and len(await outbox.on(TRAINING_REQUESTS)) == 1


class CrashingStore(PostgresStore):
    """Fails the transaction of chosen batches just before commit (a crash mid-batch)."""

    def __init__(self, pool: asyncpg.Pool, crash_on: set[int]) -> None:
        super().__init__(pool)
        self.crash_on = crash_on
        self.transactions = 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        self.transactions += 1
        async with super().transaction() as tx:
            yield tx
            if self.transactions in self.crash_on:
                raise ConnectionError("crash before commit")


def batches(items: Sequence[Prediction], size: int) -> list[Sequence[Prediction]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


async def test_crashes_and_redelivery_neither_lose_nor_double_count(database_url: str) -> None:
    reference, predictions = scenario()
    profile = build_reference_profile(reference, model_name="churn", model_version=1)

    async with monitor_store(database_url, "clean") as store:
        clean_outbox = Outbox()
        monitor = handlers(store, clean_outbox)
        await monitor.set_reference_profile(profile, source="test")
        for batch in batches(predictions, 130):
            await monitor.ingest(batch)
        expected = await outcome(store)
        expected_events = [(m.topic, m.event_id) for m in await clean_outbox.sent()]

    async with monitor_store(database_url, "chaos") as plain:
        store = CrashingStore(plain.pool, crash_on={3, 6, 7})
        outbox = Outbox()
        monitor = handlers(store, outbox)
        await monitor.set_reference_profile(profile, source="test")  # transaction 1
        delivered = 0
        # Batches of another size, each retried until it commits (the bus redelivers what it did
        # not commit); after every commit the previous batch is redelivered too, as after a crash
        # between the database commit and the offset commit.
        for batch in batches(predictions, 90):
            while True:
                try:
                    await monitor.ingest(batch)
                    break
                except ConnectionError:
                    continue
            if delivered:
                replay = await monitor.ingest(predictions[delivered - 90:delivered])
                assert replay.accepted == 0 and replay.duplicates == 90
            delivered += len(batch)
        assert await outcome(plain) == expected
        # Same events for the wire, with the same ids.
        assert [(m.topic, m.event_id) for m in await outbox.sent()] == expected_events

    assert expected["rows"] == 1000 and len(expected["windows"]) == 5 and len(expected["alerts"]) == 1
    assert len(expected_events) == 2


async def test_shadow_and_duplicate_predictions_are_not_counted(database_url: str) -> None:
    _, predictions = scenario()
    async with monitor_store(database_url, "monitor") as store:
        monitor = handlers(store, Outbox())
        shadow = [Prediction(p.prediction_id + "s", p.model_name, 1, p.served_at, p.inputs, shadow=True)
                  for p in predictions[:50]]
        result = await monitor.ingest([*predictions[:50], *predictions[:10], *shadow])
        assert (result.accepted, result.duplicates, result.shadow) == (50, 10, 50)


async def test_retraining_cooldown_spans_drift_episodes(database_url: str) -> None:
    reference, predictions = scenario()
    shifted = predictions[400:600]
    async with monitor_store(database_url, "monitor") as store:
        outbox = Outbox()
        monitor = handlers(store, outbox, cooldown_s=3600)
        await monitor.set_reference_profile(
            build_reference_profile(reference, model_name="churn", model_version=1), source="test")
        # drifted, clean, drifted again within the hour: two alerts (two episodes), one request.
        timeline = [*shifted, *predictions[:200], *shifted]
        await monitor.ingest([Prediction(f"q{i}", "churn", 1, T0 + timedelta(seconds=i), p.inputs)
                              for i, p in enumerate(timeline)])
        assert len(await outbox.on(MONITOR_ALERTS)) == 2 and len(await outbox.on(TRAINING_REQUESTS)) == 1
        # Two hours later the drift goes on: a reminder alert and a new request.
        later = T0 + timedelta(hours=2)
        await monitor.ingest([Prediction(f"r{i}", "churn", 1, later + timedelta(seconds=i), p.inputs)
                              for i, p in enumerate(shifted)])
        assert len(await outbox.on(MONITOR_ALERTS)) == 3 and len(await outbox.on(TRAINING_REQUESTS)) == 2
