"""Dead letters for operators: list, show and replay the records consumers could not process.

* :class:`DeadLetterTools` — the broker-side operations (list topics with counts, page through
  records, read one, replay to the original topic with progress kept in ``<prefix><group>.replay``);
* :func:`record_json` — one record with every header and its payload decoded;
* :func:`dead_letter_router` / :func:`mount_dead_letter_routes` — the HTTP routes every consuming
  service serves for its own groups (``/api/v1/dead-letters``).

The ``gyre dlq`` command (libs/cli) uses the tools directly on the broker. See docs/bus.md.
"""

from gyre_common.deadletters.render import record_json
from gyre_common.deadletters.routes import ReplayRequest, dead_letter_router, mount_dead_letter_routes
from gyre_common.deadletters.tools import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    REPLAYED_FROM,
    DeadLetterRecord,
    DeadLetterTools,
    DeadLetterTopic,
    PartitionCounts,
    RecordPage,
    ReplayInterrupted,
    ReplayResult,
    replay_group,
    replay_headers,
)

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "REPLAYED_FROM",
    "DeadLetterRecord",
    "DeadLetterTools",
    "DeadLetterTopic",
    "PartitionCounts",
    "RecordPage",
    "ReplayInterrupted",
    "ReplayRequest",
    "ReplayResult",
    "dead_letter_router",
    "mount_dead_letter_routes",
    "record_json",
    "replay_group",
    "replay_headers",
]
