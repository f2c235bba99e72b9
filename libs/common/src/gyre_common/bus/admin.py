"""Creating Gyre's topics on the broker (used by `make up`, consumers at start, and tests)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from gyre_common.bus.codec import topic_spec
from gyre_common.settings import KafkaSettings
from gyre_common.topics import TOPICS, dead_letter_topic, full_name

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
"""Kafka error code CreateTopics answers for a topic that exists: fine, someone made it first."""


async def ensure_topics(
    settings: KafkaSettings,
    bases: Iterable[str] | None = None,
    dead_letter_groups: Iterable[str] = (),
) -> list[str]:
    """Create the prefixed topics that do not exist yet.

    Args:
        settings: broker address, ``topic_prefix``, ``default_partitions``, ``replication_factor``.
        bases: base topic names from :data:`gyre_common.topics.TOPICS`; None means all of them.
        dead_letter_groups: consumer groups whose dead-letter topics to create as well.

    Returns:
        Full names of the topics this call created (those that already existed are left out).

    Raises:
        UnknownTopicError: a base name is not a Gyre topic.
        aiokafka.errors.KafkaError: the broker refused for another reason than "already exists".
    """
    chosen = TOPICS if bases is None else bases
    names = [full_name(topic_spec(base).name, settings.topic_prefix) for base in chosen]
    names += [dead_letter_topic(group, settings.topic_prefix) for group in dead_letter_groups]
    names = list(dict.fromkeys(names))
    if not names:
        return []
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-admin",
        request_timeout_ms=settings.request_timeout_ms,
    )
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, settings.default_partitions, settings.replication_factor) for name in names]
        )
    finally:
        await admin.close()
    created: list[str] = []
    failures: list[str] = []
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        if code == 0:
            created.append(name)
        elif code != TOPIC_ALREADY_EXISTS:
            failures.append(f"{name}: {for_code(code).__name__} ({code}) {message or ''}".rstrip())
    if failures:
        raise for_code(response.topic_errors[0][1])("could not create topics: " + "; ".join(failures))
    if created:
        log.info("created topics %s", created)
    return sorted(created)
