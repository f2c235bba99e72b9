"""Text drift through the monitor's handlers on real PostgreSQL: windows of served texts are tested
(embedding + descriptors), the alert and the retraining request name the text feature and its
drifted checks, and the per-check results and skipped checks are stored and read back.

The embedder is a deterministic stand-in (character statistics), so the test needs no torch; the
real encoder and the agreement with Evidently are tested in tests/unit/monitor/test_monitor_text_drift.py.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np
import pytest

from gyre_common.db import migrate
from gyre_common.profile import build_reference_profile
from gyre_common.topics import MONITOR_ALERTS, TRAINING_REQUESTS
from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_monitor.convert import window_report
from gyre_monitor.domain.drift import DIGESTS_ONLY
from gyre_monitor.domain.predictions import Prediction
from gyre_monitor.domain.windows import WindowPolicy
from gyre_monitor.handlers import MonitorConfig, MonitorHandlers
from gyre_monitor.store import PostgresStore

pytestmark = pytest.mark.integration

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
WINDOW = 150


@asynccontextmanager
async def monitor_store(database_url: str, schema: str) -> AsyncIterator[PostgresStore]:
    await migrate(database_url, schema, "gyre_monitor.migrations")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4,
                                     server_settings={"search_path": f"{schema}, public"})
    try:
        yield PostgresStore(pool)
    finally:
        await pool.close()


async def published(pool: asyncpg.Pool, topic: str) -> list[bytes]:
    """Payloads the outbox holds for ``topic``, in order (no relay runs here)."""
    rows = await pool.fetch("SELECT payload FROM outbox WHERE topic = $1 ORDER BY seq", topic)
    return [bytes(r["payload"]) for r in rows]


def reviews(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    products, verdicts = ["lamp", "kettle", "jacket", "parcel"], ["arrived late", "works", "broke"]
    return [f"The {rnd.choice(products)} of order {rnd.randint(1, 10 ** rnd.randint(1, 6))} {rnd.choice(verdicts)}."
            for _ in range(n)]


def weather(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return [f"Das Wetter in {rnd.choice(['Köln', 'Bremen'])} ist heute {rnd.choice(['sonnig', 'windig'])} "
            f"bei {rnd.randint(-5, 30)} Grad." for _ in range(n)]


def embed_texts(texts: list[str]) -> np.ndarray:
    return np.asarray([[len(t) / 50, t.count("e") / 5, t.count(" ") / 8, sum(c in "äöüß" for c in t)]
                       for t in texts], dtype=np.float32)


def predictions(values: list[object], start: int) -> list[Prediction]:
    return [Prediction(f"p{start + i}", "shop", 1, T0 + timedelta(seconds=start + i),
                       {"review": v, "stars": 4.0 + (i % 3)}) for i, v in enumerate(values)]


def hashed(text: str) -> str:
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}:{len(text)}"


async def test_text_drift_alert_names_the_feature_and_its_checks(database_url: str) -> None:
    profile = build_reference_profile({"review": reviews(600, 1), "stars": [4.0 + (i % 3) for i in range(600)]},
                                      model_name="shop", model_version=1, text=["review"], embed=embed_texts)
    async with monitor_store(database_url, "monitor_text") as store:
        monitor = MonitorHandlers(store, MonitorConfig(window=WindowPolicy(WINDOW), keep_windows=100),
                                  embedder=lambda _encoder, texts: embed_texts(list(texts)))
        await monitor.set_reference_profile(profile, source="test")

        same = await monitor.ingest(predictions(list(reviews(WINDOW, 2)), 0))
        assert same.windows_closed == 1 and same.alerts == []
        first = await monitor.latest_drift("shop", 1)
        assert {(f.feature, f.descriptor) for f in first.features} >= {
            ("review", "embedding"), ("review", "length"), ("review", "oov_share"), ("review", "empty"), ("stars", "")}

        drifted = await monitor.ingest(predictions(list(weather(WINDOW, 3)), WINDOW))
        assert drifted.windows_closed == 1 and len(drifted.alerts) == 1 and len(drifted.training_requests) == 1
        alert = events_pb2.MonitorAlert.FromString((await published(store.pool, MONITOR_ALERTS))[0])
        checks = {f.descriptor for f in alert.feature_drifts if f.feature == "review" and f.drifted}
        assert {"embedding", "length"} <= checks
        request = events_pb2.TrainingRequest.FromString((await published(store.pool, TRAINING_REQUESTS))[0])
        assert request.evidence["drifted_features"].split(",")[0] == "review"
        assert "review:embedding" in request.evidence["drifted_checks"].split(",")
        stored = window_report(await monitor.latest_drift("shop", 1))
        assert [(f.feature, f.descriptor, f.test_name) for f in stored.feature_drifts
                if f.descriptor == "embedding"] == [("review", "embedding", "model")]

        # Serving in hash mode: only length and empty can be tested; the rest is reported as skipped.
        await monitor.ingest(predictions([hashed(t) for t in reviews(WINDOW, 4)], 2 * WINDOW))
        record = await monitor.latest_drift("shop", 1)
        assert record.window_seq == 2
        assert {f.descriptor for f in record.features if f.feature == "review"} == {"length", "empty"}
        report = window_report(record)
        assert {(s.feature, s.descriptor, s.reason) for s in report.skipped} == {
            ("review", "embedding", DIGESTS_ONLY), ("review", "oov_share", DIGESTS_ONLY)}
