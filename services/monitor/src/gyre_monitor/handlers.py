"""The monitor's use cases. They know nothing of gRPC, HTTP or Kafka; adapters call them.

* :meth:`MonitorHandlers.ingest` — a batch of served predictions: dedupe, window, test closed
  windows, raise alerts and debounced retraining requests; all in one transaction, then publish.
* :meth:`MonitorHandlers.set_reference_profile` / :meth:`version_created` — store a version's
  profile (from the API, or from the registry's VERSION_CREATED via the artifact store) and test
  the windows that were waiting for it.
* reads: profiles, the latest drift, drift over time, alerts, on-demand reports.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from gyre_common import errors
from gyre_common.profile import ProfileError, ReferenceProfile, with_version
from gyre_common.profile_wire import decode_profile, encode_profile
from gyre_common.topics import MONITOR_ALERTS, TRAINING_REQUESTS
from gyre_monitor.convert import drift_alert, retraining_request
from gyre_monitor.domain.alerts import (
    DriftState,
    alert_id,
    next_state,
    should_alert,
    should_request_retraining,
    training_request_id,
)
from gyre_monitor.domain.drift import DatasetDrift, DriftOptions, DriftReport, PreparedReference, window_columns
from gyre_monitor.domain.predictions import Prediction
from gyre_monitor.domain.profiles import check_reference_profile
from gyre_monitor.domain.text_drift import Embedder
from gyre_monitor.domain.windows import ClosedBy, ClosedWindow, WindowPolicy, assign_windows
from gyre_monitor.store import (
    MonitorTransaction,
    OutboxMessage,
    Store,
    StoredProfile,
    WindowRecord,
    WindowRow,
    WindowStatus,
)

log = logging.getLogger(__name__)

ReadArtifact = Callable[[str, str], bytes]
"""Reads an artifact by (uri, sha256), verifying the digest (blocking; run in a thread)."""
RenderHtml = Callable[[ReferenceProfile, Sequence[WindowRow]], str]
"""Renders Evidently's HTML drift report of rows against a profile (blocking, seconds)."""

# A window's end is exclusive: one microsecond after its last prediction.
_TICK = timedelta(microseconds=1)


class NotFoundError(errors.NotFound, LookupError):
    """The model version, profile or window asked for does not exist."""


class InvalidArgumentError(errors.InvalidArgument, ValueError):
    """A request is malformed; the message says which field and why."""


class FailedPreconditionError(errors.FailedPrecondition, RuntimeError):
    """The request is well-formed but cannot be answered in the current state (e.g. an empty window)."""


@dataclass(frozen=True)
class MonitorConfig:
    """What the handlers need from the settings."""

    window: WindowPolicy
    drift: DriftOptions = field(default_factory=DriftOptions)
    cooldown_s: float = 3600.0
    keep_windows: int = 20
    promote_to_alias: str = "production"
    profile_cache_size: int = 64
    max_report_rows: int = 50_000


@dataclass
class IngestResult:
    """What one :meth:`MonitorHandlers.ingest` call did (for metrics, logs and tests)."""

    accepted: int = 0
    duplicates: int = 0
    shadow: int = 0
    invalid: int = 0
    windows_closed: int = 0
    alerts: list[str] = field(default_factory=list)
    training_requests: list[str] = field(default_factory=list)


class MonitorHandlers:
    """The monitor's service layer.

    Args:
        store: persistence.
        config: windows, drift options, debounce, retention.
        on_events: called after a transaction that queued events commits (wakes the outbox relay,
            :class:`gyre_common.outbox.OutboxRelay`); None leaves them to the relay's next poll.
        read_artifact: reads a profile from the artifact store (for VERSION_CREATED).
        render_html: renders Evidently's report (on-demand reports with HTML).
        embedder: embeds texts for text features' embedding drift (``gyre_ml``, the ``text`` extra);
            None reports it as not checked.
        clock: wall clock, aware UTC (``detected_at``/``requested_at``); debouncing uses event time.
    """

    def __init__(self, store: Store, config: MonitorConfig, *, on_events: Callable[[], None] | None = None,
                 read_artifact: ReadArtifact | None = None, render_html: RenderHtml | None = None,
                 embedder: Embedder | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.config = config
        self._on_events = on_events or (lambda: None)
        self._read_artifact = read_artifact
        self._render_html = render_html
        self._embedder = embedder
        self._clock = clock
        self._prepared: OrderedDict[tuple[str, int, str], PreparedReference] = OrderedDict()
        self._stored: OrderedDict[tuple[str, int, str], StoredProfile] = OrderedDict()

    # -- ingest --------------------------------------------------------------------------------

    async def ingest(self, predictions: Sequence[Prediction]) -> IngestResult:
        """Apply a batch of served predictions (any models, in arrival order), then publish.

        Shadow predictions are left out: their inputs are the same rows the primary model served,
        so counting them would test the same traffic twice. Duplicates (same model, version and
        prediction id, within the batch or already stored) are ignored. Predictions without a
        model name, version or id are counted as invalid and skipped.

        Raises:
            asyncpg / database errors: nothing was applied; the caller retries the batch.
        """
        result = IngestResult()
        groups: dict[tuple[str, int], list[Prediction]] = {}
        for prediction in predictions:
            if prediction.shadow:
                result.shadow += 1
            elif not prediction.model_name or prediction.model_version <= 0 or not prediction.prediction_id:
                result.invalid += 1
            else:
                groups.setdefault((prediction.model_name, prediction.model_version), []).append(prediction)
        if groups:
            async with self.store.transaction() as tx:
                # A fixed lock order keeps two replicas with overlapping batches from deadlocking.
                for (model, version) in sorted(groups):
                    await self._ingest_version(tx, model, version, groups[(model, version)], result)
        if result.alerts or result.training_requests:
            self._on_events()
        return result

    async def _ingest_version(self, tx: MonitorTransaction, model: str, version: int,
                              predictions: list[Prediction], result: IngestResult) -> None:
        unique: dict[str, Prediction] = {}
        for prediction in predictions:
            unique.setdefault(prediction.prediction_id, prediction)
        cursor, state = await tx.lock_cursor(model, version)
        unseen = await tx.unseen(model, version, list(unique))
        fresh = [p for p in unique.values() if p.prediction_id in unseen]
        result.duplicates += len(predictions) - len(fresh)
        result.accepted += len(fresh)
        if not fresh:
            return
        assignment = assign_windows(cursor, [p.served_at for p in fresh], self.config.window)
        await tx.add_rows(model, version, [
            WindowRow(p.prediction_id, seq, p.served_at, dict(p.inputs))
            for p, seq in zip(fresh, assignment.windows, strict=True)
        ])
        stored = await self._profile(tx, model, version) if assignment.closed else None
        for closed in assignment.closed:
            state = await self._close_window(tx, model, version, closed, state, stored, result)
        await tx.save_cursor(model, version, assignment.cursor, state)
        if assignment.closed:
            result.windows_closed += len(assignment.closed)
            await tx.prune_rows(model, version, assignment.cursor.window_seq - self.config.keep_windows)

    async def _close_window(self, tx: MonitorTransaction, model: str, version: int, closed: ClosedWindow,
                            state: DriftState, stored: StoredProfile | None, result: IngestResult) -> DriftState:
        rows = await tx.window_rows(model, version, closed.window_seq)
        start, end = rows[0].served_at, max(r.served_at for r in rows) + _TICK
        record = WindowRecord(model, version, closed.window_seq, WindowStatus.PENDING, closed.closed_by.value,
                              len(rows), start, end)
        if closed.closed_by is ClosedBy.TIME and len(rows) < self.config.window.min_rows:
            await tx.save_window(replace(record, status=WindowStatus.TOO_SMALL))
            return state
        if stored is None:
            await tx.save_window(record)
            return state
        return await self._evaluate(tx, record, rows, state, stored, result)

    async def _evaluate(self, tx: MonitorTransaction, record: WindowRecord, rows: Sequence[WindowRow],
                        state: DriftState, stored: StoredProfile, result: IngestResult) -> DriftState:
        model, version, seq = record.model_name, record.model_version, record.window_seq
        columns = window_columns(stored.profile, [row.inputs for row in rows])
        drift = await self._detect(stored, columns, len(rows))
        at = record.window_end
        alerted = should_alert(state, drift.dataset_drift, at, self.config.cooldown_s)
        new_alert_id: str | None = None
        if alerted:
            now = self._clock()
            new_alert_id = alert_id(model, version, seq)
            alert = drift_alert(alert_id=new_alert_id, model_name=model, model_version=version,
                                window_start=record.window_start, window_end=record.window_end, drift=drift,
                                detected_at=now)
            request_id: str | None = None
            if should_request_retraining(await tx.lock_retraining(model), at, self.config.cooldown_s):
                request_id = training_request_id(model, version, seq)
                request = retraining_request(request_id=request_id, alert=alert, window_seq=seq,
                                             feature_view=stored.feature_view, label=stored.label,
                                             promote_to_alias=self.config.promote_to_alias, requested_at=now)
                await tx.save_retraining(model, at, request_id)
            payload = alert.SerializeToString()
            await tx.save_alert(alert_id=new_alert_id, model_name=model, model_version=version, window_seq=seq,
                                detected_at=now, training_request_id=request_id, event=payload)
            await tx.add_events([OutboxMessage(MONITOR_ALERTS, model, new_alert_id, payload)])
            result.alerts.append(new_alert_id)
            if request_id is not None:
                await tx.add_events([OutboxMessage(TRAINING_REQUESTS, model, request_id, request.SerializeToString())])
                result.training_requests.append(request_id)
            log.warning("drift on %s v%d window %d: %s (share %.2f)%s", model, version, seq,
                        ", ".join(drift.drifted_checks), drift.drift_share,
                        "; retraining requested" if request_id else "; retraining debounced")
        await tx.save_window(WindowRecord(
            model, version, seq, WindowStatus.EVALUATED, record.closed_by, record.rows, record.window_start,
            record.window_end, drift.drift_share, drift.drift_share_threshold, drift.dataset_drift,
            tuple(drift.drifted_features), new_alert_id, self._clock(), drift.features, drift.skipped,
        ))
        return next_state(state, drift.dataset_drift, at, alerted)

    # -- reference profiles --------------------------------------------------------------------

    async def set_reference_profile(self, profile: ReferenceProfile, *, source: str, sha256: str = "",
                                    feature_view: str = "", label: str = "") -> tuple[StoredProfile, IngestResult]:
        """Store (or replace) a version's profile, then test the windows that waited for it.

        Idempotent: storing the same profile again changes nothing but its ``created_at``.

        Raises:
            ProfileError: the profile names no version (0: only a VERSION_CREATED event can number
                it), or one the monitor cannot use (:func:`~gyre_monitor.domain.profiles.check_reference_profile`:
                no features, too many, no rows).
        """
        if profile.model_version <= 0:
            raise ProfileError(f"model_version must be positive, got {profile.model_version}")
        check_reference_profile(profile)
        digest = sha256 or hashlib.sha256(encode_profile(profile)).hexdigest()
        stored = StoredProfile(profile, digest, source, feature_view, label)
        result = IngestResult()
        model, version = profile.model_name, profile.model_version
        async with self.store.transaction() as tx:
            # The cursor lock serialises this with ingest of the same version.
            cursor, state = await tx.lock_cursor(model, version)
            await tx.save_profile(stored)
            for record in await tx.pending_windows(model, version):
                rows = await tx.window_rows(model, version, record.window_seq)
                if not rows:  # pruned while waiting: nothing left to test
                    continue
                state = await self._evaluate(tx, record, rows, state, stored, result)
            await tx.save_cursor(model, version, cursor, state)
        if result.alerts:
            self._on_events()
        saved = await self.store.profile(model, version)
        return (saved or stored), result

    async def version_created(self, *, model_name: str, model_version: int, profile_uri: str,
                              profile_sha256: str, feature_view: str = "", label: str = "") -> bool:
        """Load a new version's profile from the artifact store and store it.

        Returns False (and does nothing) when the event names no profile or the same profile is
        stored already (a redelivered event).

        Raises:
            ProfileError: the artifact is not a valid profile, or one of another model or version.
                A profile with ``model_version = 0`` (written before registration, as the trainer
                does) is the profile of the version whose lineage points at it: it takes the
                event's version number.
            gyre_common.artifacts errors (not found, digest mismatch): the caller retries / dead-letters.
        """
        if not profile_uri:
            log.info("version %s v%d came without a reference profile; waiting for SetReferenceProfile",
                     model_name, model_version)
            return False
        existing = await self.store.profile(model_name, model_version)
        if existing is not None and existing.sha256 == profile_sha256:
            return False
        if self._read_artifact is None:
            raise RuntimeError("no artifact store configured: cannot load reference profiles")
        data = await asyncio.to_thread(self._read_artifact, profile_uri, profile_sha256)
        try:
            profile = with_version(decode_profile(data), model_name, model_version)
        except ProfileError as exc:
            raise ProfileError(f"artifact {profile_uri}: {exc}") from None
        await self.set_reference_profile(profile, source="registry.events", sha256=profile_sha256,
                                         feature_view=feature_view, label=label)
        return True

    async def get_reference_profile(self, model_name: str, model_version: int) -> StoredProfile:
        """The stored profile. Raises NotFoundError."""
        _check_version(model_name, model_version)
        stored = await self.store.profile(model_name, model_version)
        if stored is None:
            raise NotFoundError(f"{model_name} v{model_version} has no reference profile")
        return stored

    # -- reads ---------------------------------------------------------------------------------

    async def latest_drift(self, model_name: str, model_version: int | None = None) -> WindowRecord:
        """The latest evaluated window of a model (optionally of one version). Raises NotFoundError."""
        if not model_name:
            raise InvalidArgumentError("model_name must not be empty")
        record = await self.store.latest_window(model_name, model_version)
        if record is None:
            which = model_name if model_version is None else f"{model_name} v{model_version}"
            raise NotFoundError(f"no evaluated drift window for {which} yet")
        return record

    async def list_windows(self, model_name: str, model_version: int | None, since: datetime | None,
                           limit: int, offset: int) -> list[WindowRecord]:
        """Evaluated windows, oldest first."""
        if not model_name:
            raise InvalidArgumentError("model_name must not be empty")
        return await self.store.list_windows(model_name, model_version, since, limit, offset)

    async def list_alerts(self, model_name: str | None, since: datetime | None, limit: int,
                          offset: int) -> list[bytes]:
        """Alerts (binary MonitorAlert), newest first."""
        return await self.store.list_alerts(model_name or None, since, limit, offset)

    async def drift_report(self, model_name: str, model_version: int, start: datetime | None,
                           end: datetime | None, include_html: bool = False) -> DriftReport:
        """Drift of the predictions served in [start, end) (default: the last hour up to now).

        Only predictions of the last ``keep_windows`` windows are kept, so older ranges are partial.

        Raises:
            InvalidArgumentError: bad name/version, end not after start, or more than
                ``max_report_rows`` predictions in the range.
            NotFoundError: the version has no reference profile.
            FailedPreconditionError: no prediction in the range.
        """
        _check_version(model_name, model_version)
        end = end or self._clock()
        start = start or end - timedelta(hours=1)
        if end <= start:
            raise InvalidArgumentError("window_end must be after window_start")
        stored = await self.get_reference_profile(model_name, model_version)
        limit = self.config.max_report_rows
        rows = await self.store.rows_between(model_name, model_version, start, end, limit + 1)
        if len(rows) > limit:
            raise InvalidArgumentError(f"more than {limit} predictions in the range; narrow it")
        if not rows:
            raise FailedPreconditionError(f"no prediction of {model_name} v{model_version} in the range")
        columns = window_columns(stored.profile, [row.inputs for row in rows])
        drift = await self._detect(stored, columns, len(rows))
        html = ""
        if include_html:
            if self._render_html is None:
                raise FailedPreconditionError("HTML reports are not available in this deployment")
            html = await asyncio.to_thread(self._render_html, stored.profile, rows)
        return DriftReport(model_name, model_version, start, end, drift, html)

    # -- helpers -------------------------------------------------------------------------------

    async def _profile(self, tx: MonitorTransaction, model: str, version: int) -> StoredProfile | None:
        # Windows close often; fetch and decode the profile only when its digest is not cached.
        digest = await tx.profile_digest(model, version)
        if digest is None:
            return None
        cached = self._stored.get((model, version, digest))
        if cached is not None:
            return cached
        stored = await tx.profile(model, version)
        if stored is not None:
            self._stored[(model, version, stored.sha256)] = stored
            while len(self._stored) > self.config.profile_cache_size:
                self._stored.popitem(last=False)
        return stored

    async def _detect(self, stored: StoredProfile, columns: dict[str, list[object]], rows: int) -> DatasetDrift:
        prepared = self._prepare(stored)
        if not prepared.has_text:
            return prepared.detect(columns, rows, self.config.drift)
        # Text features embed up to max_embedded_texts texts each (seconds on a CPU): off the event
        # loop. Nothing is cached per text; the window's texts are all there is.
        return await asyncio.to_thread(prepared.detect, columns, rows, self.config.drift, self._embedder)

    def _prepare(self, stored: StoredProfile) -> PreparedReference:
        key = (stored.profile.model_name, stored.profile.model_version, stored.sha256)
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = PreparedReference(stored.profile)
            while len(self._prepared) > self.config.profile_cache_size:
                self._prepared.popitem(last=False)
        else:
            self._prepared.move_to_end(key)
        return prepared


def _check_version(model_name: str, model_version: int) -> None:
    if not model_name:
        raise InvalidArgumentError("model_name must not be empty")
    if model_version <= 0:
        raise InvalidArgumentError(f"model_version must be positive, got {model_version}")
