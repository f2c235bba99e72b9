"""The feature store's domain: feature views, validated feature rows, online statuses, profiles.

Pure logic, no I/O and no transport types. Every timestamp is an aware ``datetime`` in UTC.

Semantics (docs/services/features.md says the same for users):

* A **feature view** names an entity key (``entity``, e.g. ``customer_id``), a typed schema of
  features and a TTL: a value older than the TTL, relative to the time it is asked for, counts as
  absent (0 seconds means values never expire).
* A **feature event** carries values of *some* features of one entity at one ``event_time``;
  features it does not name keep their earlier values (partial updates). A value without a kind
  is an explicit "missing" (null) that overwrites earlier values.
* The state of an entity **as of** a time ``t`` merges, in ``(event_time, created_time)`` order,
  every event with ``t - ttl <= event_time <= t`` (no TTL: every event up to ``t``). The
  online store is that state as of "now"; a training row at ``t`` is that state as of ``t``.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
import sys
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gyre_common import errors

Scalar = float | int | str | bool
"""A feature value: float (FLOAT), int (INT), str (STRING) or bool (BOOL)."""

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_FEATURES_PER_VIEW = 1000
MAX_STRING_VALUE_CHARS = 65_536


class ValueType(enum.StrEnum):
    """The type of a feature's values."""

    FLOAT = "float"
    INT = "int"
    STRING = "string"
    BOOL = "bool"

    @property
    def numeric(self) -> bool:
        """Whether profiles compute mean/std/min/max (FLOAT, INT) rather than top categories."""
        return self in (ValueType.FLOAT, ValueType.INT)


class FeatureStatus(enum.StrEnum):
    """Why an online value is or is not there (Feast's field statuses)."""

    PRESENT = "PRESENT"
    """A value within the TTL."""
    NULL_VALUE = "NULL_VALUE"
    """The latest event within the TTL said the value is missing."""
    NOT_FOUND = "NOT_FOUND"
    """No event ever named this feature for this entity."""
    OUTSIDE_TTL = "OUTSIDE_TTL"
    """The latest value is older than the view's TTL; it is not returned."""


class FeatureStoreError(errors.GyreError):
    """Base of the errors handlers raise; transports map them to status codes (gyre_common.errors).

    Anything not more specific is invalid input: gRPC INVALID_ARGUMENT, HTTP 422.
    """

    grpc_code = "INVALID_ARGUMENT"
    http_status = 422


class InvalidArgument(errors.InvalidArgument, FeatureStoreError):
    """The request is malformed (gRPC INVALID_ARGUMENT, HTTP 422 like FastAPI's own validation)."""

    http_status = 422


class NotFound(errors.NotFound, FeatureStoreError):
    """A named feature view or feature does not exist (gRPC NOT_FOUND, HTTP 404)."""


class TooLarge(errors.TooLarge, FeatureStoreError):
    """The request exceeds a size limit (gRPC RESOURCE_EXHAUSTED, HTTP 413)."""


class Conflict(errors.FailedPrecondition, FeatureStoreError):
    """The request contradicts stored state, e.g. changing a feature's type (FAILED_PRECONDITION, 409)."""


class InvalidFeatureEvent(FeatureStoreError):
    """A feature event that can never be stored; it goes to the dead-letter topic.

    Attributes:
        reason: machine-readable cause: ``unknown_view``, ``unknown_feature``, ``wrong_type``,
            ``missing_entity_id``, ``missing_event_time``, ``missing_feature_view``, ``no_values``,
            ``bad_value``.
        detail: human-readable explanation naming the view, feature and value.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def check_name(kind: str, name: str) -> str:
    """``name`` if it is a valid view/entity/feature name (``[a-z][a-z0-9_]*``, at most 64 chars).

    Raises:
        InvalidArgument: otherwise, naming ``kind`` ("feature view", "feature", ...).
    """
    if not _NAME.match(name or ""):
        raise InvalidArgument(
            f"{kind} name {name!r} is invalid: use lowercase letters, digits and _, start with a letter, "
            "at most 64 characters"
        )
    return name


@dataclass(frozen=True)
class FeatureSpec:
    """One feature of a view.

    Attributes:
        name: feature name, unique within the view.
        type: the type every value must have.
        description: free text for humans.
    """

    name: str
    type: ValueType
    description: str = ""


@dataclass(frozen=True)
class FeatureView:
    """A named, typed group of features of one entity, with a time-to-live.

    Attributes:
        name: unique name, e.g. ``customer_stats``.
        entity: name of the entity key, e.g. ``customer_id`` (events carry its value as entity_id).
        features: the schema, in declaration order (training-set columns follow it).
        ttl_seconds: how long a value stays valid after its event_time, in seconds; 0 = forever.
        description, owner, tags: metadata for humans and the dashboard.
        created_at, updated_at: when the view was first registered and last changed (UTC); set
            by the store.
    """

    name: str
    entity: str
    features: tuple[FeatureSpec, ...]
    ttl_seconds: int = 0
    description: str = ""
    owner: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        check_name("feature view", self.name)
        check_name("entity", self.entity)
        if not self.features:
            raise InvalidArgument(f"feature view {self.name!r} needs at least one feature")
        if len(self.features) > MAX_FEATURES_PER_VIEW:
            raise InvalidArgument(f"feature view {self.name!r} has more than {MAX_FEATURES_PER_VIEW} features")
        seen: set[str] = set()
        for spec in self.features:
            check_name("feature", spec.name)
            if spec.name in seen:
                raise InvalidArgument(f"feature {spec.name!r} appears twice in view {self.name!r}")
            seen.add(spec.name)
        if self.ttl_seconds < 0:
            raise InvalidArgument(f"ttl_seconds must be >= 0 (0 = no expiry), got {self.ttl_seconds}")

    @property
    def ttl(self) -> timedelta | None:
        """The TTL as a timedelta, or None when values never expire."""
        return timedelta(seconds=self.ttl_seconds) if self.ttl_seconds > 0 else None

    @property
    def feature_names(self) -> list[str]:
        return [spec.name for spec in self.features]

    def feature(self, name: str) -> FeatureSpec:
        """The spec of feature ``name``.

        Raises:
            NotFound: the view has no such feature.
        """
        for spec in self.features:
            if spec.name == name:
                return spec
        raise NotFound(f"feature view {self.name!r} has no feature {name!r} (it has {', '.join(self.feature_names)})")

    def check_update(self, new: FeatureView) -> None:
        """Check that ``new`` may replace this view: same entity, every feature kept with its type.

        Adding features and changing TTL or metadata is allowed. Removing a feature or changing
        its type is not: stored values and trained models depend on it (register a new view).

        Raises:
            Conflict: the entity would change, or a feature would be removed or change type.
        """
        if new.entity != self.entity:
            raise Conflict(f"feature view {self.name!r} is keyed by {self.entity!r}; cannot re-key it to "
                           f"{new.entity!r} (register a new view instead)")
        new_types = {spec.name: spec.type for spec in new.features}
        for spec in self.features:
            if spec.name not in new_types:
                raise Conflict(f"feature {spec.name!r} of view {self.name!r} cannot be removed "
                               "(register a new view instead)")
        old_types = {spec.name: spec.type for spec in self.features}
        for spec in new.features:
            old = old_types.get(spec.name)
            if old is not None and old != spec.type:
                raise Conflict(f"feature {spec.name!r} of view {self.name!r} is {old.value}; cannot change it to "
                               f"{spec.type.value} (add a feature with a new name instead)")

    def is_outside_ttl(self, event_time: datetime, as_of: datetime) -> bool:
        """Whether a value with ``event_time`` has expired at ``as_of`` (both UTC).

        A value is valid while ``as_of - ttl <= event_time`` (both ends inclusive, like Feast).
        """
        ttl = self.ttl
        return ttl is not None and event_time < as_of - ttl


@dataclass(frozen=True)
class RawFeatureEvent:
    """A feature event as it came off the wire, before validation.

    Attributes:
        feature_view: view name ("" when absent).
        entity_id: entity key value ("" when absent).
        event_time: when the values became true (UTC), or None when absent.
        values: feature name -> (kind, value); kind is ``float``/``int``/``string``/``bool``, or None
            with value None for an explicitly missing value.
        created_time: producer's creation time (UTC), or None.
        source: producing system, for audit.
        event_id: the CloudEvents id (dedupe key).
        received_time: when the broker got the record (UTC); replaces a missing created_time.
    """

    feature_view: str
    entity_id: str
    event_time: datetime | None
    values: Mapping[str, tuple[ValueType | None, Scalar | None]]
    event_id: str
    received_time: datetime
    created_time: datetime | None = None
    source: str = ""


@dataclass(frozen=True)
class FeatureRow:
    """A validated feature event, ready for the offline and online stores.

    Attributes:
        feature_view, entity_id: where it belongs.
        event_time: when the values became true (UTC).
        created_time: tie-breaker between rows with equal event_time (later wins), UTC.
        values: feature name -> value (None = explicitly missing); only features the event named.
        complete: whether the event named every feature of the view (lets point-in-time joins
            stop looking further back).
        event_id: dedupe key: the row is stored at most once per (view, entity, event_time, event_id).
        source: producing system.
    """

    feature_view: str
    entity_id: str
    event_time: datetime
    created_time: datetime
    values: Mapping[str, Scalar | None]
    complete: bool
    event_id: str
    source: str = ""


def _coerce(view: FeatureView, spec: FeatureSpec, kind: ValueType | None, value: Scalar | None) -> Scalar | None:
    if kind is None or value is None:
        return None
    if kind == spec.type:
        if kind == ValueType.FLOAT:
            number = float(value)
            if not math.isfinite(number):
                raise InvalidFeatureEvent(
                    "bad_value", f"feature {spec.name!r} of view {view.name!r}: {number!r} is not finite "
                    "(send a missing value instead of NaN/Inf)")
            return number
        if kind == ValueType.STRING and len(str(value)) > MAX_STRING_VALUE_CHARS:
            raise InvalidFeatureEvent(
                "bad_value", f"feature {spec.name!r} of view {view.name!r}: string longer than "
                f"{MAX_STRING_VALUE_CHARS} characters")
        return value
    # An integer is a lossless float for every value a model sees; JSON producers often send 1
    # where they mean 1.0, so accept it rather than dead-letter the event.
    if kind == ValueType.INT and spec.type == ValueType.FLOAT and not isinstance(value, bool):
        return float(value)
    raise InvalidFeatureEvent(
        "wrong_type", f"feature {spec.name!r} of view {view.name!r} is {spec.type.value}, got a {kind.value} "
        f"value {value!r}")


def validate_event(views: Mapping[str, FeatureView], raw: RawFeatureEvent) -> FeatureRow:
    """Check ``raw`` against its registered view and turn it into a :class:`FeatureRow`.

    Args:
        views: registered views by name.
        raw: the decoded event.

    Raises:
        InvalidFeatureEvent: unknown view or feature, wrong value type, missing entity id or
            event_time, no values, non-finite float. The reason says which.
    """
    if not raw.feature_view:
        raise InvalidFeatureEvent("missing_feature_view", "the event names no feature_view")
    view = views.get(raw.feature_view)
    if view is None:
        raise InvalidFeatureEvent("unknown_view", f"feature view {raw.feature_view!r} is not registered")
    if not raw.entity_id:
        raise InvalidFeatureEvent(
            "missing_entity_id", f"event for view {view.name!r} has no entity_id (the {view.entity!r} value)")
    if raw.event_time is None:
        raise InvalidFeatureEvent(
            "missing_event_time", f"event for view {view.name!r}, entity {raw.entity_id!r} has no event_time")
    if not raw.values:
        raise InvalidFeatureEvent("no_values", f"event for view {view.name!r}, entity {raw.entity_id!r} has no values")
    specs = {spec.name: spec for spec in view.features}
    values: dict[str, Scalar | None] = {}
    for name, (kind, value) in raw.values.items():
        spec = specs.get(name)
        if spec is None:
            raise InvalidFeatureEvent(
                "unknown_feature", f"view {view.name!r} has no feature {name!r} (known: {', '.join(specs)})")
        values[name] = _coerce(view, spec, kind, value)
    return FeatureRow(
        feature_view=view.name,
        entity_id=raw.entity_id,
        event_time=raw.event_time.astimezone(UTC),
        created_time=(raw.created_time or raw.received_time).astimezone(UTC),
        values=values,
        complete=len(values) == len(specs),
        event_id=raw.event_id,
        source=raw.source,
    )


@dataclass(frozen=True)
class OnlineValue:
    """The stored latest value of one feature of one entity.

    Attributes:
        value: the value (None = explicitly missing).
        event_time: event time of the event that set it (UTC).
    """

    value: Scalar | None
    event_time: datetime


@dataclass(frozen=True)
class FeatureResult:
    """One feature of one entity as served online.

    Attributes:
        value: the value when ``status`` is PRESENT, else None.
        status: why the value is or is not there.
        event_time: event time of the stored value (None when NOT_FOUND), UTC.
    """

    value: Scalar | None
    status: FeatureStatus
    event_time: datetime | None


@dataclass(frozen=True)
class OnlineRow:
    """The online features of one entity.

    Attributes:
        entity_id: the entity.
        found: whether any value of the view is stored for it (even expired ones).
        results: per requested feature, its value and status.
        event_time: the latest event time among the returned (PRESENT / NULL_VALUE) values, UTC.
    """

    entity_id: str
    found: bool
    results: Mapping[str, FeatureResult]
    event_time: datetime | None


def online_result(view: FeatureView, stored: OnlineValue | None, now: datetime) -> FeatureResult:
    """Classify a stored online value at ``now`` (UTC) into a :class:`FeatureResult`."""
    if stored is None:
        return FeatureResult(None, FeatureStatus.NOT_FOUND, None)
    if view.is_outside_ttl(stored.event_time, now):
        return FeatureResult(None, FeatureStatus.OUTSIDE_TTL, stored.event_time)
    if stored.value is None:
        return FeatureResult(None, FeatureStatus.NULL_VALUE, stored.event_time)
    return FeatureResult(stored.value, FeatureStatus.PRESENT, stored.event_time)


def merge_same_key(rows: Iterable[FeatureRow]) -> list[FeatureRow]:
    """Fold rows sharing (view, entity, event_time) into one, in arrival order otherwise.

    The offline store keeps one row per natural key; a batch may carry the same key twice (a
    replay, or two producers writing different features at the same instant). Values of the row
    with the later created_time win per feature, as the store's own merge does.
    """
    merged: dict[tuple[str, str, datetime], FeatureRow] = {}
    for row in rows:
        key = (row.feature_view, row.entity_id, row.event_time)
        held = merged.get(key)
        if held is None:
            merged[key] = row
            continue
        first, last = (held, row) if row.created_time >= held.created_time else (row, held)
        merged[key] = FeatureRow(
            feature_view=row.feature_view,
            entity_id=row.entity_id,
            event_time=row.event_time,
            created_time=last.created_time,
            values={**first.values, **last.values},
            complete=held.complete or row.complete,
            event_id=last.event_id,
            source=last.source,
        )
    return list(merged.values())


OnlineState = dict[str, tuple[Scalar | None, int, int]]
"""Online state of one entity: feature -> (value, event_time_us, created_time_us)."""


def online_states(rows: Iterable[FeatureRow]) -> dict[tuple[str, str], OnlineState]:
    """Per (view, entity), the newest value of each feature the rows name.

    "Newest" compares (event_time, created_time); ties keep the first row seen, as the store's
    ``online_merge`` keeps the stored value on ties. The store merges these into what it holds.
    """
    states: dict[tuple[str, str], OnlineState] = {}
    for row in rows:
        state = states.setdefault((row.feature_view, row.entity_id), {})
        stamp = (unix_us(row.event_time), unix_us(row.created_time))
        for name, value in row.values.items():
            held = state.get(name)
            if held is None or stamp > (held[1], held[2]):
                state[name] = (value, *stamp)
    return states


# -- training sets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntityRow:
    """One row of an entity dataframe: an entity and the time its features are wanted at (UTC)."""

    entity_id: str
    timestamp: datetime


@dataclass(frozen=True)
class TrainingSetQuery:
    """What the trainer asks for.

    Attributes:
        feature_view: the view the features and the label come from.
        label: the label feature (a feature of the same view; see docs/services/features.md).
        features: features to return besides the label; empty = every other feature of the view.
        start, end: event-time window [start, end) in UTC; None = unbounded on that side. Without
            entity rows, the spine is every distinct (entity, event_time) of the view's events in
            the window; with entity rows, it filters their timestamps.
        entity_rows: optional entity dataframe; each row gets the features as of its timestamp.
        keep_unlabelled: keep rows whose label is absent (null, never set or outside TTL); by
            default they are dropped and counted.
    """

    feature_view: str
    label: str
    features: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    entity_rows: tuple[EntityRow, ...] = ()
    keep_unlabelled: bool = False

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise InvalidArgument(f"window start {self.start.isoformat()} must be before end {self.end.isoformat()}")


def training_columns(view: FeatureView, query: TrainingSetQuery) -> list[FeatureSpec]:
    """The feature columns of a training set, label last, in view order (or the order asked for).

    Raises:
        NotFound: the label or a requested feature is not in the view.
        InvalidArgument: a feature is asked for twice or is the label.
    """
    label = view.feature(query.label)
    if query.features:
        if len(set(query.features)) != len(query.features):
            raise InvalidArgument("a feature is requested twice")
        if query.label in query.features:
            raise InvalidArgument(f"the label {query.label!r} must not also be requested as a feature")
        chosen = [view.feature(name) for name in query.features]
    else:
        chosen = [spec for spec in view.features if spec.name != query.label]
    return [*chosen, label]


@dataclass(frozen=True)
class TrainingSetSchema:
    """The columns and window of a training set.

    Attributes:
        feature_view: the view it is built from.
        features: feature columns, in order.
        label: the label column.
        start, end: the window used, UTC (start None = open).
    """

    feature_view: str
    features: tuple[FeatureSpec, ...]
    label: FeatureSpec
    start: datetime | None
    end: datetime


@dataclass
class TrainingSetChunk:
    """Consecutive rows of a training set, column by column.

    Attributes:
        entity_ids, event_times: the row keys (event_times UTC: the time features are as of).
        columns: one list per feature column (schema order), one entry per row; None = missing.
        label: the label of each row; None = missing (only with keep_unlabelled).
    """

    entity_ids: list[str]
    event_times: list[datetime]
    columns: list[list[Scalar | None]]
    label: list[Scalar | None]

    def __len__(self) -> int:
        return len(self.entity_ids)


def unix_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_unix_us(micros: int) -> datetime:
    """The aware UTC datetime of microseconds since the Unix epoch (inverse of :func:`unix_us`)."""
    return _EPOCH + timedelta(microseconds=micros)


class TrainingSetFingerprint:
    """SHA-256 of a training set, independent of how its rows were chunked.

    Every column (``entity_id``, ``event_time``, the features in order, the label) is hashed as two
    byte streams over all rows: its values and its presence flags (one byte per row, 1 = present).
    Values: strings (entity ids, STRING) as a 4-byte little-endian length then UTF-8; event times
    as int64 microseconds since the Unix epoch (UTC); FLOAT as IEEE 754 float64; INT as int64; BOOL
    as one byte; little-endian; a missing value as 0 / "" / false. The fingerprint is the SHA-256
    of, per column in order: its name and type (``name:type\n``, UTF-8), then the SHA-256 digests of
    its value and presence streams.
    """

    def __init__(self, schema: TrainingSetSchema) -> None:
        self._columns: list[tuple[str, str]] = [("entity_id", "string"), ("event_time", "timestamp_us")]
        self._columns += [(spec.name, spec.type.value) for spec in (*schema.features, schema.label)]
        self._values = [hashlib.sha256() for _ in self._columns]
        self._present = [hashlib.sha256() for _ in self._columns]
        self.rows = 0

    def update(self, chunk: TrainingSetChunk) -> None:
        """Add the rows of ``chunk``."""
        streams: list[list[Any]] = [chunk.entity_ids, [unix_us(t) for t in chunk.event_times],
                                    *chunk.columns, chunk.label]
        for i, ((_, kind), values) in enumerate(zip(self._columns, streams, strict=True)):
            self._present[i].update(bytes(v is not None for v in values))
            self._values[i].update(_encode_values(kind, values))
        self.rows += len(chunk)

    def hexdigest(self) -> str:
        """Lowercase hex digest of the rows so far."""
        digest = hashlib.sha256()
        for (name, kind), values, present in zip(self._columns, self._values, self._present, strict=True):
            digest.update(f"{name}:{kind}\n".encode())
            digest.update(values.digest())
            digest.update(present.digest())
        return digest.hexdigest()


def _little_endian(numbers: array[Any]) -> bytes:
    if sys.byteorder == "big":
        numbers.byteswap()
    return numbers.tobytes()


def _encode_values(kind: str, values: list[Any]) -> bytes:
    if kind == ValueType.FLOAT:
        return _little_endian(array("d", [0.0 if v is None else v for v in values]))
    if kind in (ValueType.INT, "timestamp_us"):
        return _little_endian(array("q", [0 if v is None else v for v in values]))
    if kind == ValueType.BOOL:
        return bytes(bool(v) for v in values)
    parts = []
    for v in values:
        data = b"" if v is None else str(v).encode("utf-8")
        parts.append(len(data).to_bytes(4, "little"))
        parts.append(data)
    return b"".join(parts)


# -- profiles -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CategoryCount:
    """One of the most frequent values of a categorical (string/bool) feature."""

    value: str
    count: int


@dataclass(frozen=True)
class FeatureProfile:
    """Summary statistics of one feature over the events of a window.

    Attributes:
        name, type: the feature.
        count: events in the window that carry a non-null value.
        missing: events in the window without a value for it (not named, or null).
        mean, std, min, max: numeric features only (std is the sample standard deviation, None
            under 2 values).
        distinct: categorical features only: number of distinct values.
        top: categorical features only: most frequent values, most frequent first.
    """

    name: str
    type: ValueType
    count: int
    missing: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    distinct: int | None = None
    top: tuple[CategoryCount, ...] = ()


@dataclass(frozen=True)
class DatasetProfile:
    """A profile of a view's events over [start, end) (UTC; None = unbounded).

    Attributes:
        rows: events in the window; entities: distinct entities among them.
    """

    feature_view: str
    start: datetime | None
    end: datetime | None
    rows: int
    entities: int
    features: tuple[FeatureProfile, ...]
