"""The one exponential back-off of the codebase: how long to wait after the n-th failure in a row.

Every loop that waits out a failing dependency (the bus consumer waiting for the broker or the
database, dead-lettering, the outbox relay, serving's event emitter) asks :func:`backoff_s` instead
of doubling a number of its own, so the curve, the cap and their units are written once. The bounded
handler retries of the bus (:class:`gyre_common.bus.retry.RetryPolicy`) use it too.

No jitter: Gyre's waiters are a handful per process and never synchronised across a fleet by the
same event, so a deterministic curve (easier to test and to read in logs) is the better trade.
"""

from __future__ import annotations

_MAX_EXPONENT = 32
"""The doubling stops counting here: 2**32 times any sensible first wait is past every cap anyway."""


def backoff_s(failures: int, *, first_s: float, max_s: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures: ``first_s * 2**(failures - 1)``, capped.

    Args:
        failures: failures in a row so far, counting the one just seen (1 for the first); values
            below 1 count as 1.
        first_s: the wait after the first failure, in seconds (>= 0).
        max_s: the longest wait, in seconds (>= 0); the doubling stops here.

    Raises:
        ValueError: ``first_s`` or ``max_s`` is negative.
    """
    if first_s < 0 or max_s < 0:
        raise ValueError("back-off seconds must not be negative")
    exponent = min(max(failures, 1) - 1, _MAX_EXPONENT)
    return float(min(first_s * 2**exponent, max_s))
