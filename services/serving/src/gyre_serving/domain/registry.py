"""Registry changes as serving sees them: which model, version and alias an event is about, and
what to load for it. :mod:`gyre_serving.convert` builds them from ``gyre.events.v1.RegistryEvent``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gyre_serving.domain.runtime import ModelSource


class ChangeKind(StrEnum):
    """What happened in the registry (``RegistryEventKind``); OTHER is every kind serving ignores."""

    VERSION_CREATED = "version_created"
    VERSION_ARCHIVED = "version_archived"
    ALIAS_SET = "alias_set"
    ALIAS_REMOVED = "alias_removed"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """One registry event.

    Attributes:
        alias: the alias set or removed (a VERSION_CREATED may name the alias it was given at once).
        source: the version's artifact and signature when the event carries them, else None.
    """

    kind: ChangeKind
    model_name: str
    version: int = 0
    alias: str = ""
    source: ModelSource | None = None
