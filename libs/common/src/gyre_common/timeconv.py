"""Protobuf ``Timestamp`` <-> aware datetime, the one conversion every service's convert.py needs.

A protobuf Timestamp is UTC by definition; Gyre's datetimes are aware and UTC. Python datetimes
hold microseconds, so a Timestamp's nanoseconds below a microsecond are dropped on the way in.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(moment: datetime) -> Timestamp:
    """A protobuf Timestamp of an aware datetime (any zone; stored as UTC; a naive one is taken as
    local time, as :meth:`datetime.astimezone` does)."""
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def to_datetime(stamp: Timestamp) -> datetime:
    """The aware UTC datetime of a Timestamp (microsecond precision)."""
    return stamp.ToDatetime(tzinfo=UTC)


def optional_time(message: Message, field: str) -> datetime | None:
    """The aware UTC datetime of the Timestamp field ``message.<field>``; None when it is unset."""
    if not message.HasField(field):
        return None
    return to_datetime(getattr(message, field))
