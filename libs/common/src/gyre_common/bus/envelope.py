"""The :class:`Envelope` a handler receives, and how a Kafka record becomes one.

Decoding is shared by the bus consumer and faust agents (:mod:`gyre_common.bus.faust`): both give a
record with ``topic, partition, offset, key, value, headers, timestamp``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf.message import Message
from opentelemetry import propagate
from opentelemetry.context import Context

from gyre_common.bus import headers as h
from gyre_common.bus.codec import EventDecodeError, decode_json, decode_protobuf, message_class, topic_spec
from gyre_common.topics import TopicSpec

# uuid5 namespace for ids of records that arrive without ce_id: the same record (topic, partition,
# offset) always gets the same id, so redelivery is still deduplicated.
EXTERNAL_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:gyre:kafka-record")


class RecordLike(Protocol):
    """What the decoder needs from a consumed record (aiokafka ``ConsumerRecord``, faust ``Message``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]] | None: ...
    @property
    def timestamp(self) -> int | float | None: ...


_UNSET: Any = object()


class Envelope:
    """One decoded event with its CloudEvents context and Kafka coordinates.

    The payload is parsed and the headers checked when the record is consumed (a poison record
    never reaches a handler); the text attributes below are decoded from the header bytes on first
    access only, because most handlers read two or three of them and this runs once per record.

    Attributes:
        message: the protobuf event.
        ce_id: CloudEvents id; the dedupe key for idempotent consumers. Records from external
            producers without ``ce_id`` get a deterministic UUID5 of ``topic/partition/offset``.
        ce_type: full protobuf name of the event.
        source: CloudEvents source (the producing service), ``kafka:<topic>`` when absent.
        time: when the event happened, aware UTC (the record timestamp when ``ce_time`` is absent).
        key: the record key decoded as UTF-8 (None when the record has none).
        topic, partition, offset: where the record is in Kafka (full topic name, with prefix).
        headers: every record header, raw (the last value wins when a name repeats).
        content_type: media type the payload came in (``application/protobuf`` or ``application/json``).
        traceparent, tracestate: W3C trace context of the producer, when it sent one.
    """

    __slots__ = (
        "_ce_id",
        "_key",
        "_source",
        "_timestamp",
        "ce_type",
        "content_type",
        "headers",
        "message",
        "offset",
        "partition",
        "time",
        "topic",
    )

    def __init__(self, message: Message, ce_type: str, time: datetime, topic: str, partition: int, offset: int,
                 headers: Mapping[str, bytes], content_type: str, key: bytes | None,
                 timestamp: int | float | None = None) -> None:
        self.message = message
        self.ce_type = ce_type
        self.time = time
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.headers = headers
        self.content_type = content_type
        self._key = key
        self._timestamp = timestamp
        self._ce_id: str = _UNSET
        self._source: str = _UNSET

    @property
    def ce_id(self) -> str:
        if self._ce_id is _UNSET:
            raw = self.headers.get(h.CE_ID)
            self._ce_id = raw.decode("utf-8", "replace") if raw else external_event_id(
                self.topic, self.partition, self.offset)
        return self._ce_id

    @property
    def source(self) -> str:
        if self._source is _UNSET:
            raw = self.headers.get(h.CE_SOURCE)
            self._source = raw.decode("utf-8", "replace") if raw else f"kafka:{self.topic}"
        return self._source

    @property
    def key(self) -> str | None:
        return None if self._key is None else self._key.decode("utf-8", "replace")

    @property
    def traceparent(self) -> str | None:
        raw = self.headers.get(h.TRACEPARENT)
        return None if raw is None else raw.decode("ascii", "replace")

    @property
    def tracestate(self) -> str | None:
        return _utf8(self.headers.get(h.TRACESTATE)) if h.TRACEPARENT in self.headers else None

    def __repr__(self) -> str:
        return (f"Envelope(ce_type={self.ce_type!r}, topic={self.topic!r}, partition={self.partition}, "
                f"offset={self.offset}, ce_id={self.ce_id!r})")

    def trace_context(self) -> Context:
        """The producer's trace context (an empty context when the record carried none)."""
        carrier = {}
        if self.traceparent:
            carrier[h.TRACEPARENT] = self.traceparent
            if self.tracestate:
                carrier[h.TRACESTATE] = self.tracestate
        return propagate.extract(carrier)


def strip_prefix(topic: str, prefix: str) -> str:
    """The base name of a full topic name (``gyre.features.events`` -> ``features.events``)."""
    return topic[len(prefix):] if prefix and topic.startswith(prefix) else topic


def external_event_id(topic: str, partition: int, offset: int) -> str:
    """Deterministic ce_id for a record that came without one."""
    return str(uuid.uuid5(EXTERNAL_ID_NAMESPACE, f"{topic}/{partition}/{offset}"))


def _looks_like_json(payload: bytes) -> bool:
    # A proto3 message never starts with byte '{' (0x7B is field 15 as a start-group tag, and
    # proto3 has no groups), so this sniff cannot mistake Gyre protobuf for JSON.
    stripped = payload.lstrip(b" \t\r\n")
    return stripped[:1] == b"{"


@dataclass(frozen=True, slots=True)
class _TopicCodec:
    """What decoding needs to know about one full topic name, worked out once per topic."""

    spec: TopicSpec
    cls: type[Message]
    event_type_bytes: bytes


_codecs: dict[tuple[str, str], _TopicCodec] = {}
_PROTOBUF_BYTES = h.PROTOBUF.encode()


def _codec(topic: str, prefix: str) -> _TopicCodec:
    codec = _codecs.get((topic, prefix))
    if codec is None:
        try:
            spec = topic_spec(strip_prefix(topic, prefix))
        except ValueError as exc:
            raise EventDecodeError("unknown_topic", str(exc)) from None
        try:
            cls = message_class(spec.event_type)
        except LookupError as exc:
            raise EventDecodeError("unknown_type", str(exc)) from None
        codec = _codecs[(topic, prefix)] = _TopicCodec(spec, cls, spec.event_type.encode())
    return codec


def _utf8(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def decode_record(record: RecordLike, prefix: str) -> Envelope:
    """Turn a consumed record into an :class:`Envelope`.

    The topic (without ``prefix``) decides the event type. Payloads are protobuf unless
    ``content-type`` says JSON; a record with no ``content-type`` at all whose payload is a JSON
    object is read as JSON too (external producers such as kcat often send no headers).

    Raises:
        EventDecodeError: a poison record: unknown topic, ``ce_type`` not the topic's event type,
            JSON on a topic that does not allow it, an unsupported content type, a bad payload or
            a bad header or timestamp. ``reason`` says which. It is the ONLY exception this
            raises: whatever else goes wrong while reading a record (an overflowing date, a header
            of the wrong type, a recursion limit in a JSON parser) is wrapped as ``decode_error``,
            so one odd record is dead-lettered instead of stopping its consumer.
    """
    try:
        return _decode(record, prefix)
    except EventDecodeError:
        raise
    except Exception as exc:
        raise EventDecodeError("decode_error", f"{type(exc).__name__}: {exc}") from exc


def _decode(record: RecordLike, prefix: str) -> Envelope:
    # This runs once per consumed record: bytes are compared before anything is decoded.
    headers = dict(record.headers) if record.headers else {}
    codec = _codec(record.topic, prefix)
    spec = codec.spec
    get = headers.get
    ce_type = get(h.CE_TYPE)
    if ce_type is not None and ce_type != codec.event_type_bytes:
        raise EventDecodeError(
            "type_mismatch", f"ce_type {_utf8(ce_type)!r} on {record.topic}, which carries {spec.event_type}"
        )
    declared = get(h.CONTENT_TYPE)
    payload = record.value or b""
    if declared == _PROTOBUF_BYTES:
        is_json = False
    elif declared is None:
        is_json = spec.json_allowed and _looks_like_json(payload)
    else:
        kind = h.media_type(_utf8(declared))
        if kind in h.PROTOBUF_ALIASES:
            is_json = False
        elif kind in h.JSON_ALIASES:
            is_json = True
        else:
            raise EventDecodeError("unsupported_content_type", f"content-type {_utf8(declared)!r} on {record.topic}")
    if is_json and not spec.json_allowed:
        raise EventDecodeError(
            "json_not_allowed", f"{record.topic} takes protobuf only ({spec.event_type}); got JSON"
        )
    message = decode_json(codec.cls, payload) if is_json else decode_protobuf(codec.cls, payload)

    raw_time = get(h.CE_TIME)
    if raw_time is not None:
        # Parsed here (not lazily): a bad ce_time is a poison record, refused before the handler.
        try:
            time = h.parse_time(raw_time.decode("ascii"))
        except (ValueError, UnicodeDecodeError, OverflowError, AttributeError, TypeError) as exc:
            raise EventDecodeError("bad_header", f"ce_time {raw_time!r}: {exc}") from None
    else:
        stamp = record.timestamp
        try:
            time = datetime.fromtimestamp(stamp / 1000, UTC) if stamp and stamp > 0 else datetime.now(UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise EventDecodeError("bad_timestamp", f"record timestamp {stamp!r}: {exc}") from None
    return Envelope(message, spec.event_type, time, record.topic, record.partition, record.offset, headers,
                    h.JSON if is_json else h.PROTOBUF, record.key, record.timestamp)
