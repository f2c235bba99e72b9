"""How a service describes itself to the embedded stack, the docs generator and the tests.

Each service package exposes one :class:`ServiceSpec` through the ``gyre.services`` entry-point
group, e.g. in ``services/serving/pyproject.toml``::

    [project.entry-points."gyre.services"]
    serving = "gyre_serving.service:SPEC"

`gyre-stack up` discovers services this way, applies their migrations, and starts each one with
``python -m <module>``; `docs/configuration.md` is generated from their settings classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points

from gyre_common.settings import ServiceSettings

ENTRY_POINT_GROUP = "gyre.services"

OUTBOX_MIGRATIONS = "gyre_common.outbox_migrations"
"""The shared migration set of the outbox table, applied to the schema of every service with ``outbox=True``."""


@dataclass(frozen=True)
class ServiceSpec:
    """What the platform needs to know to run one service.

    Attributes:
        name: short name, also the env prefix (``GYRE_<NAME>_``) and the log file name.
        settings: the service's settings class.
        module: module run with ``python -m`` to start the service.
        schema: PostgreSQL schema the service owns, or None when it has no tables.
        migrations: package holding the ``NNNN_description.sql`` migration files for ``schema``.
        consumes: base topic names the service reads (from :mod:`gyre_common.topics`).
        produces: base topic names the service writes.
        outbox: the service publishes through the transactional outbox (:mod:`gyre_common.outbox`):
            the migration runner then also applies :data:`OUTBOX_MIGRATIONS` to ``schema``.
    """

    name: str
    settings: type[ServiceSettings]
    module: str
    schema: str | None = None
    migrations: str | None = None
    consumes: tuple[str, ...] = field(default_factory=tuple)
    produces: tuple[str, ...] = field(default_factory=tuple)
    outbox: bool = False

    @property
    def shared_migrations(self) -> tuple[str, ...]:
        """Packages of the shared migration sets applied to ``schema`` after ``migrations``."""
        return (OUTBOX_MIGRATIONS,) if self.outbox else ()


def discover_services() -> list[ServiceSpec]:
    """Every installed service, sorted by name."""
    specs = [ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return sorted(specs, key=lambda spec: spec.name)
