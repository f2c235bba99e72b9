"""The monitor's storage: a :class:`Store` interface and its PostgreSQL adapter.

Everything that changes state in reaction to one consumed batch happens in one
:meth:`Store.transaction` (window rows, cursors, results, alerts, outbox), so a crash leaves
either all of it or none of it, and Kafka offsets are committed only afterwards.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from gyre_common.outbox import OutboxEvent, add_events
from gyre_common.profile import FeatureKind, ReferenceProfile
from gyre_common.profile_wire import decode_profile, encode_profile
from gyre_monitor.domain.alerts import DriftState
from gyre_monitor.domain.drift import FeatureDrift, SkippedFeature, StatTest
from gyre_monitor.domain.predictions import Scalar
from gyre_monitor.domain.windows import WindowCursor


class WindowStatus:
    """Values of ``windows.status``."""

    PENDING = "pending"
    """Closed before the version had a reference profile; tested when one arrives."""
    EVALUATED = "evaluated"
    TOO_SMALL = "too_small"
    """Closed by time with fewer than ``min_window_rows`` predictions; not tested."""


@dataclass(frozen=True)
class StoredProfile:
    """A reference profile as stored, with where it came from and what retraining needs."""

    profile: ReferenceProfile
    sha256: str
    source: str
    feature_view: str = ""
    label: str = ""


@dataclass(frozen=True)
class WindowRow:
    """One stored prediction."""

    prediction_id: str
    window_seq: int
    served_at: datetime
    inputs: dict[str, Scalar]


@dataclass(frozen=True)
class WindowRecord:
    """A closed window and, once evaluated, its drift results."""

    model_name: str
    model_version: int
    window_seq: int
    status: str
    closed_by: str
    rows: int
    window_start: datetime
    window_end: datetime
    drift_share: float | None = None
    drift_share_threshold: float | None = None
    dataset_drift: bool | None = None
    drifted_features: tuple[str, ...] = ()
    alert_id: str | None = None
    evaluated_at: datetime | None = None
    features: tuple[FeatureDrift, ...] = field(default_factory=tuple)
    skipped: tuple[SkippedFeature, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class OutboxMessage:
    """An event waiting to be published: base topic, record key, CloudEvents id, protobuf bytes."""

    topic: str
    key: str
    event_id: str
    payload: bytes


class MonitorTransaction(ABC):
    """State changes inside one database transaction."""

    @abstractmethod
    async def lock_cursor(self, model_name: str, model_version: int) -> tuple[WindowCursor, DriftState]:
        """The open window and drift state of a version, locked until the transaction ends (created empty)."""

    @abstractmethod
    async def save_cursor(self, model_name: str, model_version: int, cursor: WindowCursor,
                          state: DriftState) -> None:
        """Store the open window and drift state (after :meth:`lock_cursor`)."""

    @abstractmethod
    async def unseen(self, model_name: str, model_version: int, prediction_ids: Sequence[str]) -> set[str]:
        """The ids among ``prediction_ids`` not stored yet for this version."""

    @abstractmethod
    async def add_rows(self, model_name: str, model_version: int, rows: Sequence[WindowRow]) -> None:
        """Store new predictions (ids must be unseen)."""

    @abstractmethod
    async def window_rows(self, model_name: str, model_version: int, window_seq: int) -> list[WindowRow]:
        """Every stored prediction of one window, in arrival order."""

    @abstractmethod
    async def save_window(self, record: WindowRecord) -> None:
        """Insert or replace a closed window and its per-feature results."""

    @abstractmethod
    async def pending_windows(self, model_name: str, model_version: int) -> list[WindowRecord]:
        """Windows waiting for a reference profile, oldest first."""

    @abstractmethod
    async def profile(self, model_name: str, model_version: int) -> StoredProfile | None:
        """The version's reference profile, if any."""

    @abstractmethod
    async def profile_digest(self, model_name: str, model_version: int) -> str | None:
        """sha256 of the version's stored profile (None without one): a cheap cache key."""

    @abstractmethod
    async def save_profile(self, stored: StoredProfile) -> None:
        """Insert or replace the version's reference profile."""

    @abstractmethod
    async def lock_retraining(self, model_name: str) -> datetime | None:
        """Event time of the model's last retraining request (None if never), locked."""

    @abstractmethod
    async def save_retraining(self, model_name: str, at: datetime, request_id: str) -> None:
        """Record a retraining request of the model at event time ``at``."""

    @abstractmethod
    async def save_alert(self, *, alert_id: str, model_name: str, model_version: int, window_seq: int,
                         detected_at: datetime, training_request_id: str | None, event: bytes) -> None:
        """Store an alert (binary MonitorAlert); a repeat of the same id is ignored."""

    @abstractmethod
    async def add_events(self, messages: Sequence[OutboxMessage]) -> None:
        """Queue events for publishing after commit; a repeat of the same event id is ignored."""

    @abstractmethod
    async def prune_rows(self, model_name: str, model_version: int, before_window: int) -> None:
        """Forget stored predictions of windows numbered below ``before_window``."""


class Store(ABC):
    """Where the monitor keeps profiles, windows, results, alerts and its outbox."""

    @abstractmethod
    def transaction(self) -> Any:
        """``async with store.transaction() as tx`` -> :class:`MonitorTransaction`; commits on exit."""

    @abstractmethod
    async def profile(self, model_name: str, model_version: int) -> StoredProfile | None:
        """A version's reference profile, if any."""

    @abstractmethod
    async def latest_window(self, model_name: str, model_version: int | None) -> WindowRecord | None:
        """The most recently evaluated window of a model (one version, or the newest of any)."""

    @abstractmethod
    async def list_windows(self, model_name: str, model_version: int | None, since: datetime | None,
                           limit: int, offset: int) -> list[WindowRecord]:
        """Evaluated windows, oldest first (by window end), with per-feature results."""

    @abstractmethod
    async def list_alerts(self, model_name: str | None, since: datetime | None, limit: int,
                          offset: int) -> list[bytes]:
        """Alerts as binary MonitorAlert, newest first."""

    @abstractmethod
    async def rows_between(self, model_name: str, model_version: int, start: datetime, end: datetime,
                           limit: int) -> list[WindowRow]:
        """Stored predictions served in [start, end), at most ``limit``, in time order."""

# -- PostgreSQL ------------------------------------------------------------------------------------


def _record(row: asyncpg.Record, features: tuple[FeatureDrift, ...] = ()) -> WindowRecord:
    return WindowRecord(
        model_name=row["model_name"],
        model_version=row["model_version"],
        window_seq=row["window_seq"],
        status=row["status"],
        closed_by=row["closed_by"],
        rows=row["row_count"],
        window_start=row["window_start"],
        window_end=row["window_end"],
        drift_share=row["drift_share"],
        drift_share_threshold=row["drift_share_threshold"],
        dataset_drift=row["dataset_drift"],
        drifted_features=tuple(row["drifted_features"]),
        alert_id=row["alert_id"],
        evaluated_at=row["evaluated_at"],
        features=features,
        skipped=tuple(SkippedFeature(item["feature"], item["reason"], item.get("descriptor", ""))
                      for item in json.loads(row["skipped"])),
    )


def _feature(row: asyncpg.Record) -> FeatureDrift:
    return FeatureDrift(
        feature=row["feature"],
        kind=FeatureKind(row["kind"]),
        test=StatTest(row["test_name"]),
        statistic=row["statistic"],
        p_value=row["p_value"],
        threshold=row["threshold"],
        drifted=row["drifted"],
        reference_rows=row["reference_rows"],
        current_rows=row["current_rows"],
        descriptor=row["descriptor"],
    )


def _stored_profile(row: asyncpg.Record) -> StoredProfile:
    profile = decode_profile(bytes(row["profile"]))
    profile = ReferenceProfile(profile.model_name, profile.model_version, profile.features, profile.rows,
                               profile.dataset_fingerprint, row["created_at"])
    return StoredProfile(profile, row["sha256"], row["source"], row["feature_view"], row["label"])


_PROFILE_COLUMNS = "profile, sha256, source, feature_view, label, created_at"


class PostgresTransaction(MonitorTransaction):
    """:class:`MonitorTransaction` on one asyncpg connection inside a transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def lock_cursor(self, model_name: str, model_version: int) -> tuple[WindowCursor, DriftState]:
        await self.conn.execute(
            "INSERT INTO window_cursors (model_name, model_version) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            model_name, model_version,
        )
        row = await self.conn.fetchrow(
            "SELECT window_seq, row_count, started_at, in_drift, last_alert_at FROM window_cursors "
            "WHERE model_name = $1 AND model_version = $2 FOR UPDATE",
            model_name, model_version,
        )
        assert row is not None
        return (WindowCursor(row["window_seq"], row["row_count"], row["started_at"]),
                DriftState(row["in_drift"], row["last_alert_at"]))

    async def save_cursor(self, model_name: str, model_version: int, cursor: WindowCursor,
                          state: DriftState) -> None:
        await self.conn.execute(
            "UPDATE window_cursors SET window_seq = $3, row_count = $4, started_at = $5, in_drift = $6, "
            "last_alert_at = $7 WHERE model_name = $1 AND model_version = $2",
            model_name, model_version, cursor.window_seq, cursor.rows, cursor.started_at,
            state.in_drift, state.last_alert_at,
        )

    async def unseen(self, model_name: str, model_version: int, prediction_ids: Sequence[str]) -> set[str]:
        seen = await self.conn.fetch(
            "SELECT prediction_id FROM window_rows WHERE model_name = $1 AND model_version = $2 "
            "AND prediction_id = ANY($3::text[])",
            model_name, model_version, list(prediction_ids),
        )
        return set(prediction_ids) - {row["prediction_id"] for row in seen}

    async def add_rows(self, model_name: str, model_version: int, rows: Sequence[WindowRow]) -> None:
        if not rows:
            return
        # COPY: one round trip for the whole batch (ids were checked under the cursor lock).
        await self.conn.copy_records_to_table(
            "window_rows",
            records=[(model_name, model_version, r.prediction_id, r.window_seq, r.served_at,
                      json.dumps(r.inputs, separators=(",", ":"))) for r in rows],
            columns=["model_name", "model_version", "prediction_id", "window_seq", "served_at", "inputs"],
        )

    async def window_rows(self, model_name: str, model_version: int, window_seq: int) -> list[WindowRow]:
        rows = await self.conn.fetch(
            "SELECT prediction_id, window_seq, served_at, inputs FROM window_rows "
            "WHERE model_name = $1 AND model_version = $2 AND window_seq = $3 ORDER BY served_at, prediction_id",
            model_name, model_version, window_seq,
        )
        return [WindowRow(r["prediction_id"], r["window_seq"], r["served_at"], json.loads(r["inputs"])) for r in rows]

    async def save_window(self, record: WindowRecord) -> None:
        key = (record.model_name, record.model_version, record.window_seq)
        await self.conn.execute(
            """INSERT INTO windows (model_name, model_version, window_seq, status, closed_by, row_count,
                   window_start, window_end, drift_share, drift_share_threshold, dataset_drift,
                   drifted_features, alert_id, evaluated_at, skipped)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
               ON CONFLICT (model_name, model_version, window_seq) DO UPDATE SET
                   status = EXCLUDED.status, closed_by = EXCLUDED.closed_by, row_count = EXCLUDED.row_count,
                   window_start = EXCLUDED.window_start, window_end = EXCLUDED.window_end,
                   drift_share = EXCLUDED.drift_share, drift_share_threshold = EXCLUDED.drift_share_threshold,
                   dataset_drift = EXCLUDED.dataset_drift, drifted_features = EXCLUDED.drifted_features,
                   alert_id = EXCLUDED.alert_id, evaluated_at = EXCLUDED.evaluated_at,
                   skipped = EXCLUDED.skipped""",
            *key, record.status, record.closed_by, record.rows, record.window_start, record.window_end,
            record.drift_share, record.drift_share_threshold, record.dataset_drift,
            list(record.drifted_features), record.alert_id, record.evaluated_at,
            json.dumps([{"feature": s.feature, "descriptor": s.descriptor, "reason": s.reason}
                        for s in record.skipped], separators=(",", ":")),
        )
        await self.conn.execute(
            "DELETE FROM feature_drift WHERE model_name = $1 AND model_version = $2 AND window_seq = $3", *key
        )
        if record.features:
            await self.conn.executemany(
                """INSERT INTO feature_drift (model_name, model_version, window_seq, feature, kind, test_name,
                       statistic, p_value, threshold, drifted, reference_rows, current_rows, descriptor)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
                [(*key, f.feature, f.kind.value, f.test.value, f.statistic, f.p_value, f.threshold, f.drifted,
                  f.reference_rows, f.current_rows, f.descriptor) for f in record.features],
            )

    async def pending_windows(self, model_name: str, model_version: int) -> list[WindowRecord]:
        rows = await self.conn.fetch(
            "SELECT * FROM windows WHERE model_name = $1 AND model_version = $2 AND status = $3 "
            "ORDER BY window_seq",
            model_name, model_version, WindowStatus.PENDING,
        )
        return [_record(row) for row in rows]

    async def profile(self, model_name: str, model_version: int) -> StoredProfile | None:
        row = await self.conn.fetchrow(
            f"SELECT {_PROFILE_COLUMNS} FROM reference_profiles WHERE model_name = $1 AND model_version = $2",
            model_name, model_version,
        )
        return None if row is None else _stored_profile(row)

    async def profile_digest(self, model_name: str, model_version: int) -> str | None:
        digest: str | None = await self.conn.fetchval(
            "SELECT sha256 FROM reference_profiles WHERE model_name = $1 AND model_version = $2",
            model_name, model_version,
        )
        return digest

    async def save_profile(self, stored: StoredProfile) -> None:
        profile = stored.profile
        await self.conn.execute(
            """INSERT INTO reference_profiles (model_name, model_version, profile, sha256, source,
                   feature_view, label)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (model_name, model_version) DO UPDATE SET profile = EXCLUDED.profile,
                   sha256 = EXCLUDED.sha256, source = EXCLUDED.source, feature_view = EXCLUDED.feature_view,
                   label = EXCLUDED.label, created_at = now()""",
            profile.model_name, profile.model_version, encode_profile(profile), stored.sha256, stored.source,
            stored.feature_view, stored.label,
        )

    async def lock_retraining(self, model_name: str) -> datetime | None:
        value: datetime | None = await self.conn.fetchval(
            "SELECT last_requested_at FROM retraining WHERE model_name = $1 FOR UPDATE", model_name
        )
        return value

    async def save_retraining(self, model_name: str, at: datetime, request_id: str) -> None:
        await self.conn.execute(
            """INSERT INTO retraining (model_name, last_requested_at, last_request_id) VALUES ($1, $2, $3)
               ON CONFLICT (model_name) DO UPDATE SET last_requested_at = EXCLUDED.last_requested_at,
                   last_request_id = EXCLUDED.last_request_id""",
            model_name, at, request_id,
        )

    async def save_alert(self, *, alert_id: str, model_name: str, model_version: int, window_seq: int,
                         detected_at: datetime, training_request_id: str | None, event: bytes) -> None:
        await self.conn.execute(
            """INSERT INTO alerts (alert_id, model_name, model_version, window_seq, detected_at,
                   training_request_id, event)
               VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (alert_id) DO NOTHING""",
            alert_id, model_name, model_version, window_seq, detected_at, training_request_id, event,
        )

    async def add_events(self, messages: Sequence[OutboxMessage]) -> None:
        await add_events(self.conn, [OutboxEvent(m.topic, m.payload, m.key, m.event_id) for m in messages])

    async def prune_rows(self, model_name: str, model_version: int, before_window: int) -> None:
        await self.conn.execute(
            "DELETE FROM window_rows WHERE model_name = $1 AND model_version = $2 AND window_seq < $3",
            model_name, model_version, before_window,
        )


class PostgresStore(Store):
    """:class:`Store` on an asyncpg pool whose search path starts with the ``monitor`` schema."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield PostgresTransaction(conn)

    async def profile(self, model_name: str, model_version: int) -> StoredProfile | None:
        async with self.pool.acquire() as conn:
            return await PostgresTransaction(conn).profile(model_name, model_version)

    async def _features(self, conn: asyncpg.Connection, keys: list[tuple[str, int, int]]) -> dict[
            tuple[str, int, int], tuple[FeatureDrift, ...]]:
        if not keys:
            return {}
        rows = await conn.fetch(
            """SELECT f.* FROM feature_drift f
               JOIN unnest($1::text[], $2::bigint[], $3::bigint[]) AS k(m, v, s)
                 ON f.model_name = k.m AND f.model_version = k.v AND f.window_seq = k.s
               ORDER BY f.model_name, f.model_version, f.window_seq, f.feature, f.descriptor""",
            [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
        )
        grouped: dict[tuple[str, int, int], list[FeatureDrift]] = {key: [] for key in keys}
        for row in rows:
            grouped[(row["model_name"], row["model_version"], row["window_seq"])].append(_feature(row))
        return {key: tuple(values) for key, values in grouped.items()}

    async def latest_window(self, model_name: str, model_version: int | None) -> WindowRecord | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                """SELECT * FROM windows WHERE model_name = $1 AND ($2::bigint IS NULL OR model_version = $2)
                     AND status = 'evaluated'
                   ORDER BY model_version DESC, window_seq DESC LIMIT 1""",
                model_name, model_version,
            )
            if row is None:
                return None
            key = (row["model_name"], row["model_version"], row["window_seq"])
            return _record(row, (await self._features(conn, [key]))[key])

    async def list_windows(self, model_name: str, model_version: int | None, since: datetime | None,
                           limit: int, offset: int) -> list[WindowRecord]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT * FROM windows WHERE model_name = $1 AND ($2::bigint IS NULL OR model_version = $2)
                     AND status = 'evaluated' AND ($3::timestamptz IS NULL OR window_end >= $3)
                   ORDER BY window_end, model_version, window_seq LIMIT $4 OFFSET $5""",
                model_name, model_version, since, limit, offset,
            )
            keys = [(r["model_name"], r["model_version"], r["window_seq"]) for r in rows]
            features = await self._features(conn, keys)
            return [_record(row, features[key]) for row, key in zip(rows, keys, strict=True)]

    async def list_alerts(self, model_name: str | None, since: datetime | None, limit: int,
                          offset: int) -> list[bytes]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT event FROM alerts WHERE ($1::text IS NULL OR model_name = $1)
                     AND ($2::timestamptz IS NULL OR detected_at >= $2)
                   ORDER BY detected_at DESC, alert_id LIMIT $3 OFFSET $4""",
                model_name, since, limit, offset,
            )
        return [bytes(row["event"]) for row in rows]

    async def rows_between(self, model_name: str, model_version: int, start: datetime, end: datetime,
                           limit: int) -> list[WindowRow]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT prediction_id, window_seq, served_at, inputs FROM window_rows
                   WHERE model_name = $1 AND model_version = $2 AND served_at >= $3 AND served_at < $4
                   ORDER BY served_at, prediction_id LIMIT $5""",
                model_name, model_version, start, end, limit,
            )
        return [WindowRow(r["prediction_id"], r["window_seq"], r["served_at"], json.loads(r["inputs"])) for r in rows]
