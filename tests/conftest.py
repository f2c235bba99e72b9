"""Fixtures shared by every test tier.

Integration tests get a real Tansu broker and a real PostgreSQL, started here on free ports in a
temporary folder, so they never collide with a stack that `make up` started. Set
``GYRE_TEST_DATABASE_URL`` to use an existing PostgreSQL server instead of the embedded one (each
test still gets a database of its own).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from gyre_stack.broker import Broker, start_broker_on_free_port
from gyre_stack.postgres import start_postgres_on_free_port


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A Tansu broker on a free port, for the whole session."""
    folder = tmp_path_factory.mktemp("tansu")
    started = start_broker_on_free_port(folder / "tansu.log")
    yield started
    started.stop()


@pytest.fixture(scope="session")
def bootstrap_servers(broker: Broker) -> str:
    return broker.bootstrap_servers


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """URL of a PostgreSQL server the tests may create databases in."""
    given = os.environ.get("GYRE_TEST_DATABASE_URL")
    if given:
        yield given
        return
    # Not under pytest's own temp root: pytest removes group/other bits from that root at every
    # session start, which would lock the PostgreSQL system user out of its data mid-run.
    folder = Path(tempfile.mkdtemp(prefix="gyre-test-postgres-"))
    try:
        server = start_postgres_on_free_port(folder / "data")
        try:
            yield server.url("postgres")
        finally:
            server.destroy()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    name = f"gyre_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = postgres_admin_url.rpartition("/")
    yield f"{base}/{name}"
    admin = await asyncpg.connect(postgres_admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic and group names, so tests never share state on the broker."""
    return uuid.uuid4().hex[:10]
