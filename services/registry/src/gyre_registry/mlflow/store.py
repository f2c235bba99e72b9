"""The storage interface of the MLflow-compatible surface and its PostgreSQL adapter, on the
registry's own tables (schema ``registry``).

:class:`MlflowStore` reads MLflow-shaped records (:class:`MlflowModel`, :class:`MlflowVersion`);
its :meth:`~MlflowStore.transaction` yields an :class:`MlflowTransaction`, whose writes commit
together with what the registry's own transaction (``tx.registry``: locks, aliases, audit entries,
outbox events) adds in it. The MLflow handlers go through these two interfaces only, never a
database connection. Times are aware UTC datetimes here and milliseconds since the epoch in
MLflow's JSON.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gyre_registry.domain.models import AuditEntry
from gyre_registry.mlflow.filters import Sql
from gyre_registry.store import PostgresRegistryTransaction, PostgresStore, RegistryTransaction


@dataclass(frozen=True)
class MlflowVersion:
    """A model version as MLflow shows it."""

    name: str
    version: int
    created_at: datetime
    updated_at: datetime
    user_id: str
    description: str
    source: str
    run_id: str
    run_link: str
    archived: bool
    sha256: str
    tags: dict[str, str]
    aliases: list[str]


@dataclass(frozen=True)
class MlflowModel:
    """A registered model as MLflow shows it (``latest`` is its newest version, if any)."""

    name: str
    created_at: datetime
    updated_at: datetime
    description: str
    tags: dict[str, str]
    aliases: dict[str, int]
    latest: MlflowVersion | None


_VERSION_SELECT = (
    "SELECT v.model_name, v.version, v.created_at, v.updated_at, v.created_by, v.description, v.artifact_uri, "
    "coalesce(v.lineage ->> 'runId', '') AS run_id, v.run_link, v.status, v.artifact_sha256, v.tags::text AS tags "
    "FROM model_versions v"
)


def _tags(value: Any) -> dict[str, str]:
    return dict(json.loads(value) if isinstance(value, str) else value)


async def _aliases(conn: Any, names: list[str]) -> dict[str, dict[str, int]]:
    rows = await conn.fetch("SELECT model_name, alias, version FROM aliases WHERE model_name = ANY($1::text[])", names)
    found: dict[str, dict[str, int]] = {}
    for row in rows:
        found.setdefault(row["model_name"], {})[row["alias"]] = int(row["version"])
    return found


def _version(row: asyncpg.Record, aliases: dict[str, int]) -> MlflowVersion:
    number = int(row["version"])
    return MlflowVersion(
        name=row["model_name"], version=number, created_at=row["created_at"], updated_at=row["updated_at"],
        user_id=row["created_by"], description=row["description"], source=row["artifact_uri"],
        run_id=row["run_id"], run_link=row["run_link"], archived=row["status"] == "archived",
        sha256=row["artifact_sha256"], tags=_tags(row["tags"]),
        aliases=sorted(alias for alias, v in aliases.items() if v == number),
    )


async def search_versions(conn: Any, sql: Sql, limit: int, offset: int) -> list[MlflowVersion]:
    """Versions matching ``sql`` (a :func:`~gyre_registry.mlflow.filters.to_sql` for ``version``)."""
    n = len(sql.params)
    rows = await conn.fetch(
        f"{_VERSION_SELECT} WHERE {sql.where} ORDER BY {sql.order_by} LIMIT ${n + 1} OFFSET ${n + 2}",
        *sql.params, limit, offset,
    )
    aliases = await _aliases(conn, sorted({row["model_name"] for row in rows}))
    return [_version(row, aliases.get(row["model_name"], {})) for row in rows]


async def get_version(conn: Any, name: str, version: int) -> MlflowVersion | None:
    """One version, or None."""
    row = await conn.fetchrow(f"{_VERSION_SELECT} WHERE v.model_name = $1 AND v.version = $2", name, version)
    if row is None:
        return None
    aliases = await _aliases(conn, [name])
    return _version(row, aliases.get(name, {}))


async def search_models(conn: Any, sql: Sql, limit: int, offset: int) -> list[MlflowModel]:
    """Models matching ``sql`` (a :func:`~gyre_registry.mlflow.filters.to_sql` for ``model``), each
    with its newest version."""
    n = len(sql.params)
    rows = await conn.fetch(
        f"SELECT m.name, m.created_at, m.updated_at, m.description, m.tags::text AS tags, m.latest_version "
        f"FROM registered_models m WHERE {sql.where} ORDER BY {sql.order_by} LIMIT ${n + 1} OFFSET ${n + 2}",
        *sql.params, limit, offset,
    )
    names = [row["name"] for row in rows]
    aliases = await _aliases(conn, names)
    latest_rows = await conn.fetch(
        f"{_VERSION_SELECT} JOIN (SELECT model_name, max(version) AS version FROM model_versions "
        "WHERE model_name = ANY($1::text[]) GROUP BY model_name) newest USING (model_name, version)",
        names,
    )
    latest = {row["model_name"]: _version(row, aliases.get(row["model_name"], {})) for row in latest_rows}
    return [
        MlflowModel(name=row["name"], created_at=row["created_at"], updated_at=row["updated_at"],
                    description=row["description"], tags=_tags(row["tags"]), aliases=aliases.get(row["name"], {}),
                    latest=latest.get(row["name"]))
        for row in rows
    ]


async def get_model(conn: Any, name: str) -> MlflowModel | None:
    """One model, or None."""
    found = await search_models(conn, Sql(where="m.name = $1", order_by="m.name", params=[name]), 1, 0)
    return found[0] if found else None


async def set_model_tag(conn: Any, name: str, key: str, value: str | None, now: datetime) -> None:
    """Set (``value``) or remove (None) one tag of a model (the caller checked it exists)."""
    if value is None:
        await conn.execute("UPDATE registered_models SET tags = tags - $2::text, updated_at = $3 WHERE name = $1",
                           name, key, now)
    else:
        await conn.execute(
            "UPDATE registered_models SET tags = tags || jsonb_build_object($2::text, $3::text), updated_at = $4 "
            "WHERE name = $1", name, key, value, now,
        )


async def set_version_tag(conn: Any, name: str, version: int, key: str, value: str | None, now: datetime) -> None:
    """Set (``value``) or remove (None) one tag of a version (the caller checked it exists)."""
    if value is None:
        await conn.execute(
            "UPDATE model_versions SET tags = tags - $3::text, updated_at = $4 WHERE model_name = $1 AND version = $2",
            name, version, key, now,
        )
    else:
        await conn.execute(
            "UPDATE model_versions SET tags = tags || jsonb_build_object($3::text, $4::text), updated_at = $5 "
            "WHERE model_name = $1 AND version = $2", name, version, key, value, now,
        )


async def set_model_description(conn: Any, name: str, description: str, now: datetime) -> None:
    """Replace a model's description."""
    await conn.execute("UPDATE registered_models SET description = $2, updated_at = $3 WHERE name = $1",
                       name, description, now)


async def set_version_description(conn: Any, name: str, version: int, description: str, now: datetime) -> None:
    """Replace a version's description."""
    await conn.execute(
        "UPDATE model_versions SET description = $3, updated_at = $4 WHERE model_name = $1 AND version = $2",
        name, version, description, now,
    )


@dataclass(frozen=True)
class NewMlflowVersion:
    """A version created through the MLflow API (no sha256, no signature, lineage = the run id)."""

    name: str
    source: str
    artifact_format: str
    run_id: str
    run_link: str
    description: str
    tags: dict[str, str]
    user_id: str
    created_at: datetime


async def insert_next_version(conn: Any, new: NewMlflowVersion, audit: AuditEntry) -> MlflowVersion | None:
    """Take the model's next version number, insert the version and append ``audit`` (its audit
    entry; the entry's ``version`` is replaced by the number taken), in one statement; the stored
    record (a new version has no aliases), or None when the model does not exist (nothing written).

    The UPDATE locks the model's row until commit, which serialises every change of the model as
    :meth:`RegistryTransaction.lock_model` does; a rollback gives the number back."""
    lineage = json.dumps({"runId": new.run_id} if new.run_id else {})
    row = await conn.fetchrow(
        "WITH taken AS (UPDATE registered_models SET latest_version = latest_version + 1, updated_at = $8 "
        "WHERE name = $1 RETURNING latest_version), "
        "audited AS (INSERT INTO audit_log (audit_id, actor, action, model_name, version, details, occurred_at) "
        "SELECT $10, $11, $12, $1, taken.latest_version, $13::jsonb, $8 FROM taken) "
        "INSERT INTO model_versions (model_name, version, artifact_uri, artifact_sha256, artifact_size_bytes, "
        "artifact_format, signature, lineage, description, tags, created_by, created_at, updated_at, run_link) "
        "SELECT $1, taken.latest_version, $2, '', 0, $3, '{}'::jsonb, $4::jsonb, $5, $6::jsonb, $7, $8, $8, $9 "
        "FROM taken "
        "RETURNING model_name, version, created_at, updated_at, created_by, description, artifact_uri, "
        "coalesce(lineage ->> 'runId', '') AS run_id, run_link, status, artifact_sha256, tags::text AS tags",
        new.name, new.source, new.artifact_format, lineage, new.description, json.dumps(new.tags), new.user_id,
        new.created_at, new.run_link, audit.audit_id, audit.actor, audit.action, json.dumps(dict(audit.details)),
    )
    return None if row is None else _version(row, {})


async def delete_version(conn: Any, name: str, version: int, now: datetime) -> None:
    """Remove a version row (its aliases must be gone already). Numbers are not reused: the model's
    ``latest_version`` counter stays where it is."""
    await conn.execute("DELETE FROM model_versions WHERE model_name = $1 AND version = $2", name, version)
    await conn.execute("UPDATE registered_models SET updated_at = $2 WHERE name = $1", name, now)


async def delete_model(conn: Any, name: str) -> None:
    """Remove a model row (its versions and aliases must be gone already)."""
    await conn.execute("DELETE FROM registered_models WHERE name = $1", name)


async def version_numbers(conn: Any, name: str) -> list[int]:
    """Every version number of a model, ascending."""
    rows = await conn.fetch("SELECT version FROM model_versions WHERE model_name = $1 ORDER BY version", name)
    return [int(row["version"]) for row in rows]


# -- the interface the MLflow handlers use, and its PostgreSQL adapter --------------------------------

class MlflowTransaction(ABC):
    """Writes of the MLflow surface inside one registry transaction (they commit together).

    Attributes:
        registry: the registry's own transaction (model locks, versions, aliases, audit, outbox).
    """

    registry: RegistryTransaction

    @abstractmethod
    async def version(self, name: str, version: int) -> MlflowVersion | None:
        """One version as MLflow shows it, or None (read inside the transaction)."""

    @abstractmethod
    async def version_numbers(self, name: str) -> list[int]:
        """Every version number of a model, ascending."""

    @abstractmethod
    async def set_model_tag(self, name: str, key: str, value: str | None, now: datetime) -> None:
        """Set (``value``) or remove (None) one tag of a model (the caller checked it exists)."""

    @abstractmethod
    async def set_version_tag(self, name: str, version: int, key: str, value: str | None, now: datetime) -> None:
        """Set (``value``) or remove (None) one tag of a version (the caller checked it exists)."""

    @abstractmethod
    async def set_model_description(self, name: str, description: str, now: datetime) -> None:
        """Replace a model's description."""

    @abstractmethod
    async def set_version_description(self, name: str, version: int, description: str, now: datetime) -> None:
        """Replace a version's description."""

    @abstractmethod
    async def insert_next_version(self, new: NewMlflowVersion, audit: AuditEntry) -> MlflowVersion | None:
        """Number, insert and audit a new version (see :func:`insert_next_version`); None when the
        model does not exist (nothing written)."""

    @abstractmethod
    async def delete_version(self, name: str, version: int, now: datetime) -> None:
        """Remove a version row (its aliases must be gone already; numbers are not reused)."""

    @abstractmethod
    async def delete_model(self, name: str) -> None:
        """Remove a model row (its versions and aliases must be gone already)."""


class MlflowStore(ABC):
    """Reads of the MLflow surface, and its transactions."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[MlflowTransaction]:
        """A transaction: committed when the block ends, rolled back when it raises."""

    @abstractmethod
    async def search_models(self, sql: Sql, limit: int, offset: int) -> list[MlflowModel]:
        """Models matching ``sql`` (``registered_models m``), each with its newest version."""

    @abstractmethod
    async def get_model(self, name: str) -> MlflowModel | None:
        """One model, or None."""

    @abstractmethod
    async def search_versions(self, sql: Sql, limit: int, offset: int) -> list[MlflowVersion]:
        """Versions matching ``sql`` (``model_versions v``)."""

    @abstractmethod
    async def get_version(self, name: str, version: int) -> MlflowVersion | None:
        """One version, or None."""


class PostgresMlflowTransaction(MlflowTransaction):
    """:class:`MlflowTransaction` on the connection of a :class:`PostgresRegistryTransaction`."""

    def __init__(self, registry: PostgresRegistryTransaction) -> None:
        self.registry = registry
        self._conn = registry.conn

    async def version(self, name: str, version: int) -> MlflowVersion | None:
        return await get_version(self._conn, name, version)

    async def version_numbers(self, name: str) -> list[int]:
        return await version_numbers(self._conn, name)

    async def set_model_tag(self, name: str, key: str, value: str | None, now: datetime) -> None:
        await set_model_tag(self._conn, name, key, value, now)

    async def set_version_tag(self, name: str, version: int, key: str, value: str | None, now: datetime) -> None:
        await set_version_tag(self._conn, name, version, key, value, now)

    async def set_model_description(self, name: str, description: str, now: datetime) -> None:
        await set_model_description(self._conn, name, description, now)

    async def set_version_description(self, name: str, version: int, description: str, now: datetime) -> None:
        await set_version_description(self._conn, name, version, description, now)

    async def insert_next_version(self, new: NewMlflowVersion, audit: AuditEntry) -> MlflowVersion | None:
        return await insert_next_version(self._conn, new, audit)

    async def delete_version(self, name: str, version: int, now: datetime) -> None:
        await delete_version(self._conn, name, version, now)

    async def delete_model(self, name: str) -> None:
        await delete_model(self._conn, name)


class PostgresMlflowStore(MlflowStore):
    """:class:`MlflowStore` on the registry's PostgreSQL store (same pool, same transactions)."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MlflowTransaction]:
        async with self._store.transaction() as tx:
            yield PostgresMlflowTransaction(tx)

    async def search_models(self, sql: Sql, limit: int, offset: int) -> list[MlflowModel]:
        async with self._store.pool.acquire() as conn:
            return await search_models(conn, sql, limit, offset)

    async def get_model(self, name: str) -> MlflowModel | None:
        async with self._store.pool.acquire() as conn:
            return await get_model(conn, name)

    async def search_versions(self, sql: Sql, limit: int, offset: int) -> list[MlflowVersion]:
        async with self._store.pool.acquire() as conn:
            return await search_versions(conn, sql, limit, offset)

    async def get_version(self, name: str, version: int) -> MlflowVersion | None:
        async with self._store.pool.acquire() as conn:
            return await get_version(conn, name, version)
