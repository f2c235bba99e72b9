"""How a handler says "this record can never succeed: dead-letter it now, do not retry".

* A per-event handler raises :class:`DeadLetter`.
* A batch handler returns the records it rejects as a list of :class:`Rejected` (the rest of the
  batch counts as handled), or raises :class:`DeadLetter`: then the bus retries the batch record
  by record, and each single-record call that raises :class:`DeadLetter` is dead-lettered.

Either way the consumer sends the ORIGINAL record (key, value and headers as they were consumed)
to the group's dead-letter topic with ``gyre_dlq_reason`` = reason and ``gyre_dlq_error`` = detail,
at once, without retries, and commits past it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gyre_common.bus.envelope import Envelope


class DeadLetter(Exception):
    """Raised by a handler: send this record to the dead-letter topic now, never retry it.

    Args:
        reason: short machine-readable cause (``unknown_feature``), the ``gyre_dlq_reason`` header.
        detail: human explanation, the ``gyre_dlq_error`` header (cut at 2000 characters).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Rejected:
    """One record of a batch that a batch handler refuses (returned in a list by the handler).

    Attributes:
        envelope: the envelope of the record, as the handler received it.
        reason: the ``gyre_dlq_reason`` header.
        detail: the ``gyre_dlq_error`` header.
    """

    envelope: Envelope
    reason: str
    detail: str = ""
