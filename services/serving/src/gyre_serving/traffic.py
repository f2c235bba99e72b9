"""Traffic splits between the served alias and the challenger alias of a model.

* **Canary**: ``canary_percent`` of requests are answered by the challenger. The choice is sticky:
  it hashes the model name and the request key (the ``request_key`` request parameter, else the
  request id), so one key always lands on the same side while the percentage stays the same.
* **Shadow**: the challenger also predicts on a copy of every request the served version answers;
  its answer is not returned, only published as an inference event with ``shadow=true``.

Only requests that name no version (or the served alias) are split; a request naming a version
number gets that version.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

BUCKETS = 10_000
"""Granularity of the split: 0.01 %."""


@dataclass(frozen=True, slots=True)
class TrafficSplit:
    """One model's split.

    Attributes:
        canary_percent: share of requests (0-100) the challenger answers.
        shadow: the challenger predicts on a copy of the other requests too (answer only logged).
    """

    canary_percent: float = 0.0
    shadow: bool = False


def bucket(model_name: str, key: str) -> int:
    """The request's bucket in ``[0, BUCKETS)``; stable across processes and restarts (CRC-32)."""
    return zlib.crc32(f"{model_name}\x00{key}".encode()) % BUCKETS


def canary(split: TrafficSplit, model_name: str, key: str) -> bool:
    """Whether the challenger answers a request with ``key`` under ``split``."""
    if split.canary_percent <= 0:
        return False
    return bucket(model_name, key) < split.canary_percent * (BUCKETS // 100)
