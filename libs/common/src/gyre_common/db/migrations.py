"""Schema migrations: ordered ``NNNN_description.sql`` files shipped inside a Python package.

Why our own small runner rather than alembic or yoyo: both drive migrations through a synchronous
DB-API driver (psycopg), which every service would have to install and configure next to asyncpg
for this one job; ours is plain SQL applied over the asyncpg connection the service already has.

Rules:

* a file is named ``NNNN_description.sql`` (four digits, then lower-case words); its version is the
  number, and versions are applied in ascending order, each file in its own transaction;
* what was applied is recorded in ``<schema>.schema_migrations`` with the file's sha256, and an
  applied file must never change: a changed checksum stops start-up with :class:`MigrationError`
  naming the file (write a new migration instead);
* concurrent starters (several replicas) are serialised by a PostgreSQL advisory lock keyed by the
  schema, so each migration runs exactly once;
* each file runs with ``search_path`` set to the schema, so it may create tables without naming it;
* a schema may also take *shared* migration sets that live in a library (the outbox table's,
  :mod:`gyre_common.outbox_migrations`): they run after the service's own files and are recorded in
  the same table under a ``namespace`` (the set's package name; the service's own files have the
  namespace ``''``), so their version numbers never collide with the service's;
* a version recorded as applied whose file is no longer shipped is tolerated (logged as a warning):
  it is what newer code, rolled back, leaves behind.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import asyncpg

from gyre_common.db.pool import check_identifier

log = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# First key of the two-key advisory lock: "gyre" in ASCII, so our locks are easy to spot in pg_locks.
_LOCK_CLASS = 0x67797265


class MigrationError(RuntimeError):
    """Migrations cannot be applied as they stand (bad file name, changed file, failing SQL)."""


@dataclass(frozen=True)
class Migration:
    """One migration file.

    Attributes:
        version: the ``NNNN`` number.
        name: the file name, e.g. ``0001_create_runs.sql``.
        sql: the file's text.
        checksum: hex sha256 of the file's bytes.
    """

    version: int
    name: str
    sql: str
    checksum: str


def load_migrations(package: str) -> list[Migration]:
    """The migration files of ``package``, sorted by version.

    Raises:
        MigrationError: a ``.sql`` file is misnamed, or two files share a version.
        ModuleNotFoundError: ``package`` cannot be imported.
    """
    found: dict[int, Migration] = {}
    for entry in resources.files(package).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {package}/{entry.name} is not named NNNN_description.sql")
        data = entry.read_bytes()
        migration = Migration(int(match.group(1)), entry.name, data.decode("utf-8"),
                              hashlib.sha256(data).hexdigest())
        if migration.version in found:
            raise MigrationError(f"migrations {found[migration.version].name} and {entry.name} in {package} "
                                 "share a version number")
        found[migration.version] = migration
    return [found[version] for version in sorted(found)]


async def migrate(dsn_or_pool: str | asyncpg.Pool, schema: str, package: str, *,
                  shared: Sequence[str] = ()) -> list[str]:
    """Bring ``schema`` up to date with the migrations of ``package``; create the schema if missing.

    Args:
        dsn_or_pool: a PostgreSQL URL, or a pool to borrow one connection from.
        schema: the schema the migrations belong to (a plain lower-case identifier).
        package: importable package holding the service's own ``NNNN_description.sql`` files.
        shared: packages of shared migration sets (e.g. :data:`gyre_common.service.OUTBOX_MIGRATIONS`)
            applied after ``package``'s, each recorded under its package name as namespace.

    Returns:
        The file names applied by this call, in order (empty when already up to date); a shared
        set's files are named ``<package>/<file>``.

    Raises:
        MigrationError: misnamed files, a changed already-applied file (named in the message), or
            a file whose SQL fails (that file's transaction is rolled back; earlier ones stay).
    """
    check_identifier(schema)
    sets = [("", package, load_migrations(package))] + [(name, name, load_migrations(name)) for name in shared]
    if isinstance(dsn_or_pool, str):
        connection = await asyncpg.connect(dsn_or_pool)
        try:
            return await _migrate_on(connection, schema, sets)
        finally:
            await connection.close()
    async with dsn_or_pool.acquire() as pooled:
        return await _migrate_on(pooled, schema, sets)


_MigrationSet = tuple[str, str, list[Migration]]
"""``(namespace, package, migrations)``: the service's own set has the namespace ``''``."""


async def _migrate_on(connection: asyncpg.Connection, schema: str, sets: list[_MigrationSet]) -> list[str]:
    # No statement timeout while migrating (the pool's GYRE_DATABASE_STATEMENT_TIMEOUT_S is for
    # requests): rewriting a big table may take long, and so may waiting for the lock below while
    # another replica migrates. RESET in the finally restores the pool's value.
    await connection.execute("SET statement_timeout = 0")
    # A session lock (not a transaction one) because each file gets its own transaction and the
    # lock must cover them all; it goes away by itself if this connection dies.
    await connection.execute("SELECT pg_advisory_lock($1::int, hashtext($2))", _LOCK_CLASS, schema)
    try:
        await _ensure_table(connection, schema)
        done: list[str] = []
        for namespace, package, migrations in sets:
            applied = await _apply_pending(connection, schema, namespace, package, migrations)
            done.extend(f"{namespace}/{name}" if namespace else name for name in applied)
        return done
    finally:
        try:
            await connection.execute("SELECT pg_advisory_unlock($1::int, hashtext($2))", _LOCK_CLASS, schema)
            await connection.execute("RESET statement_timeout")
        except BaseException:
            # A pooled connection is not reset on release (gyre_common.db.pool.keep_session):
            # close it rather than hand it back still holding the lock.
            connection.terminate()
            raise


async def _ensure_table(connection: asyncpg.Connection, schema: str) -> None:
    """Create ``<schema>.schema_migrations``, or give one made before namespaces its ``namespace``
    column and the primary key ``(namespace, version)`` (its rows become the service's own)."""
    await connection.execute(
        f"CREATE SCHEMA IF NOT EXISTS {schema};"
        f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
        " namespace text NOT NULL DEFAULT '', version int NOT NULL, name text NOT NULL, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (namespace, version));"
        f"ALTER TABLE {schema}.schema_migrations ADD COLUMN IF NOT EXISTS namespace text NOT NULL DEFAULT ''"
    )
    key = await connection.fetchval(
        "SELECT array_agg(a.attname::text) FROM pg_index i"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = $1::regclass AND i.indisprimary", f"{schema}.schema_migrations")
    if "namespace" not in (key or []):
        await connection.execute(f"ALTER TABLE {schema}.schema_migrations DROP CONSTRAINT schema_migrations_pkey,"
                                 " ADD PRIMARY KEY (namespace, version)")


async def _apply_pending(connection: asyncpg.Connection, schema: str, namespace: str, package: str,
                         migrations: list[Migration]) -> list[str]:
    rows = await connection.fetch(
        f"SELECT version, name, checksum FROM {schema}.schema_migrations WHERE namespace = $1", namespace)
    applied = {row["version"]: row for row in rows}
    known = {migration.version for migration in migrations}
    for version in sorted(set(applied) - known):
        log.warning("schema %s has migration %s applied, which %s does not ship (newer code ran here?)",
                    schema, applied[version]["name"], package)
    for migration in migrations:
        row = applied.get(migration.version)
        if row is not None and row["checksum"] != migration.checksum:
            raise MigrationError(
                f"migration {package}/{migration.name} changed after it was applied to schema {schema} "
                f"(checksum {row['checksum'][:12]}… recorded, {migration.checksum[:12]}… now); "
                "restore the file and add a new migration instead"
            )
    done: list[str] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        try:
            async with connection.transaction():
                await connection.execute(f"SET LOCAL search_path TO {schema}, public")
                await connection.execute(migration.sql)
                await connection.execute(
                    f"INSERT INTO {schema}.schema_migrations (namespace, version, name, checksum)"
                    " VALUES ($1, $2, $3, $4)",
                    namespace, migration.version, migration.name, migration.checksum,
                )
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"migration {package}/{migration.name} failed: {exc}") from exc
        log.info("applied migration %s to schema %s", migration.name, schema)
        done.append(migration.name)
    return done
