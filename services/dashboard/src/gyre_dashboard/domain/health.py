"""Whether the other services answer: readiness verdicts, and the error of a failed call."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class UpstreamError(Exception):
    """A call to another service failed; the message names the service and says how."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service


class Health(StrEnum):
    """What a service's ``/readyz`` said."""

    READY = "ready"
    """200: every readiness check passed."""
    NOT_READY = "not_ready"
    """503: the process answers but a dependency (database, broker, ...) is failing."""
    DOWN = "down"
    """No answer: connection refused, timeout, or an answer that is not a readiness report."""


@dataclass(frozen=True)
class ServiceHealth:
    """Readiness of one service.

    Attributes:
        name: service name (``registry``).
        url: base URL the dashboard called.
        health: the verdict.
        failing: names of the failing readiness checks (``database``, ``broker``) when NOT_READY.
        detail: why it is not ready or down (error text), empty when ready.
        latency_ms: how long ``/readyz`` took, in milliseconds; None when there was no answer.
    """

    name: str
    url: str
    health: Health
    failing: tuple[str, ...] = ()
    detail: str = ""
    latency_ms: float | None = None
