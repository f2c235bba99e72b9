"""claim_event against a real PostgreSQL: first claim wins, repeats and rollbacks behave."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gyre_common.bus import PROCESSED_EVENTS_DDL, claim_event, processed_events_ddl, prune_processed_events

pytestmark = pytest.mark.integration


async def test_claim_event_is_true_once_per_consumer_and_event(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE SCHEMA monitor")
        await conn.execute(processed_events_ddl("monitor"))
        await conn.execute(processed_events_ddl("monitor"))  # migrations may run twice: idempotent DDL
        async with conn.transaction():
            assert await claim_event(conn, "monitor", "ev-1", schema="monitor") is True
        async with conn.transaction():
            assert await claim_event(conn, "monitor", "ev-1", schema="monitor") is False
        assert await claim_event(conn, "feedback", "ev-1", schema="monitor") is True  # another consumer

        # A handler that fails rolls its claim back, so the redelivered event is processed again.
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                assert await claim_event(conn, "monitor", "ev-2", schema="monitor") is True
                raise RuntimeError("handler failed")
        async with conn.transaction():
            assert await claim_event(conn, "monitor", "ev-2", schema="monitor") is True

        rows = await conn.fetch("SELECT consumer, event_id, processed_at FROM monitor.processed_events")
        assert {(r["consumer"], r["event_id"]) for r in rows} == {
            ("monitor", "ev-1"), ("feedback", "ev-1"), ("monitor", "ev-2")
        }
        assert all(r["processed_at"].tzinfo is not None for r in rows)
        assert await prune_processed_events(conn, datetime.now(UTC) - timedelta(hours=1), schema="monitor") == 0
        assert await prune_processed_events(conn, datetime.now(UTC) + timedelta(seconds=1), schema="monitor") == 3
    finally:
        await conn.close()


async def test_unqualified_ddl_follows_the_search_path(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE SCHEMA trainer; SET search_path TO trainer")
        await conn.execute(PROCESSED_EVENTS_DDL)
        assert await claim_event(conn, "trainer", "req-1") is True
        assert await claim_event(conn, "trainer", "req-1") is False
        assert await conn.fetchval("SELECT count(*) FROM trainer.processed_events") == 1
    finally:
        await conn.close()


def test_schema_names_are_checked() -> None:
    with pytest.raises(ValueError, match="identifier"):
        processed_events_ddl('x"; DROP TABLE y; --')
