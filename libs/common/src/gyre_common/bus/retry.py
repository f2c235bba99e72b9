"""Bounded retries with exponential back-off for handlers, without any I/O of its own.

The curve itself is :func:`gyre_common.retry.backoff_s` (re-exported here), the codebase's only
back-off; :class:`RetryPolicy` adds how many attempts an *unknown* failure gets before its record
is dead-lettered (see :mod:`gyre_common.bus.failures` for which failures are retried at all).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gyre_common.retry import backoff_s

log = logging.getLogger(__name__)

MAX_BACKOFF_MS = 10_000
"""Ceiling of one back-off, in milliseconds (the doubling stops here)."""

T = TypeVar("T")


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


class RetriesExhausted(Exception):
    """Every attempt failed; ``last`` is the final error and ``attempts`` how many were made."""

    def __init__(self, attempts: int, last: BaseException) -> None:
        super().__init__(f"failed after {attempts} attempts: {last!r}")
        self.attempts = attempts
        self.last = last


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    describe: str = "handler",
    first_attempt: int = 1,
) -> T:
    """Await ``call()`` until it succeeds or the policy's attempts are used up.

    Args:
        first_attempt: the attempt number ``call()`` starts at; pass 2 when the first attempt
            already happened elsewhere (a failed batch call) so the total stays bounded.

    Raises:
        RetriesExhausted: every attempt raised; cancellation is never retried.
    """
    attempt = first_attempt
    while True:
        if attempt > 1:
            await sleep(policy.delay_s(attempt - 1))
        try:
            return await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if attempt >= policy.attempts:
                raise RetriesExhausted(attempt, exc) from exc
            log.warning("%s failed (attempt %d of %d), retrying: %r", describe, attempt, policy.attempts, exc)
            attempt += 1
