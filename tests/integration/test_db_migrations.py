"""Migrations against a real PostgreSQL: apply, rerun, changed file refused, concurrent starters."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from gyre_common.db import MigrationError, migrate

pytestmark = pytest.mark.integration

FIRST = "CREATE TABLE runs (id bigserial PRIMARY KEY, name text NOT NULL);"
SECOND = "ALTER TABLE runs ADD COLUMN started_at timestamptz; INSERT INTO runs (name) VALUES ('seed');"


@pytest.fixture
def migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """An importable package of migration files, unique per test: (package name, its folder)."""
    name = f"gyre_test_migrations_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "0001_create_runs.sql").write_text(FIRST)
    (folder / "0002_add_started_at.sql").write_text(SECOND)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, folder
    sys.modules.pop(name, None)


async def test_applies_in_order_records_and_reruns_as_noop(database_url: str,
                                                          migrations: tuple[str, Path]) -> None:
    package, _ = migrations
    both = ["0001_create_runs.sql", "0002_add_started_at.sql"]
    assert await migrate(database_url, "tracking", package) == both
    assert await migrate(database_url, "tracking", package) == []

    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT version, name, checksum, applied_at "
                                      "FROM tracking.schema_migrations ORDER BY version")
        assert [(r["version"], r["name"]) for r in rows] == [(1, both[0]), (2, both[1])]
        assert all(len(r["checksum"]) == 64 and r["applied_at"].tzinfo is not None for r in rows)
        # The tables went into the schema, not public, and the seed ran once.
        assert await connection.fetchval("SELECT count(*) FROM tracking.runs") == 1
        assert await connection.fetchval("SELECT to_regclass('public.runs')") is None
    finally:
        await connection.close()


async def test_new_file_is_applied_on_next_start(database_url: str, migrations: tuple[str, Path]) -> None:
    package, folder = migrations
    await migrate(database_url, "tracking", package)
    (folder / "0003_add_tags.sql").write_text("CREATE TABLE tags (run_id bigint REFERENCES runs (id));")
    assert await migrate(database_url, "tracking", package) == ["0003_add_tags.sql"]


async def test_changed_applied_file_is_refused_by_name(database_url: str,
                                                       migrations: tuple[str, Path]) -> None:
    package, folder = migrations
    await migrate(database_url, "tracking", package)
    (folder / "0001_create_runs.sql").write_text(FIRST + "\n-- edited after release\n")
    (folder / "0003_never.sql").write_text("CREATE TABLE never (id int);")
    with pytest.raises(MigrationError, match=r"0001_create_runs\.sql changed after it was applied"):
        await migrate(database_url, "tracking", package)
    connection = await asyncpg.connect(database_url)
    try:  # nothing after the refusal ran
        assert await connection.fetchval("SELECT to_regclass('tracking.never')") is None
    finally:
        await connection.close()


async def test_failing_file_rolls_back_alone(database_url: str, migrations: tuple[str, Path]) -> None:
    package, folder = migrations
    (folder / "0003_broken.sql").write_text("CREATE TABLE half (id int); SELECT no_such_function();")
    with pytest.raises(MigrationError, match=r"0003_broken\.sql failed"):
        await migrate(database_url, "tracking", package)
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT max(version) FROM tracking.schema_migrations") == 2
        assert await connection.fetchval("SELECT to_regclass('tracking.half')") is None
    finally:
        await connection.close()


async def test_misnamed_file_is_refused(database_url: str, migrations: tuple[str, Path]) -> None:
    package, folder = migrations
    (folder / "3_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"3_oops\.sql is not named NNNN_description\.sql"):
        await migrate(database_url, "tracking", package)


async def test_concurrent_starters_apply_each_file_once(database_url: str,
                                                        migrations: tuple[str, Path]) -> None:
    package, folder = migrations
    # Slow enough that without the lock both starters would be inside the first file together.
    (folder / "0001_create_runs.sql").write_text("SELECT pg_sleep(0.3); " + FIRST)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        results = await asyncio.gather(migrate(pool, "tracking", package),
                                       migrate(database_url, "tracking", package),
                                       migrate(pool, "tracking", package))
        applied = sorted(name for result in results for name in result)
        assert applied == ["0001_create_runs.sql", "0002_add_started_at.sql"]
        assert await pool.fetchval("SELECT count(*) FROM tracking.runs") == 1
    finally:
        await pool.close()


OUTBOX_SET = "gyre_common.outbox_migrations"


async def test_shared_set_runs_after_the_own_files_under_its_namespace(database_url: str,
                                                                       migrations: tuple[str, Path]) -> None:
    package, _ = migrations
    applied = await migrate(database_url, "tracking", package, shared=[OUTBOX_SET])
    assert applied == ["0001_create_runs.sql", "0002_add_started_at.sql", f"{OUTBOX_SET}/0001_outbox.sql"]
    assert await migrate(database_url, "tracking", package, shared=[OUTBOX_SET]) == []
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT namespace, version FROM tracking.schema_migrations "
                                      "ORDER BY namespace, version")
        assert [(r["namespace"], r["version"]) for r in rows] == [("", 1), ("", 2), (OUTBOX_SET, 1)]
        assert await connection.fetchval("SELECT to_regclass('tracking.outbox')") is not None
    finally:
        await connection.close()


async def test_shared_outbox_set_upgrades_a_schema_made_before_namespaces(database_url: str,
                                                                          migrations: tuple[str, Path]) -> None:
    """A schema migrated by the old runner (primary key on version alone) whose service created the
    outbox itself, without the poison-row columns: the shared set keeps its rows and adds the columns."""
    package, _ = migrations
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "CREATE SCHEMA tracking;"
            "CREATE TABLE tracking.schema_migrations (version int PRIMARY KEY, name text NOT NULL,"
            " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());"
            "CREATE TABLE tracking.outbox (seq bigserial PRIMARY KEY, event_id text NOT NULL UNIQUE,"
            " topic text NOT NULL, event_type text NOT NULL, message_key text, payload bytea NOT NULL,"
            " occurred_at timestamptz NOT NULL, published_at timestamptz);"
            "INSERT INTO tracking.outbox (event_id, topic, event_type, payload, occurred_at)"
            " VALUES ('kept', 'registry.events', 'gyre.events.v1.RegistryEvent', '', now())")
        assert await migrate(database_url, "tracking", package) == ["0001_create_runs.sql", "0002_add_started_at.sql"]
        assert await migrate(database_url, "tracking", package, shared=[OUTBOX_SET]) == [
            f"{OUTBOX_SET}/0001_outbox.sql"]
        assert await connection.fetchval("SELECT event_id FROM tracking.outbox") == "kept"
        await connection.execute("UPDATE tracking.outbox SET failed_at = now(), error = 'x'")
        assert await connection.fetchval("SELECT count(*) FROM tracking.schema_migrations") == 3
    finally:
        await connection.close()
