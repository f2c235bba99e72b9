"""The service pool: search path on the service's schema, clear errors, the readiness probe."""

from __future__ import annotations

import asyncpg
import pytest

from gyre_common.db import DatabaseUnavailable, create_pool, database_ready
from gyre_common.settings import DatabaseSettings
from gyre_stack.ports import free_port

pytestmark = pytest.mark.integration


async def test_pool_searches_the_service_schema_first(database_url: str) -> None:
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute("CREATE SCHEMA registry; CREATE TABLE registry.models (name text)")
    finally:
        await admin.close()
    pool = await create_pool(DatabaseSettings(url=database_url), "registry", application_name="gyre-registry")
    try:
        await pool.execute("INSERT INTO models VALUES ('iris')")
        assert await pool.fetchval("SELECT name FROM registry.models") == "iris"
        assert await pool.fetchval("SELECT current_setting('application_name')") == "gyre-registry"
        assert await database_ready(pool)
    finally:
        await pool.close()


async def test_unreachable_database_names_the_variable_and_hides_the_password() -> None:
    settings = DatabaseSettings(url=f"postgresql://gyre:s3cret-pw@127.0.0.1:{free_port()}/gyre",
                                connect_timeout_s=2.0)
    with pytest.raises(DatabaseUnavailable) as caught:
        await create_pool(settings, "registry")
    message = str(caught.value)
    assert "GYRE_DATABASE_URL" in message
    assert "s3cret-pw" not in message
    assert "postgresql://gyre:***@127.0.0.1" in message


async def test_probe_turns_false_when_the_pool_cannot_answer(database_url: str) -> None:
    pool = await create_pool(DatabaseSettings(url=database_url))
    assert await database_ready(pool)
    await pool.close()
    assert not await database_ready(pool, timeout_s=0.5)


async def test_schema_names_are_checked() -> None:
    with pytest.raises(ValueError, match="not a valid schema name"):
        await create_pool(DatabaseSettings(), "bad; DROP TABLE x")
