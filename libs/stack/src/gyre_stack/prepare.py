"""What `up` does between starting the infrastructure and starting the services: topics, migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
from aiokafka.errors import KafkaError

from gyre_common.bus import ensure_topics
from gyre_common.db import MigrationError, migrate
from gyre_common.service import ServiceSpec
from gyre_common.settings import KafkaSettings
from gyre_stack.errors import StackError

# Tansu accepts TCP a moment before it answers metadata requests; retry topic creation this long.
_TOPICS_DEADLINE_S = 30.0


def dead_letter_groups(specs: Sequence[ServiceSpec]) -> list[str]:
    """Consumer groups that need a dead-letter topic: the services that consume (group = service name)."""
    return [spec.name for spec in specs if spec.consumes]


async def create_topics(kafka: KafkaSettings, specs: Sequence[ServiceSpec]) -> list[str]:
    """Create every Gyre topic and the dead-letter topic of each consuming service; return those created.

    Raises:
        StackError: the broker kept refusing for ``_TOPICS_DEADLINE_S`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _TOPICS_DEADLINE_S
    while True:
        try:
            return await ensure_topics(kafka, None, dead_letter_groups=dead_letter_groups(specs))
        except (KafkaError, OSError) as exc:
            if loop.time() >= deadline:
                raise StackError(f"could not create topics on {kafka.bootstrap_servers}: {exc!r}") from exc
            await asyncio.sleep(0.5)


async def apply_migrations(database_url: str, specs: Sequence[ServiceSpec]) -> dict[str, list[str]]:
    """Apply the migrations of every service that has a schema; return the files applied per service.

    Raises:
        StackError: a migration failed (the service, schema and cause are named).
    """
    applied: dict[str, list[str]] = {}
    for spec in specs:
        if not (spec.schema and spec.migrations):
            continue
        try:
            applied[spec.name] = await migrate(database_url, spec.schema, spec.migrations,
                                               shared=spec.shared_migrations)
        except (MigrationError, asyncpg.PostgresError, ImportError, ValueError, OSError) as exc:
            raise StackError(f"migrations of {spec.name} (schema {spec.schema}, package "
                             f"{spec.migrations}) failed: {exc}") from exc
    return applied
