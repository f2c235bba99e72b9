"""Tumbling windows of served predictions, per (model, version).

A window closes when it holds ``size`` predictions, or, when ``max_age_s`` is set, when a
prediction arrives whose ``served_at`` is at least ``max_age_s`` after the window's first one
(event time, so a replay closes the same windows; a model that stops receiving traffic keeps its
last window open until traffic resumes). Windows are numbered from 0 per (model, version); the
number is part of every id derived from a window, so ids are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum


class ClosedBy(StrEnum):
    """Why a window closed."""

    COUNT = "count"
    TIME = "time"


@dataclass(frozen=True)
class WindowPolicy:
    """When windows close.

    Attributes:
        size: predictions per window (>= 1).
        max_age_s: event-time length of a window in seconds; 0 disables time-based closing.
        min_rows: fewest predictions a time-closed window needs to be tested (smaller ones are
            recorded as too small; count-closed windows always hold ``size``).
    """

    size: int
    max_age_s: float = 0.0
    min_rows: int = 1

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"window size must be at least 1, got {self.size}")
        if self.max_age_s < 0:
            raise ValueError(f"window max age must not be negative, got {self.max_age_s}")


@dataclass(frozen=True)
class WindowCursor:
    """The open window of one (model, version).

    Attributes:
        window_seq: number of the open window.
        rows: predictions in it so far.
        started_at: ``served_at`` of its first prediction (None while empty), UTC.
    """

    window_seq: int = 0
    rows: int = 0
    started_at: datetime | None = None


@dataclass(frozen=True)
class ClosedWindow:
    """A window that just closed: its number, size and why."""

    window_seq: int
    rows: int
    closed_by: ClosedBy


@dataclass(frozen=True)
class Assignment:
    """Result of :func:`assign_windows`.

    Attributes:
        windows: window number of each input prediction, in input order.
        closed: windows closed by these predictions, in order.
        cursor: the open window afterwards.
    """

    windows: list[int]
    closed: list[ClosedWindow]
    cursor: WindowCursor


def assign_windows(cursor: WindowCursor, served_at: Sequence[datetime], policy: WindowPolicy) -> Assignment:
    """Put new (already deduplicated) predictions, in arrival order, into windows.

    Args:
        cursor: the open window before these predictions.
        served_at: when each prediction was served (aware UTC), in arrival order.
        policy: when windows close.
    """
    max_age = timedelta(seconds=policy.max_age_s) if policy.max_age_s > 0 else None
    seq, rows, started = cursor.window_seq, cursor.rows, cursor.started_at
    windows: list[int] = []
    closed: list[ClosedWindow] = []
    for when in served_at:
        if max_age is not None and rows > 0 and started is not None and when - started >= max_age:
            closed.append(ClosedWindow(seq, rows, ClosedBy.TIME))
            seq, rows, started = seq + 1, 0, None
        windows.append(seq)
        rows += 1
        if started is None:
            started = when
        if rows >= policy.size:
            closed.append(ClosedWindow(seq, rows, ClosedBy.COUNT))
            seq, rows, started = seq + 1, 0, None
    return Assignment(windows, closed, replace(cursor, window_seq=seq, rows=rows, started_at=started))
