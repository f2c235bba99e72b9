"""The online store's view of an entity: latest values, their statuses, and how rows update them."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from gyre_features.domain.events import FeatureRow
from gyre_features.domain.timestamps import unix_us
from gyre_features.domain.values import Value
from gyre_features.domain.views import FeatureView


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


@dataclass(frozen=True)
class OnlineValue:
    """The stored latest value of one feature of one entity.

    Attributes:
        value: the value (None = explicitly missing).
        event_time: event time of the event that set it (UTC).
    """

    value: Value | None
    event_time: datetime


@dataclass(frozen=True)
class FeatureResult:
    """One feature of one entity as served online.

    Attributes:
        value: the value when ``status`` is PRESENT, else None.
        status: why the value is or is not there.
        event_time: event time of the stored value (None when NOT_FOUND), UTC.
    """

    value: Value | None
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


OnlineState = dict[str, tuple[Value | None, int, int]]
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
