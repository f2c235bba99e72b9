"""The registry's storage: an interface, and its PostgreSQL implementation (schema ``registry``).

Reads go through :class:`Store`; every change goes through a :class:`RegistryTransaction`
(``async with store.transaction() as tx``), which also queues the events of the change in the
outbox, so rows, audit entries and events commit or roll back together.

Records are the domain types of :mod:`gyre_registry.domain.models`; signatures, lineages and
promotion decisions are kept in their proto3 JSON form (readable, and ``lineage->>'runId'`` is
queried), written and read through :mod:`gyre_registry.convert`. Events arrive as outbox rows
(protobuf bytes). All times are aware UTC datetimes.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from gyre_common.outbox import OutboxEvent, add_events
from gyre_registry import convert
from gyre_registry.domain.errors import AlreadyExists
from gyre_registry.domain.models import (
    ArtifactRef,
    AuditEntry,
    HoldoutEvaluation,
    Lineage,
    ModelSignature,
    ModelVersion,
    PromotionDecision,
    RegisteredModel,
    VersionStatus,
)

DATABASE_ERRORS: tuple[type[Exception], ...] = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)
"""What the database driver raises while PostgreSQL cannot be reached (the transports answer UNAVAILABLE)."""


@dataclass(frozen=True)
class NewVersion:
    """A version to insert (its number comes from :meth:`RegistryTransaction.next_version`)."""

    model_name: str
    version: int
    artifact: ArtifactRef
    signature: ModelSignature
    lineage: Lineage
    evaluation: HoldoutEvaluation
    description: str
    tags: Mapping[str, str]
    created_by: str
    created_at: datetime
    idempotency_key: str | None


@dataclass(frozen=True)
class StoredVersion:
    """A version with what only the registry keeps about it."""

    model_version: ModelVersion
    idempotency_key: str | None = None
    promotion: PromotionDecision | None = None


@dataclass(frozen=True)
class Page:
    """Keyset position of a list call: rows after ``after`` (None: from the start)."""

    size: int
    after: Any = None


@dataclass
class AuditQuery:
    """Filter of :meth:`Store.list_audit`."""

    model_name: str = ""
    since: datetime | None = None
    page: Page = field(default_factory=lambda: Page(100))


class RegistryTransaction(ABC):
    """Changes made together; rolled back entirely when the ``async with`` block raises."""

    @abstractmethod
    async def insert_model(self, name: str, description: str, tags: Mapping[str, str], now: datetime,
                           *, if_missing: bool) -> bool:
        """Create a registered model; True if created. With ``if_missing`` an existing name is left
        alone (False); without, it raises :class:`AlreadyExists`."""

    @abstractmethod
    async def lock_model(self, name: str) -> RegisteredModel | None:
        """The model, locked until commit (serialises all changes of one model); None if absent."""

    @abstractmethod
    async def lock_model_version(self, name: str, version: int
                                 ) -> tuple[RegisteredModel | None, ModelVersion | None]:
        """The model (with its aliases), locked until commit as :meth:`lock_model` does, and one
        of its versions (with its aliases), in one round trip; None for what does not exist."""

    @abstractmethod
    async def version_by_idempotency_key(self, name: str, key: str) -> StoredVersion | None:
        """The version registered with ``key``, if any."""

    @abstractmethod
    async def next_version(self, name: str, now: datetime) -> int:
        """Take the model's next version number (the model must be locked)."""

    @abstractmethod
    async def insert_version(self, new: NewVersion) -> ModelVersion:
        """Insert a version; the stored record."""

    @abstractmethod
    async def get_version(self, name: str, version: int) -> ModelVersion | None:
        """One version (with its aliases), or None."""

    @abstractmethod
    async def save_promotion(self, name: str, version: int, decision: PromotionDecision) -> None:
        """Remember the policy's decision for ``version`` (returned again on retries)."""

    @abstractmethod
    async def alias_version(self, name: str, alias: str) -> int | None:
        """Version ``alias`` points at, or None."""

    @abstractmethod
    async def set_alias(self, name: str, alias: str, version: int, now: datetime,
                        audit: AuditEntry | None = None) -> None:
        """Point ``alias`` at ``version`` (creating or moving it), and append ``audit`` (the
        move's audit entry) with it."""

    @abstractmethod
    async def delete_alias(self, name: str, alias: str, now: datetime) -> None:
        """Remove ``alias``."""

    @abstractmethod
    async def aliases_of_version(self, name: str, version: int) -> list[str]:
        """Aliases pointing at ``version``."""

    @abstractmethod
    async def archive_version(self, name: str, version: int, now: datetime) -> None:
        """Mark ``version`` archived."""

    @abstractmethod
    async def add_audit(self, entry: AuditEntry) -> None:
        """Append an audit log entry."""

    @abstractmethod
    async def add_events(self, events: Sequence[OutboxEvent]) -> None:
        """Queue events (``registry.events`` rows with their protobuf bytes) in the outbox."""


class Store(ABC):
    """Reads, and the factory of :class:`RegistryTransaction`."""

    @abstractmethod
    def transaction(self) -> Any:
        """``async with store.transaction() as tx:`` a :class:`RegistryTransaction`."""

    @abstractmethod
    async def get_model(self, name: str) -> RegisteredModel | None:
        """One model with its aliases, or None."""

    @abstractmethod
    async def list_models(self, page: Page) -> list[RegisteredModel]:
        """Models by name, after ``page.after`` (a name), at most ``page.size``."""

    @abstractmethod
    async def get_version(self, name: str, version: int) -> ModelVersion | None:
        """One version with its aliases, or None."""

    @abstractmethod
    async def list_versions(self, name: str, include_archived: bool, page: Page) -> list[ModelVersion]:
        """Versions newest first, below ``page.after`` (a version number), at most ``page.size``."""

    @abstractmethod
    async def alias_version(self, name: str, alias: str) -> int | None:
        """Version ``alias`` points at, or None."""

    @abstractmethod
    async def latest_ready_version(self, name: str) -> int | None:
        """Newest version that is not archived, or None."""

    @abstractmethod
    async def list_audit(self, query: AuditQuery) -> list[tuple[int, AuditEntry]]:
        """(seq, entry) newest first, below ``query.page.after`` (a seq)."""


# -- rows -> records --------------------------------------------------------------------------------

def _jsonb(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _model(row: asyncpg.Record, aliases: Mapping[str, int], prefix: str = "") -> RegisteredModel:
    """The model of ``row`` (its columns named ``prefix`` + column where a join renamed them)."""
    return RegisteredModel(
        name=row["name"], description=row[prefix + "description"], tags=_jsonb(row[prefix + "tags"]),
        aliases=dict(aliases), latest_version=row["latest_version"],
        created_at=row[prefix + "created_at"], updated_at=row[prefix + "updated_at"],
    )


def _version(row: asyncpg.Record, aliases: list[str]) -> ModelVersion:
    return ModelVersion(
        model_name=row["model_name"],
        version=row["version"],
        status=VersionStatus(row["status"]),
        artifact=ArtifactRef(uri=row["artifact_uri"], sha256=row["artifact_sha256"],
                             size_bytes=row["artifact_size_bytes"], format=row["artifact_format"]),
        signature=convert.signature_from_json(row["signature"]),
        lineage=convert.lineage_from_json(row["lineage"]),
        evaluation=HoldoutEvaluation(primary_metric=row["primary_metric"], lower_is_better=row["lower_is_better"],
                                     holdout_id=row["holdout_id"]),
        aliases=tuple(sorted(aliases)),
        description=row["description"],
        tags=_jsonb(row["tags"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
    )


def _stored(row: asyncpg.Record, aliases: list[str]) -> StoredVersion:
    promotion = None
    if row["promotion"] is not None:
        promotion = convert.promotion_from_json(row["promotion"])
    return StoredVersion(_version(row, aliases), row["idempotency_key"], promotion)


_VERSION_COLUMNS = (
    "model_name, version, status, artifact_uri, artifact_sha256, artifact_size_bytes, artifact_format, "
    "signature::text AS signature, lineage::text AS lineage, primary_metric, lower_is_better, holdout_id, "
    "description, tags, created_by, created_at, idempotency_key, promotion::text AS promotion"
)


async def _aliases_by_version(conn: Any, name: str, versions: list[int]) -> dict[int, list[str]]:
    rows = await conn.fetch(
        "SELECT alias, version FROM aliases WHERE model_name = $1 AND version = ANY($2::bigint[])", name, versions
    )
    found: dict[int, list[str]] = {}
    for row in rows:
        found.setdefault(row["version"], []).append(row["alias"])
    return found


async def _get_version(conn: Any, name: str, version: int) -> StoredVersion | None:
    # One round trip: the version and its aliases together.
    row = await conn.fetchrow(
        f"SELECT {_VERSION_COLUMNS}, ARRAY(SELECT a.alias FROM aliases a WHERE a.model_name = $1 "
        "AND a.version = $2) AS alias_list FROM model_versions WHERE model_name = $1 AND version = $2",
        name, version,
    )
    if row is None:
        return None
    return _stored(row, list(row["alias_list"]))


def _audit_values(entry: AuditEntry | None) -> tuple[Any, ...]:
    """The bind values of an audit_log row (all None without an entry)."""
    if entry is None:
        return (None,) * 7
    return (entry.audit_id, entry.actor, entry.action, entry.model_name, entry.version,
            json.dumps(dict(entry.details)), entry.occurred_at)


# -- PostgreSQL ------------------------------------------------------------------------------------

class PostgresRegistryTransaction(RegistryTransaction):
    """A :class:`RegistryTransaction` on one asyncpg connection inside a transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.events_added = 0

    async def insert_model(self, name: str, description: str, tags: Mapping[str, str], now: datetime,
                           *, if_missing: bool) -> bool:
        status = await self.conn.execute(
            "INSERT INTO registered_models (name, description, tags, created_at, updated_at) "
            "VALUES ($1, $2, $3::jsonb, $4, $4) ON CONFLICT (name) DO NOTHING",
            name, description, json.dumps(dict(tags)), now,
        )
        created = status.endswith(" 1")
        if not created and not if_missing:
            raise AlreadyExists(f"registered model {name!r} already exists")
        return created

    async def lock_model(self, name: str) -> RegisteredModel | None:
        # One round trip: the locked row and its aliases.
        row = await self.conn.fetchrow(
            "SELECT m.*, "
            "ARRAY(SELECT a.alias FROM aliases a WHERE a.model_name = m.name ORDER BY a.alias) AS alias_names, "
            "ARRAY(SELECT a.version FROM aliases a WHERE a.model_name = m.name ORDER BY a.alias) AS alias_versions "
            "FROM registered_models m WHERE m.name = $1 FOR UPDATE OF m", name,
        )
        if row is None:
            return None
        return _model(row, dict(zip(row["alias_names"], row["alias_versions"], strict=True)))

    async def lock_model_version(self, name: str, version: int
                                 ) -> tuple[RegisteredModel | None, ModelVersion | None]:
        # The LATERAL sub-select names model_versions' columns unqualified (as _VERSION_COLUMNS
        # does); its columns are NULL when the version does not exist.
        row = await self.conn.fetchrow(
            "SELECT m.name, m.description AS model_description, m.tags AS model_tags, m.latest_version, "
            "m.created_at AS model_created_at, m.updated_at AS model_updated_at, "
            "ARRAY(SELECT a.alias FROM aliases a WHERE a.model_name = m.name ORDER BY a.alias) AS alias_names, "
            "ARRAY(SELECT a.version FROM aliases a WHERE a.model_name = m.name ORDER BY a.alias) AS alias_versions, "
            f"v.* FROM registered_models m LEFT JOIN LATERAL (SELECT {_VERSION_COLUMNS} FROM model_versions "
            "WHERE model_name = $1 AND version = $2) v ON true WHERE m.name = $1 FOR UPDATE OF m",
            name, version,
        )
        if row is None:
            return None, None
        aliases = dict(zip(row["alias_names"], row["alias_versions"], strict=True))
        model = _model(row, aliases, prefix="model_")
        if row["model_name"] is None:
            return model, None
        return model, _version(row, [alias for alias, number in aliases.items() if number == version])

    async def version_by_idempotency_key(self, name: str, key: str) -> StoredVersion | None:
        row = await self.conn.fetchrow(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE model_name = $1 AND idempotency_key = $2",
            name, key,
        )
        if row is None:
            return None
        aliases = await _aliases_by_version(self.conn, name, [row["version"]])
        return _stored(row, aliases.get(row["version"], []))

    async def next_version(self, name: str, now: datetime) -> int:
        # Same transaction as the insert: a rollback returns the number, so there are no gaps.
        return int(await self.conn.fetchval(
            "UPDATE registered_models SET latest_version = latest_version + 1, updated_at = $2 "
            "WHERE name = $1 RETURNING latest_version",
            name, now,
        ))

    async def insert_version(self, new: NewVersion) -> ModelVersion:
        await self.conn.execute(
            "INSERT INTO model_versions (model_name, version, artifact_uri, artifact_sha256, artifact_size_bytes, "
            "artifact_format, signature, lineage, primary_metric, lower_is_better, holdout_id, description, tags, "
            "created_by, created_at, idempotency_key, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10, $11, $12, $13::jsonb, $14, $15, $16, $15)",
            new.model_name, new.version, new.artifact.uri, new.artifact.sha256, new.artifact.size_bytes,
            new.artifact.format, convert.signature_json(new.signature), convert.lineage_json(new.lineage),
            new.evaluation.primary_metric,
            new.evaluation.lower_is_better, new.evaluation.holdout_id, new.description,
            json.dumps(dict(new.tags)), new.created_by, new.created_at, new.idempotency_key,
        )
        stored = await _get_version(self.conn, new.model_name, new.version)
        assert stored is not None
        return stored.model_version

    async def get_version(self, name: str, version: int) -> ModelVersion | None:
        stored = await _get_version(self.conn, name, version)
        return None if stored is None else stored.model_version

    async def save_promotion(self, name: str, version: int, decision: PromotionDecision) -> None:
        await self.conn.execute(
            "UPDATE model_versions SET promotion = $3::jsonb WHERE model_name = $1 AND version = $2",
            name, version, convert.promotion_json(decision),
        )

    async def alias_version(self, name: str, alias: str) -> int | None:
        value = await self.conn.fetchval(
            "SELECT version FROM aliases WHERE model_name = $1 AND alias = $2", name, alias
        )
        return None if value is None else int(value)

    async def set_alias(self, name: str, alias: str, version: int, now: datetime,
                        audit: AuditEntry | None = None) -> None:
        # One round trip for the alias, the model's timestamp and the audit entry.
        await self.conn.execute(
            "WITH moved AS (INSERT INTO aliases (model_name, alias, version, updated_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (model_name, alias) "
            "DO UPDATE SET version = EXCLUDED.version, updated_at = EXCLUDED.updated_at), "
            "audited AS (INSERT INTO audit_log (audit_id, actor, action, model_name, version, details, occurred_at) "
            "SELECT $5, $6, $7, $8, $9, $10::jsonb, $11 WHERE $5::text IS NOT NULL) "
            "UPDATE registered_models SET updated_at = $4 WHERE name = $1",
            name, alias, version, now, *_audit_values(audit),
        )

    async def delete_alias(self, name: str, alias: str, now: datetime) -> None:
        await self.conn.execute("DELETE FROM aliases WHERE model_name = $1 AND alias = $2", name, alias)
        await self.conn.execute("UPDATE registered_models SET updated_at = $2 WHERE name = $1", name, now)

    async def aliases_of_version(self, name: str, version: int) -> list[str]:
        found = await _aliases_by_version(self.conn, name, [version])
        return sorted(found.get(version, []))

    async def archive_version(self, name: str, version: int, now: datetime) -> None:
        await self.conn.execute(
            "UPDATE model_versions SET status = 'archived', archived_at = $3, updated_at = $3 "
            "WHERE model_name = $1 AND version = $2",
            name, version, now,
        )

    async def add_audit(self, entry: AuditEntry) -> None:
        await self.conn.execute(
            "INSERT INTO audit_log (audit_id, actor, action, model_name, version, details, occurred_at) "
            "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)",
            *_audit_values(entry),
        )

    async def add_events(self, events: Sequence[OutboxEvent]) -> None:
        await add_events(self.conn, events)
        self.events_added += len(events)


class PostgresStore(Store):
    """:class:`Store` on an asyncpg pool whose search path starts with schema ``registry``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresRegistryTransaction]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield PostgresRegistryTransaction(conn)

    async def get_model(self, name: str) -> RegisteredModel | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM registered_models WHERE name = $1", name)
            if row is None:
                return None
            aliases = await conn.fetch("SELECT alias, version FROM aliases WHERE model_name = $1", name)
        return _model(row, {a["alias"]: a["version"] for a in aliases})

    async def list_models(self, page: Page) -> list[RegisteredModel]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM registered_models WHERE $1::text IS NULL OR name > $1 ORDER BY name LIMIT $2",
                page.after, page.size,
            )
            aliases = await conn.fetch(
                "SELECT model_name, alias, version FROM aliases WHERE model_name = ANY($1::text[])",
                [row["name"] for row in rows],
            )
        by_model: dict[str, dict[str, int]] = {}
        for a in aliases:
            by_model.setdefault(a["model_name"], {})[a["alias"]] = a["version"]
        return [_model(row, by_model.get(row["name"], {})) for row in rows]

    async def get_version(self, name: str, version: int) -> ModelVersion | None:
        async with self.pool.acquire() as conn:
            stored = await _get_version(conn, name, version)
        return None if stored is None else stored.model_version

    async def list_versions(self, name: str, include_archived: bool, page: Page) -> list[ModelVersion]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE model_name = $1 "
                "AND ($2 OR status = 'ready') AND ($3::bigint IS NULL OR version < $3) "
                "ORDER BY version DESC LIMIT $4",
                name, include_archived, page.after, page.size,
            )
            aliases = await _aliases_by_version(conn, name, [row["version"] for row in rows])
        return [_version(row, aliases.get(row["version"], [])) for row in rows]

    async def alias_version(self, name: str, alias: str) -> int | None:
        value = await self.pool.fetchval("SELECT version FROM aliases WHERE model_name = $1 AND alias = $2",
                                         name, alias)
        return None if value is None else int(value)

    async def latest_ready_version(self, name: str) -> int | None:
        value = await self.pool.fetchval(
            "SELECT max(version) FROM model_versions WHERE model_name = $1 AND status = 'ready'", name
        )
        return None if value is None else int(value)

    async def list_audit(self, query: AuditQuery) -> list[tuple[int, AuditEntry]]:
        rows = await self.pool.fetch(
            "SELECT seq, audit_id, actor, action, model_name, version, details::text AS details, occurred_at "
            "FROM audit_log WHERE ($1 = '' OR model_name = $1) AND ($2::timestamptz IS NULL OR occurred_at >= $2) "
            "AND ($3::bigint IS NULL OR seq < $3) ORDER BY seq DESC LIMIT $4",
            query.model_name, query.since, query.page.after, query.page.size,
        )
        return [(int(row["seq"]), AuditEntry(
            audit_id=row["audit_id"], actor=row["actor"], action=row["action"], model_name=row["model_name"],
            version=row["version"], details=json.loads(row["details"]), occurred_at=row["occurred_at"],
        )) for row in rows]

