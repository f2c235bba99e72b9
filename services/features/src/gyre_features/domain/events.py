"""Feature events: validating what came off the wire into rows, and folding rows of one key.

A feature event carries values of *some* features of one entity at one ``event_time``; features
it does not name keep their earlier values (partial updates). A value without a kind is an
explicit "missing" (null) that overwrites earlier values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from gyre_features.domain.errors import InvalidFeatureEvent
from gyre_features.domain.values import FloatVector, Value, ValueType, VectorError
from gyre_features.domain.views import FeatureSpec, FeatureView

MAX_STRING_VALUE_CHARS = 65_536


@dataclass(frozen=True)
class RawFeatureEvent:
    """A feature event as it came off the wire, before validation.

    Attributes:
        feature_view: view name ("" when absent).
        entity_id: entity key value ("" when absent).
        event_time: when the values became true (UTC), or None when absent.
        values: feature name -> (kind, value); kind is ``float``/``int``/``string``/``bool`` with a
            scalar, or ``float_vector`` with a sequence of floats (or a :class:`FloatVector`), or
            None with value None for an explicitly missing value. Text arrives as ``string``.
        created_time: producer's creation time (UTC), or None.
        source: producing system, for audit.
        event_id: the CloudEvents id (dedupe key).
        received_time: when the broker got the record (UTC); replaces a missing created_time.
    """

    feature_view: str
    entity_id: str
    event_time: datetime | None
    values: Mapping[str, tuple[ValueType | None, object | None]]
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
    values: Mapping[str, Value | None]
    complete: bool
    event_id: str
    source: str = ""


def _coerce(view: FeatureView, spec: FeatureSpec, kind: ValueType | None, value: object | None) -> Value | None:
    if kind is None or value is None:
        return None
    if kind == spec.type:
        if kind == ValueType.FLOAT:
            number = float(value)  # type: ignore[arg-type]
            if not math.isfinite(number):
                raise InvalidFeatureEvent(
                    "bad_value", f"feature {spec.name!r} of view {view.name!r}: {number!r} is not finite "
                    "(send a missing value instead of NaN/Inf)")
            return number
        if kind == ValueType.STRING and len(str(value)) > MAX_STRING_VALUE_CHARS:
            raise InvalidFeatureEvent(
                "bad_value", f"feature {spec.name!r} of view {view.name!r}: string longer than "
                f"{MAX_STRING_VALUE_CHARS} characters")
        if kind == ValueType.FLOAT_VECTOR:
            return _vector(view, spec, value)
        return value  # type: ignore[return-value]
    # Text travels as a FeatureValue string_value: the view's type, not the wire kind, says it is text.
    if kind == ValueType.STRING and spec.type == ValueType.TEXT:
        text = str(value)
        # A UTF-8 character is at most 4 bytes: short texts skip the encoding.
        if len(text) * 4 > spec.text_limit_bytes and len(text.encode("utf-8")) > spec.text_limit_bytes:
            raise InvalidFeatureEvent(
                "bad_value", f"feature {spec.name!r} of view {view.name!r}: text of {len(text.encode('utf-8'))} "
                f"UTF-8 bytes; at most {spec.text_limit_bytes}")
        return text
    # An integer is a lossless float for every value a model sees; JSON producers often send 1
    # where they mean 1.0, so accept it rather than dead-letter the event.
    if kind == ValueType.INT and spec.type == ValueType.FLOAT and not isinstance(value, bool):
        return float(value)  # type: ignore[arg-type]
    raise InvalidFeatureEvent(
        "wrong_type", f"feature {spec.name!r} of view {view.name!r} is {spec.type.value}, got a {kind.value} "
        f"value {_shorten(value)}")


def _shorten(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _vector(view: FeatureView, spec: FeatureSpec, value: object) -> FloatVector:
    try:
        vector = value if isinstance(value, FloatVector) else FloatVector.of(value)  # type: ignore[arg-type]
    except (VectorError, TypeError) as exc:
        raise InvalidFeatureEvent(
            "bad_value", f"feature {spec.name!r} of view {view.name!r}: {exc} (send a missing value instead "
            "of a vector with NaN/Inf)") from None
    if len(vector) != spec.dimension:
        raise InvalidFeatureEvent(
            "bad_value", f"feature {spec.name!r} of view {view.name!r} is a float_vector of dimension "
            f"{spec.dimension}, got {len(vector)} elements")
    return vector


def validate_event(views: Mapping[str, FeatureView], raw: RawFeatureEvent) -> FeatureRow:
    """Check ``raw`` against its registered view and turn it into a :class:`FeatureRow`.

    Args:
        views: registered views by name.
        raw: the decoded event.

    Raises:
        InvalidFeatureEvent: unknown view or feature, wrong value type, missing entity id or
            event_time, no values, non-finite float, a vector of the wrong dimension or with a
            non-finite element, a text over its limit. The reason says which.
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
    values: dict[str, Value | None] = {}
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
