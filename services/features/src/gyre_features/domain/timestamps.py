"""Exact conversions between aware datetimes and microseconds since the Unix epoch (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def unix_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_unix_us(micros: int) -> datetime:
    """The aware UTC datetime of microseconds since the Unix epoch (inverse of :func:`unix_us`)."""
    return _EPOCH + timedelta(microseconds=micros)
