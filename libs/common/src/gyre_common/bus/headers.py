"""CloudEvents binary-mode headers on Kafka records, and the dead-letter headers.

The Kafka protocol binding of CloudEvents 1.0 puts each context attribute in a header named
``ce_<attribute>`` (UTF-8 values) and the payload's media type in ``content-type``. Gyre adds W3C
trace context (``traceparent``/``tracestate``) and, on dead-lettered records, ``gyre_dlq_*``.

Building headers is on the publish hot path, so everything constant for a (topic, event type,
source) triple is encoded once (:class:`HeaderTemplate`) and only ``ce_id`` and ``ce_time`` are made
per record.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gyre_common.ids import random_uuid4

CE_ID = "ce_id"
CE_TYPE = "ce_type"
CE_SOURCE = "ce_source"
CE_TIME = "ce_time"
CE_SPECVERSION = "ce_specversion"
CONTENT_TYPE = "content-type"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

SPECVERSION = "1.0"
PROTOBUF = "application/protobuf"
JSON = "application/json"
# Media types other producers use for the same encodings.
PROTOBUF_ALIASES = frozenset({PROTOBUF, "application/x-protobuf", "application/vnd.google.protobuf"})
JSON_ALIASES = frozenset({JSON, "text/json"})

DLQ_REASON = "gyre_dlq_reason"
DLQ_ERROR = "gyre_dlq_error"
DLQ_TOPIC = "gyre_dlq_topic"
DLQ_PARTITION = "gyre_dlq_partition"
DLQ_OFFSET = "gyre_dlq_offset"
DLQ_GROUP = "gyre_dlq_group"
DLQ_ATTEMPTS = "gyre_dlq_attempts"
DLQ_TIME = "gyre_dlq_time"
DLQ_CUT = "gyre_dlq_cut"
"""Present when a dead letter was too big for the broker: what was cut (value, headers) and why."""
# Longest error text kept in a dead-letter header; a traceback can be huge and brokers cap record size.
DLQ_ERROR_MAX_CHARS = 2000

Headers = list[tuple[str, bytes]]
"""Kafka record headers as aiokafka takes and returns them: ordered (name, value) pairs."""


def new_event_id() -> str:
    """A random (version 4, RFC 9562) UUID in canonical text form, for ``ce_id``."""
    return random_uuid4()


_second_cache: list[object] = [None, ""]


def now_text() -> str:
    """The current time as :func:`format_time` writes it, cheaply (the per-second part is cached)."""
    now = time.time()
    second = int(now)
    if _second_cache[0] != second:
        _second_cache[0] = second
        _second_cache[1] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second_cache[1]}.{int((now - second) * 1_000_000):06d}Z"


_milli_cache: list[object] = [None, b""]


def now_bytes() -> bytes:
    """The current time as ``ce_time`` bytes, to the millisecond (the text is made once per millisecond:
    this is on the publish hot path). Same format as :func:`format_time`."""
    milli = int(time.time() * 1000)
    if _milli_cache[0] != milli:
        second, rest = divmod(milli, 1000)
        if _second_cache[0] != second:
            _second_cache[0] = second
            _second_cache[1] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _milli_cache[1] = f"{_second_cache[1]}.{rest:03d}000Z".encode()
        _milli_cache[0] = milli
    return _milli_cache[1]  # type: ignore[return-value]


def format_time(moment: datetime) -> str:
    """RFC 3339 text of ``moment`` in UTC with microseconds and a ``Z`` suffix.

    Raises:
        ValueError: ``moment`` is naive (no timezone): Gyre never guesses a timezone.
    """
    if moment.tzinfo is None:
        raise ValueError("ce_time needs a timezone-aware datetime (UTC)")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime.

    Raises:
        ValueError: the text is not an RFC 3339 timestamp with an offset, or the instant is not
            representable in UTC (``9999-12-31T23:59:59-23:59`` is past year 9999 there).
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"ce_time {text!r} has no UTC offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"ce_time {text!r} is out of range in UTC") from None


def media_type(content_type: str | None) -> str | None:
    """The bare, lower-case media type of a ``content-type`` value (parameters dropped)."""
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class HeaderTemplate:
    """The constant part of the CloudEvents headers for one event type from one source."""

    constant: tuple[tuple[str, bytes], ...]

    @classmethod
    def for_event(cls, event_type: str, source: str, content_type: str = PROTOBUF) -> HeaderTemplate:
        return cls(
            (
                (CE_SPECVERSION, SPECVERSION.encode()),
                (CE_TYPE, event_type.encode()),
                (CE_SOURCE, source.encode()),
                (CONTENT_TYPE, content_type.encode()),
            )
        )

    def build(self, event_id: str, time_text: str | bytes, extra: Iterable[tuple[str, bytes]] = ()) -> Headers:
        """Headers for one record: ``ce_id``, ``ce_time``, the constant ones, then ``extra``."""
        stamp = time_text if isinstance(time_text, bytes) else time_text.encode()
        headers: Headers = [(CE_ID, event_id.encode()), (CE_TIME, stamp), *self.constant]
        if extra:
            headers.extend(extra)
        return headers


def normalise_extra(headers: Mapping[str, str | bytes] | None) -> list[tuple[str, bytes]]:
    """Caller-supplied headers as (name, bytes) pairs; refuses to override CloudEvents attributes.

    Raises:
        ValueError: a name is one the bus sets itself (``ce_*``, ``content-type``, trace context).
    """
    if not headers:
        return []
    pairs: list[tuple[str, bytes]] = []
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith("ce_") or lowered in (CONTENT_TYPE, TRACEPARENT, TRACESTATE):
            raise ValueError(
                f"header {name!r} is set by the bus; pass event_id=/time= to publish() instead"
            )
        pairs.append((name, value.encode() if isinstance(value, str) else bytes(value)))
    return pairs


def header_map(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, bytes]:
    """Record headers as a dict (the last value wins when a name repeats)."""
    return dict(headers) if headers else {}


def text(headers: Mapping[str, bytes], name: str) -> str | None:
    """A header's value decoded as UTF-8 (invalid bytes replaced), or None when absent."""
    value = headers.get(name)
    return None if value is None else value.decode("utf-8", "replace")


def dead_letter_headers(
    original: Sequence[tuple[str, bytes]] | None,
    *,
    reason: str,
    error: str,
    topic: str,
    partition: int,
    offset: int,
    group: str,
    attempts: int,
    now: datetime | None = None,
) -> Headers:
    """Original headers plus ``gyre_dlq_*`` headers saying why and where the record came from."""
    moment = now or datetime.now(UTC)
    kept = [(k, v) for k, v in (original or ()) if not k.startswith("gyre_dlq_")]
    kept.extend(
        [
            (DLQ_REASON, reason.encode()),
            (DLQ_ERROR, error[:DLQ_ERROR_MAX_CHARS].encode("utf-8", "replace")),
            (DLQ_TOPIC, topic.encode()),
            (DLQ_PARTITION, str(partition).encode()),
            (DLQ_OFFSET, str(offset).encode()),
            (DLQ_GROUP, group.encode()),
            (DLQ_ATTEMPTS, str(attempts).encode()),
            (DLQ_TIME, format_time(moment).encode()),
        ]
    )
    return kept
