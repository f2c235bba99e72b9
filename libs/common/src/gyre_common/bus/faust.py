"""faust-streaming apps on Gyre's settings and event encoding.

Faust is an optional extra (``pip install gyre-common[faust]``); it is imported only when
:func:`make_faust_app` runs, so services without agents never load it. Use faust where its tables,
windows and joins earn their keep; plain :class:`~gyre_common.bus.Consumer` batches are several
times faster for high-volume stateless consumption (docs/bus.md).

Typical agent::

    app = make_faust_app("feedback", kafka_settings)
    inference = faust_topic(app, kafka_settings, topics.INFERENCE_EVENTS)

    @app.agent(inference)
    async def join(stream):
        async for event in stream.events():
            env = envelope_from_faust(event, kafka_settings.topic_prefix)
            ...

A faust codec is deliberately not registered: faust hands a codec only the value bytes, while an
:class:`Envelope` needs the topic and the CloudEvents headers too, so decoding works on the event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gyre_common.bus.envelope import Envelope, decode_record
from gyre_common.settings import KafkaSettings
from gyre_common.topics import full_name

if TYPE_CHECKING:
    import faust


def faust_broker_url(settings: KafkaSettings) -> str:
    """``bootstrap_servers`` as faust's broker URL list (``kafka://h1:9092;kafka://h2:9092``)."""
    return ";".join(f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",") if server.strip())


def make_faust_app(service: str, settings: KafkaSettings, **kw: Any) -> faust.App:
    """A faust app configured like every Gyre client.

    The app id (which is also its consumer group and the prefix of its changelog topics) is
    ``topic_prefix + service``. Producers use ``acks=all`` without idempotence (faust only turns
    idempotence on for exactly-once transactions, which Tansu cannot do); processing is
    at-least-once; new groups start from the earliest offset; faust's own web server is off
    because every service already serves HTTP. Keyword arguments override any of these.

    Raises:
        ModuleNotFoundError: faust-streaming is not installed (install ``gyre-common[faust]``).
    """
    import faust

    options: dict[str, Any] = {
        "broker": faust_broker_url(settings),
        "broker_client_id": f"{settings.client_id}-{service}",
        "producer_acks": -1,
        "processing_guarantee": "at_least_once",
        "producer_linger": settings.linger_ms / 1000.0,
        "producer_request_timeout": settings.request_timeout_ms / 1000.0,
        "broker_session_timeout": settings.session_timeout_ms / 1000.0,
        "broker_heartbeat_interval": settings.heartbeat_interval_ms / 1000.0,
        "topic_partitions": settings.default_partitions,
        "topic_replication_factor": settings.replication_factor,
        "consumer_auto_offset_reset": "earliest",
        "web_enabled": False,
    }
    options.update(kw)
    return faust.App(f"{settings.topic_prefix}{service}", **options)


def faust_topic(app: faust.App, settings: KafkaSettings, base: str) -> faust.TopicT:
    """A faust topic for a Gyre base topic, yielding raw bytes for :func:`envelope_from_faust`."""
    from gyre_common.bus.codec import topic_spec

    topic_spec(base)  # unknown names fail here, clearly
    return app.topic(
        full_name(base, settings.topic_prefix),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )


@dataclass(frozen=True, slots=True)
class _FaustRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: int


def envelope_from_faust(event: Any, prefix: str) -> Envelope:
    """Decode a faust ``Event`` (from ``stream.events()``) into the bus :class:`Envelope`.

    Same rules as the bus consumer (protobuf or allowed JSON, CloudEvents headers, deterministic
    ids for header-less records).

    Raises:
        EventDecodeError: the record is poison; the agent decides (log, skip, or forward it).
    """
    message = event.message
    headers = message.headers or []
    if hasattr(headers, "items"):
        headers = list(headers.items())
    raw_key = message.key
    key = raw_key.encode() if isinstance(raw_key, str) else raw_key
    raw_value = message.value
    value = raw_value.encode() if isinstance(raw_value, str) else raw_value
    record = _FaustRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=key,
        value=value,
        headers=list(headers),
        # faust keeps the record timestamp in seconds; the decoder wants Kafka's milliseconds.
        timestamp=int((message.timestamp or 0) * 1000),
    )
    return decode_record(record, prefix)
