"""The whole overview: its sections (each may be incomplete) and their JSON form."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from gyre_dashboard.domain.health import ServiceHealth
from gyre_dashboard.domain.models import AlertSummary, ModelDrift, ModelQuality, ModelSummary
from gyre_dashboard.domain.training import RunSummary, TrainingJobSummary

T = TypeVar("T")


@dataclass(frozen=True)
class Section(Generic[T]):
    """One part of the overview read from another service.

    Attributes:
        source: the service it comes from.
        items: what could be read.
        error: why it is missing or incomplete (the upstream is down, a call failed), empty when
            everything was read.
    """

    source: str
    items: tuple[T, ...] = ()
    error: str = ""

    @property
    def available(self) -> bool:
        """Whether the source answered (at least partly)."""
        return not self.error or bool(self.items)


@dataclass(frozen=True)
class Overview:
    """Everything the operator page shows, gathered at ``generated_at`` (UTC)."""

    generated_at: datetime
    services: tuple[ServiceHealth, ...]
    models: Section[ModelSummary]
    drift: Section[ModelDrift]
    quality: Section[ModelQuality]
    training_jobs: Section[TrainingJobSummary]
    alerts: Section[AlertSummary]
    runs: Section[RunSummary]
    duration_ms: float = 0.0


def to_json(value: Any) -> Any:
    """``value`` (an :class:`Overview` or any part of it) as JSON-ready data: dataclasses become
    objects (properties ``drifted_features`` and ``available`` included), enums their value, times
    RFC 3339 strings in UTC, and a NaN or infinite number null (JSON has no such numbers; an
    upstream may send ``"NaN"``, e.g. a diverged trial's metric)."""
    if isinstance(value, Section):
        return {"source": value.source, "available": value.available, "error": value.error or None,
                "items": [to_json(item) for item in value.items]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, ModelDrift):
            data["drifted_features"] = list(value.drifted_features)
        return data
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
