"""How often and how patiently a failing handler is retried, without any I/O of its own.

The curve itself is :func:`gyre_common.retry.backoff_s` (re-exported here), the codebase's only
back-off; :class:`RetryPolicy` adds how many attempts an *unknown* failure gets before its record
is dead-lettered (see :mod:`gyre_common.bus.failures` for which failures are retried at all).
"""

from __future__ import annotations

from dataclasses import dataclass

from gyre_common.retry import backoff_s

MAX_BACKOFF_MS = 10_000
"""Ceiling of one back-off, in milliseconds (the doubling stops here)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failing handler is retried.

    Attributes:
        max_retries: retries after the first attempt (so ``max_retries + 1`` attempts in all).
        backoff_ms: wait before the first retry, in milliseconds; doubles each retry.
        max_backoff_ms: ceiling of one wait, in milliseconds.
    """

    max_retries: int = 5
    backoff_ms: int = 100
    max_backoff_ms: int = MAX_BACKOFF_MS

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_ms < 0 or self.max_backoff_ms < 0:
            raise ValueError("retry settings must not be negative")

    def delay_s(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based): backoff * 2^(retry-1), capped."""
        if retry < 1:
            raise ValueError("retry numbers start at 1")
        return backoff_s(retry, first_s=self.backoff_ms / 1000.0, max_s=self.max_backoff_ms / 1000.0)

    @property
    def attempts(self) -> int:
        """Attempts in all, the first one included."""
        return self.max_retries + 1
