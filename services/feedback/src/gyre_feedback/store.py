"""Persistence of the feedback service: predictions, feedback, versions' lineage, debounce state, outbox.

Everything one use case changes happens in one :meth:`Store.transaction` (the consumed
event's idempotency claim, the rows, the outbox events), so a crash leaves all of it or none of it,
and Kafka offsets are committed only after the transaction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from gyre_common.bus import claim_event
from gyre_common.outbox import OutboxEvent, add_events
from gyre_feedback.domain.feedback import Feedback
from gyre_feedback.domain.prediction import Prediction
from gyre_feedback.domain.quality import LabelOutcome, QualityCounts


@dataclass(frozen=True)
class OutboxMessage:
    """An event waiting to be published: base topic, record key, CloudEvents id, protobuf bytes."""

    topic: str
    key: str
    event_id: str
    payload: bytes


@dataclass(frozen=True)
class Lineage:
    """What a retraining request of a version must name (from the registry's VERSION_CREATED)."""

    feature_view: str
    label: str


class FeedbackTransaction(ABC):
    """The writes and reads of one use case, inside one database transaction."""

    @abstractmethod
    async def claim(self, consumer: str, event_id: str) -> bool:
        """True the first time ``consumer`` processes ``event_id`` (the ``ce_id``), False for a repeat."""

    @abstractmethod
    async def prediction(self, prediction_id: str) -> Prediction | None:
        """The stored prediction, if its inference event arrived."""

    @abstractmethod
    async def insert_feedback(self, feedback: Feedback, event: bytes) -> bool:
        """Store feedback (``event``: its binary FeedbackEvent); False when its id is already stored."""

    @abstractmethod
    async def insert_predictions(self, predictions: Sequence[Prediction]) -> list[str]:
        """Store predictions not seen before (one statement); returns the ids that were new."""

    @abstractmethod
    async def labelled_feedback(self, prediction_ids: Sequence[str]) -> list[bytes]:
        """Binary FeedbackEvents of the corrected labels given on these predictions, oldest first
        (by submission time) — feedback that arrived before its prediction."""

    @abstractmethod
    async def versions_with_labels(self, prediction_ids: Sequence[str], alias: str) -> list[tuple[str, int]]:
        """(model, version) pairs of those predictions that have labelled feedback, scored ones only
        (not shadow; served under ``alias`` unless it is '')."""

    @abstractmethod
    async def recent_outcomes(self, model_name: str, model_version: int, alias: str,
                              limit: int) -> list[LabelOutcome]:
        """The newest ``limit`` labelled feedbacks of a version's scored predictions, newest first
        (by submission time), each with whether the prediction equals the label."""

    @abstractmethod
    async def lock_quality_alerts(self, model_name: str) -> datetime | None:
        """Lock the model's debounce row until commit; returns its last alert time (None: never)."""

    @abstractmethod
    async def save_quality_alert(self, model_name: str, at: datetime, alert_id: str,
                                 training_request_id: str | None) -> None:
        """Record the model's latest quality-drop alert (and the retraining request it caused)."""

    @abstractmethod
    async def lineage(self, model_name: str, model_version: int) -> Lineage | None:
        """The version's feature view and label, if the registry announced it."""

    @abstractmethod
    async def save_lineage(self, model_name: str, model_version: int, lineage: Lineage) -> None:
        """Store (or replace) a version's feature view and label."""

    @abstractmethod
    async def add_events(self, messages: Sequence[OutboxMessage]) -> None:
        """Add events to the outbox (a repeated ``event_id`` is ignored)."""


class Store(ABC):
    """Where the feedback service keeps its state."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[FeedbackTransaction]:
        """``async with store.transaction() as tx``: commits on exit, rolls back on an exception."""

    @abstractmethod
    async def prediction_feedback(self, prediction_id: str) -> list[bytes]:
        """Binary FeedbackEvents on one prediction, oldest first."""

    @abstractmethod
    async def model_seen(self, model_name: str) -> bool:
        """Whether any prediction of the model was ever stored (and not yet pruned)."""

    @abstractmethod
    async def quality(self, model_name: str, model_version: int | None, start: datetime,
                      end: datetime) -> list[QualityCounts]:
        """Per-version sums over non-shadow predictions served in [start, end) and their feedback,
        newest version first; versions without predictions in the window are left out."""

    @abstractmethod
    async def prune(self, before: datetime) -> int:
        """Delete predictions served and events consumed before ``before`` (the outbox relay prunes
        its own published rows);
        returns how many predictions went."""


# -- PostgreSQL ------------------------------------------------------------------------------------


class PostgresTransaction(FeedbackTransaction):
    """:class:`FeedbackTransaction` on one asyncpg connection inside a transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def claim(self, consumer: str, event_id: str) -> bool:
        return await claim_event(self.conn, consumer, event_id)

    async def prediction(self, prediction_id: str) -> Prediction | None:
        row = await self.conn.fetchrow(
            "SELECT prediction_id, model_name, model_version, alias, served_at, shadow, predicted, entity_id,"
            " event_time FROM predictions WHERE prediction_id = $1",
            prediction_id,
        )
        return None if row is None else Prediction(**dict(row))

    async def insert_feedback(self, feedback: Feedback, event: bytes) -> bool:
        inserted = await self.conn.fetchval(
            """INSERT INTO feedback (feedback_id, prediction_id, thumbs_up, stars, score, label, submitted_at, event)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (feedback_id) DO NOTHING RETURNING true""",
            feedback.feedback_id, feedback.prediction_id, feedback.thumbs_up, feedback.stars, feedback.score,
            feedback.canonical_label, feedback.submitted_at, event,
        )
        return bool(inserted)

    async def insert_predictions(self, predictions: Sequence[Prediction]) -> list[str]:
        if not predictions:
            return []
        rows = await self.conn.fetch(
            """INSERT INTO predictions (prediction_id, model_name, model_version, alias, served_at, shadow, predicted,
                                        entity_id, event_time)
               SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::timestamptz[],
                                    $6::boolean[], $7::text[], $8::text[], $9::timestamptz[])
               ON CONFLICT (prediction_id) DO NOTHING RETURNING prediction_id""",
            [p.prediction_id for p in predictions], [p.model_name for p in predictions],
            [p.model_version for p in predictions], [p.alias for p in predictions],
            [p.served_at for p in predictions], [p.shadow for p in predictions],
            [p.predicted for p in predictions], [p.entity_id for p in predictions],
            [p.event_time for p in predictions],
        )
        return [row["prediction_id"] for row in rows]

    async def labelled_feedback(self, prediction_ids: Sequence[str]) -> list[bytes]:
        if not prediction_ids:
            return []
        rows = await self.conn.fetch(
            """SELECT event FROM feedback WHERE prediction_id = ANY($1::text[]) AND label IS NOT NULL
               ORDER BY submitted_at, feedback_id""",
            list(prediction_ids),
        )
        return [bytes(row["event"]) for row in rows]

    async def versions_with_labels(self, prediction_ids: Sequence[str], alias: str) -> list[tuple[str, int]]:
        if not prediction_ids:
            return []
        rows = await self.conn.fetch(
            """SELECT DISTINCT p.model_name, p.model_version
               FROM predictions p JOIN feedback f ON f.prediction_id = p.prediction_id
               WHERE p.prediction_id = ANY($1::text[]) AND f.label IS NOT NULL AND NOT p.shadow
                 AND ($2 = '' OR p.alias = $2)
               ORDER BY 1, 2""",
            list(prediction_ids), alias,
        )
        return [(row["model_name"], row["model_version"]) for row in rows]

    async def recent_outcomes(self, model_name: str, model_version: int, alias: str,
                              limit: int) -> list[LabelOutcome]:
        rows = await self.conn.fetch(
            """SELECT f.feedback_id, coalesce(f.label = p.predicted, false) AS correct, p.served_at
               FROM predictions p JOIN feedback f ON f.prediction_id = p.prediction_id
               WHERE p.model_name = $1 AND p.model_version = $2 AND NOT p.shadow AND ($3 = '' OR p.alias = $3)
                 AND f.label IS NOT NULL
               ORDER BY f.submitted_at DESC, f.feedback_id DESC LIMIT $4""",
            model_name, model_version, alias, limit,
        )
        return [LabelOutcome(row["feedback_id"], row["correct"], row["served_at"]) for row in rows]

    async def lock_quality_alerts(self, model_name: str) -> datetime | None:
        await self.conn.execute(
            "INSERT INTO quality_alerts (model_name) VALUES ($1) ON CONFLICT DO NOTHING", model_name
        )
        last: datetime | None = await self.conn.fetchval(
            "SELECT last_alert_at FROM quality_alerts WHERE model_name = $1 FOR UPDATE", model_name
        )
        return last

    async def save_quality_alert(self, model_name: str, at: datetime, alert_id: str,
                                 training_request_id: str | None) -> None:
        await self.conn.execute(
            """UPDATE quality_alerts SET last_alert_at = $2, alert_id = $3, training_request_id = $4
               WHERE model_name = $1""",
            model_name, at, alert_id, training_request_id,
        )

    async def lineage(self, model_name: str, model_version: int) -> Lineage | None:
        row = await self.conn.fetchrow(
            "SELECT feature_view, label FROM model_versions WHERE model_name = $1 AND model_version = $2",
            model_name, model_version,
        )
        return None if row is None else Lineage(row["feature_view"], row["label"])

    async def save_lineage(self, model_name: str, model_version: int, lineage: Lineage) -> None:
        await self.conn.execute(
            """INSERT INTO model_versions (model_name, model_version, feature_view, label) VALUES ($1, $2, $3, $4)
               ON CONFLICT (model_name, model_version)
               DO UPDATE SET feature_view = EXCLUDED.feature_view, label = EXCLUDED.label""",
            model_name, model_version, lineage.feature_view, lineage.label,
        )

    async def add_events(self, messages: Sequence[OutboxMessage]) -> None:
        await add_events(self.conn, [OutboxEvent(m.topic, m.payload, m.key, m.event_id) for m in messages])


_QUALITY_SQL = """
WITH p AS (
    SELECT prediction_id, model_version, predicted FROM predictions
    WHERE model_name = $1 AND ($2::bigint IS NULL OR model_version = $2) AND NOT shadow
      AND served_at >= $3 AND served_at < $4
)
SELECT p.model_version,
       count(DISTINCT p.prediction_id)                                     AS predictions,
       count(f.feedback_id)                                                AS feedback,
       count(f.label)                                                      AS labelled,
       count(*) FILTER (WHERE f.label IS NOT NULL AND f.label = p.predicted) AS correct,
       coalesce(sum(f.stars), 0)                                           AS stars_sum,
       count(f.stars)                                                      AS stars_count,
       count(*) FILTER (WHERE f.thumbs_up)                                 AS thumbs_up,
       count(f.thumbs_up)                                                  AS thumbs_count,
       coalesce(sum(f.score), 0)                                           AS score_sum,
       count(f.score)                                                      AS score_count
FROM p LEFT JOIN feedback f ON f.prediction_id = p.prediction_id
GROUP BY p.model_version
ORDER BY p.model_version DESC
"""


class PostgresStore(Store):
    """:class:`Store` on an asyncpg pool whose search path starts with the ``feedback`` schema."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[FeedbackTransaction]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield PostgresTransaction(conn)

    def transaction(self) -> AbstractAsyncContextManager[FeedbackTransaction]:
        return self._transaction()

    async def prediction_feedback(self, prediction_id: str) -> list[bytes]:
        rows = await self.pool.fetch(
            "SELECT event FROM feedback WHERE prediction_id = $1 ORDER BY submitted_at, feedback_id",
            prediction_id,
        )
        return [bytes(row["event"]) for row in rows]

    async def model_seen(self, model_name: str) -> bool:
        return bool(await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM predictions WHERE model_name = $1)", model_name
        ))

    async def quality(self, model_name: str, model_version: int | None, start: datetime,
                      end: datetime) -> list[QualityCounts]:
        rows = await self.pool.fetch(_QUALITY_SQL, model_name, model_version, start, end)
        return [
            QualityCounts(
                model_version=row["model_version"], predictions=row["predictions"], feedback=row["feedback"],
                labelled=row["labelled"], correct=row["correct"], stars_sum=float(row["stars_sum"]),
                stars_count=row["stars_count"], thumbs_up=row["thumbs_up"], thumbs_count=row["thumbs_count"],
                score_sum=float(row["score_sum"]), score_count=row["score_count"],
            )
            for row in rows
        ]

    async def prune(self, before: datetime) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute("DELETE FROM predictions WHERE served_at < $1", before)
            await conn.execute("DELETE FROM processed_events WHERE processed_at < $1", before)
        return int(str(status).rsplit(" ", 1)[-1])
