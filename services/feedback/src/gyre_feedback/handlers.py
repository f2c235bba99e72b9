"""The feedback service's use cases. They know nothing of gRPC, HTTP or Kafka; adapters call them.

* :meth:`FeedbackHandlers.submit` — feedback from the API: validate, store once (idempotent on
  ``feedback_id``), queue its FeedbackEvent, check the version's quality; one transaction.
* :meth:`FeedbackHandlers.ingest_feedback` — a FeedbackEvent consumed from ``feedback.events``
  (feedback UIs may publish there directly): the same, minus re-publishing it.
* :meth:`FeedbackHandlers.ingest_predictions` — a batch of ``inference.events``: store new
  predictions; feedback that was waiting for them is attributed by the join, and versions that
  gained labels have their quality checked.
* :meth:`FeedbackHandlers.version_created` — a version's feature view and label (for retraining,
  and for corrected labels).
* corrected labels go back to the feature store: a label event on ``features.events`` for the
  prediction's entity and event time (:mod:`gyre_feedback.domain.corrections`), queued with the
  feedback, or with the prediction when the feedback came first.
* reads: feedback of a prediction, quality per version over a window.

Events (FeedbackEvent, QUALITY_DROP MonitorAlert, TrainingRequest) go to the outbox in the same
transaction as the state that caused them and are published right after it commits (or by the
relay after a broker outage), with deterministic CloudEvents ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from gyre_common import errors
from gyre_common.topics import FEATURES_EVENTS, FEEDBACK_EVENTS, MONITOR_ALERTS, TRAINING_REQUESTS
from gyre_feedback.convert import (
    feedback_event,
    feedback_events,
    feedback_from_event,
    label_event,
    quality_alert,
    retraining_request,
)
from gyre_feedback.domain.corrections import label_correction
from gyre_feedback.domain.feedback import Feedback, RatingKind
from gyre_feedback.domain.prediction import Prediction
from gyre_feedback.domain.quality import (
    DropPolicy,
    QualityReport,
    alert_id,
    cooled,
    correction_event_id,
    detect_drop,
    feedback_event_id,
    training_request_id,
    version_quality,
)
from gyre_feedback.store import FeedbackTransaction, Lineage, OutboxMessage, Store

log = logging.getLogger(__name__)

DEFAULT_WINDOW = timedelta(hours=24)
"""Length of the quality window when the caller gives no start."""



class NotFoundError(errors.NotFound, LookupError):
    """What was asked for does not exist (e.g. a model no prediction was ever seen of)."""


class InvalidArgumentError(errors.InvalidArgument, ValueError):
    """A request is malformed; the message says which field and why."""


@dataclass(frozen=True)
class FeedbackConfig:
    """What the handlers need from the settings.

    Attributes:
        quality_alias: alias whose predictions the drop check watches ('' = all non-shadow).
        retrain_enabled: whether drops raise alerts and retraining requests.
        drop: the drop policy.
        promote_to_alias: TrainingRequest.promote_to_alias.
        consumer: name the idempotency claims of consumed feedback events are recorded under.
        corrections_to_features: whether corrected labels go to the feature store as label events.
    """

    quality_alias: str = "production"
    retrain_enabled: bool = True
    drop: DropPolicy = field(default_factory=DropPolicy)
    promote_to_alias: str = "production"
    consumer: str = "feedback"
    corrections_to_features: bool = True


@dataclass(frozen=True)
class SubmitResult:
    """Outcome of one submission.

    Attributes:
        feedback_id: id of the stored feedback.
        duplicate: the id was already stored; nothing changed.
        attributed: the prediction was known, so the feedback counts for its version now.
        correction_queued: a label event for the feature store was queued (a corrected label on a
            known prediction with an entity, of a version whose feature view and label are known).
    """

    feedback_id: str
    duplicate: bool
    attributed: bool = False
    correction_queued: bool = False


@dataclass
class IngestResult:
    """What one :meth:`FeedbackHandlers.ingest_predictions` call did (for logs, metrics and tests)."""

    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    alerts: list[str] = field(default_factory=list)
    training_requests: list[str] = field(default_factory=list)
    corrections: int = 0


class FeedbackHandlers:
    """The feedback service's service layer.

    Args:
        store: persistence.
        config: aliases, drop policy, debounce.
        on_events: called after a transaction that queued events commits (wakes the outbox relay,
            :class:`gyre_common.outbox.OutboxRelay`); None leaves them to the relay's next poll.
        clock: wall clock, aware UTC (default ``submitted_at``, debounce, ``detected_at``).
    """

    def __init__(self, store: Store, config: FeedbackConfig, *, on_events: Callable[[], None] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.config = config
        self._on_events = on_events or (lambda: None)
        self._clock = clock

    # -- feedback ------------------------------------------------------------------------------

    async def submit(self, feedback: Feedback) -> SubmitResult:
        """Store validated feedback once and queue its FeedbackEvent.

        Returns ``duplicate=True`` (and changes nothing) when ``feedback.feedback_id`` is stored
        already: the first write wins. The event is published after the transaction commits; a
        broker outage delays it (the relay retries) but never fails the submission.
        """
        async with self.store.transaction() as tx:
            result = await self._store_feedback(tx, feedback, publish=True)
        if not result.duplicate:
            self.wake_relay()
        return result

    async def ingest_feedback(self, event_id: str, feedback: Feedback) -> SubmitResult:
        """Store feedback consumed from ``feedback.events`` (deduplicated on ``event_id`` = ``ce_id``
        and on ``feedback_id``; our own submissions come back as duplicates)."""
        async with self.store.transaction() as tx:
            if not await tx.claim(self.config.consumer, event_id):
                return SubmitResult(feedback.feedback_id, duplicate=True)
            result = await self._store_feedback(tx, feedback, publish=False)
        self.wake_relay()
        return result

    async def _store_feedback(self, tx: FeedbackTransaction, feedback: Feedback, *, publish: bool) -> SubmitResult:
        prediction = await tx.prediction(feedback.prediction_id)
        event = feedback_event(feedback, prediction)
        payload = event.SerializeToString()
        if not await tx.insert_feedback(feedback, payload):
            return SubmitResult(feedback.feedback_id, duplicate=True, attributed=prediction is not None)
        if publish:
            await tx.add_events([OutboxMessage(FEEDBACK_EVENTS, feedback.prediction_id,
                                               feedback_event_id(feedback.feedback_id), payload)])
        queued = False
        if prediction is not None and feedback.kind is RatingKind.LABEL:
            queued = await self._queue_correction(tx, feedback, prediction)
            if self._scored(prediction):
                await self._check_quality(tx, prediction.model_name, prediction.model_version, IngestResult())
        return SubmitResult(feedback.feedback_id, duplicate=False, attributed=prediction is not None,
                            correction_queued=queued)

    async def _queue_correction(self, tx: FeedbackTransaction, feedback: Feedback, prediction: Prediction) -> bool:
        """Queue the label event of a corrected label (see :mod:`gyre_feedback.domain.corrections`);
        False when there is none to send (no entity, unknown lineage, or corrections disabled)."""
        if not self.config.corrections_to_features or not prediction.entity_id:
            return False
        lineage = await tx.lineage(prediction.model_name, prediction.model_version)
        correction = label_correction(feedback, prediction, lineage.feature_view if lineage else "",
                                      lineage.label if lineage else "", self._clock())
        if correction is None:
            log.info("corrected label %s not sent to the feature store: the feature view and label of %s v%d "
                     "are unknown (no VERSION_CREATED with lineage seen on registry.events)",
                     feedback.feedback_id, prediction.model_name, prediction.model_version)
            return False
        await tx.add_events([OutboxMessage(FEATURES_EVENTS, correction.entity_id,
                                           correction_event_id(feedback.feedback_id),
                                           label_event(correction).SerializeToString())])
        return True

    # -- predictions ---------------------------------------------------------------------------

    async def ingest_predictions(self, predictions: Sequence[Prediction]) -> IngestResult:
        """Store a batch of predictions (deduplicated on ``prediction_id``) in one transaction, then
        check the quality of every watched version whose new predictions already had labels."""
        result = IngestResult()
        valid: dict[str, Prediction] = {}
        for prediction in predictions:
            if not prediction.prediction_id or not prediction.model_name or prediction.model_version <= 0:
                result.invalid += 1
            elif prediction.prediction_id in valid:
                result.duplicates += 1
            else:
                valid[prediction.prediction_id] = prediction
        if not valid:
            return result
        async with self.store.transaction() as tx:
            new_ids = await tx.insert_predictions(list(valid.values()))
            result.stored = len(new_ids)
            result.duplicates += len(valid) - len(new_ids)
            # Corrections given before their prediction arrived: the newest per prediction goes now.
            waiting = [valid[p] for p in new_ids if valid[p].entity_id]
            if waiting and self.config.corrections_to_features:
                latest = {f.prediction_id: f for f in map(feedback_from_event, feedback_events(
                    await tx.labelled_feedback([p.prediction_id for p in waiting])))}
                for prediction in waiting:
                    feedback = latest.get(prediction.prediction_id)
                    if feedback is not None and await self._queue_correction(tx, feedback, prediction):
                        result.corrections += 1
            for model, version in await tx.versions_with_labels(new_ids, self.config.quality_alias):
                await self._check_quality(tx, model, version, result)
        if result.alerts or result.corrections:
            self.wake_relay()
        return result

    async def version_created(self, event_id: str, model_name: str, model_version: int, lineage: Lineage) -> bool:
        """Remember a new version's feature view and label; False for a repeated event."""
        async with self.store.transaction() as tx:
            if not await tx.claim(self.config.consumer + "-registry", event_id):
                return False
            await tx.save_lineage(model_name, model_version, lineage)
        return True

    # -- quality -------------------------------------------------------------------------------

    def _scored(self, prediction: Prediction) -> bool:
        alias = self.config.quality_alias
        return not prediction.shadow and (not alias or prediction.alias == alias)

    async def _check_quality(self, tx: FeedbackTransaction, model: str, version: int, result: IngestResult) -> None:
        """Raise a QUALITY_DROP alert (and a retraining request) when the version's recent labels
        show a drop and the model's cooldown is over. Runs inside the caller's transaction."""
        if not self.config.retrain_enabled:
            return
        policy = self.config.drop
        outcomes = await tx.recent_outcomes(model, version, self.config.quality_alias, policy.window)
        drop = detect_drop(outcomes, policy)
        if drop is None:
            return
        now = self._clock()
        if not cooled(await tx.lock_quality_alerts(model), now, policy.cooldown_s):
            return
        new_alert_id = alert_id(model, version, drop.newest_feedback_id)
        alert = quality_alert(alert_id=new_alert_id, model_name=model, model_version=version, drop=drop,
                              policy=policy, detected_at=now)
        await tx.add_events([OutboxMessage(MONITOR_ALERTS, model, new_alert_id, alert.SerializeToString())])
        result.alerts.append(new_alert_id)
        request_id: str | None = None
        lineage = await tx.lineage(model, version)
        if lineage is not None and lineage.feature_view and lineage.label:
            request_id = training_request_id(model, version, drop.newest_feedback_id)
            request = retraining_request(request_id=request_id, alert=alert, drop=drop, policy=policy,
                                         feature_view=lineage.feature_view, label=lineage.label,
                                         promote_to_alias=self.config.promote_to_alias, requested_at=now)
            await tx.add_events([OutboxMessage(TRAINING_REQUESTS, model, request_id, request.SerializeToString())])
            result.training_requests.append(request_id)
        await tx.save_quality_alert(model, now, new_alert_id, request_id)
        log.warning("quality drop of %s v%d: accuracy %.3f over the last %d labels (threshold %.3f)%s",
                    model, version, drop.accuracy, drop.samples, policy.threshold,
                    "; retraining requested" if request_id else
                    "; no retraining request: the version's feature view and label are unknown "
                    "(no VERSION_CREATED seen on registry.events)")

    # -- reads ---------------------------------------------------------------------------------

    async def prediction_feedback(self, prediction_id: str) -> list[bytes]:
        """Feedback on one prediction, oldest first (empty for an unknown id): each as the
        serialized ``FeedbackEvent`` stored and published when it was given (the transports
        decode them with ``convert.feedback_events``).

        Raises:
            InvalidArgumentError: empty ``prediction_id``.
        """
        if not prediction_id:
            raise InvalidArgumentError("prediction_id must not be empty")
        return list(await self.store.prediction_feedback(prediction_id))

    async def quality(self, model_name: str, model_version: int | None = None, window_start: datetime | None = None,
                      window_end: datetime | None = None) -> QualityReport:
        """Quality per version of ``model_name`` over predictions served in [start, end).

        Args:
            model_version: only this version; None or 0 means every version in the window.
            window_start: aware; None means 24 hours before the end.
            window_end: aware; None means now.

        Raises:
            InvalidArgumentError: empty model name, negative version, naive times, end not after start.
            NotFoundError: no prediction of the model was ever seen.
        """
        if not model_name:
            raise InvalidArgumentError("model_name must not be empty")
        if model_version is not None and model_version < 0:
            raise InvalidArgumentError(f"model_version must not be negative, got {model_version}")
        for name, moment in (("window_start", window_start), ("window_end", window_end)):
            if moment is not None and moment.tzinfo is None:
                raise InvalidArgumentError(f"{name} must carry a time zone (UTC)")
        end = (window_end or self._clock()).astimezone(UTC)
        start = (window_start.astimezone(UTC) if window_start is not None else end - DEFAULT_WINDOW)
        if end <= start:
            raise InvalidArgumentError(f"window_end ({end.isoformat()}) must be after window_start "
                                       f"({start.isoformat()})")
        if not await self.store.model_seen(model_name):
            raise NotFoundError(f"no prediction of model {model_name!r} was seen")
        counts = await self.store.quality(model_name, model_version or None, start, end)
        return QualityReport(model_name, start, end, [version_quality(c) for c in counts])

    # -- outbox and housekeeping ---------------------------------------------------------------

    def wake_relay(self) -> None:
        """Ask the outbox relay to publish now (events were just committed)."""
        self._on_events()

    async def prune(self, retention: timedelta) -> int:
        """Delete predictions served before now - ``retention`` (and old idempotency claims)."""
        removed = await self.store.prune(self._clock() - retention)
        if removed:
            log.info("pruned %d predictions older than %s", removed, retention)
        return removed
