"""CloudEvents header encoding and record decoding, without a broker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import json_format

from gyre_common.bus import EventDecodeError, decode_record
from gyre_common.bus import headers as h
from gyre_common.bus.envelope import external_event_id
from gyre_contracts.gyre.events.v1 import events_pb2 as ev

PREFIX = "gyre."


@dataclass
class Record:
    topic: str
    value: bytes | None
    headers: list[tuple[str, bytes]]
    key: bytes | None = b"e1"
    partition: int = 2
    offset: int = 41
    timestamp: int = 1_700_000_000_000


def feature() -> ev.FeatureEvent:
    event = ev.FeatureEvent(feature_view="fv", entity_id="e1")
    event.values["x"].double_value = 1.5
    return event


def published_headers(event_type: str = "gyre.events.v1.FeatureEvent") -> list[tuple[str, bytes]]:
    template = h.HeaderTemplate.for_event(event_type, "features")
    return template.build("id-1", "2024-05-01T12:00:00.123456Z", [("tenant", b"acme")])


def test_template_builds_every_cloudevents_header() -> None:
    headers = dict(published_headers())
    assert headers == {
        "ce_id": b"id-1",
        "ce_time": b"2024-05-01T12:00:00.123456Z",
        "ce_specversion": b"1.0",
        "ce_type": b"gyre.events.v1.FeatureEvent",
        "ce_source": b"features",
        "content-type": b"application/protobuf",
        "tenant": b"acme",
    }


def test_times_are_rfc3339_utc_both_ways() -> None:
    moment = datetime(2024, 5, 1, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert h.format_time(moment) == "2024-05-01T12:00:00.000005Z"
    assert h.parse_time("2024-05-01T12:00:00.000005Z") == moment
    assert h.parse_time("2024-05-01T14:00:00+02:00").tzinfo == UTC
    with pytest.raises(ValueError):
        h.format_time(datetime(2024, 5, 1))
    with pytest.raises(ValueError):
        h.parse_time("2024-05-01T12:00:00")


def test_event_ids_are_random_uuid4() -> None:
    first, second = h.new_event_id(), h.new_event_id()
    assert first != second and len(first) == 36 and first[14] == "4"


def test_reserved_headers_cannot_be_overridden() -> None:
    assert h.normalise_extra({"tenant": "acme", "raw": b"\x00"}) == [("tenant", b"acme"), ("raw", b"\x00")]
    for name in ("ce_id", "CE_TYPE", "content-type", "traceparent"):
        with pytest.raises(ValueError, match="set by the bus"):
            h.normalise_extra({name: "x"})


def test_dead_letter_headers_keep_the_originals_and_name_the_reason() -> None:
    original = [*published_headers(), ("gyre_dlq_reason", b"stale")]
    headers = h.dead_letter_headers(
        original, reason="handler_failed", error="x" * 5000, topic="gyre.features.events",
        partition=3, offset=7, group="gyre.monitor", attempts=6,
    )
    as_dict = dict(headers)
    assert as_dict["ce_id"] == b"id-1" and as_dict["tenant"] == b"acme"
    assert as_dict["gyre_dlq_reason"] == b"handler_failed"
    assert [k for k, _ in headers].count("gyre_dlq_reason") == 1
    assert len(as_dict["gyre_dlq_error"]) == h.DLQ_ERROR_MAX_CHARS
    assert (as_dict["gyre_dlq_partition"], as_dict["gyre_dlq_offset"]) == (b"3", b"7")
    assert as_dict["gyre_dlq_group"] == b"gyre.monitor" and as_dict["gyre_dlq_attempts"] == b"6"


def test_decode_protobuf_record_into_an_envelope() -> None:
    env = decode_record(Record("gyre.features.events", feature().SerializeToString(), published_headers()), PREFIX)
    assert env.message == feature()
    assert (env.ce_id, env.ce_type, env.source, env.key) == ("id-1", "gyre.events.v1.FeatureEvent", "features", "e1")
    assert env.time == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert (env.topic, env.partition, env.offset) == ("gyre.features.events", 2, 41)
    assert env.content_type == "application/protobuf" and env.traceparent is None


def test_external_json_without_headers_gets_a_deterministic_id() -> None:
    body = json_format.MessageToJson(feature()).encode()
    env = decode_record(Record("gyre.features.events", body, [], key=None), PREFIX)
    again = decode_record(Record("gyre.features.events", body, [], key=None), PREFIX)
    assert env.message == feature() and env.content_type == "application/json"
    assert env.ce_id == again.ce_id == external_event_id("gyre.features.events", 2, 41)
    assert env.time == datetime.fromtimestamp(1_700_000_000, UTC)
    assert env.source == "kafka:gyre.features.events" and env.key is None


@pytest.mark.parametrize(
    ("topic", "value", "headers", "reason"),
    [
        ("gyre.features.events", b"\xff\xff", [], "decode_error"),
        ("gyre.features.events", b'{"entityId": 1, "bogus": 2}', [("content-type", b"application/json")],
         "decode_error"),
        ("gyre.inference.events", b'{"predictionId": "p"}', [("content-type", b"application/json")],
         "json_not_allowed"),
        ("gyre.features.events", b"", [("content-type", b"text/csv")], "unsupported_content_type"),
        ("gyre.features.events", b"", [("ce_type", b"gyre.events.v1.InferenceEvent")], "type_mismatch"),
        ("gyre.nope", b"", [], "unknown_topic"),
        ("gyre.features.events", b"", [("ce_time", b"yesterday")], "bad_header"),
    ],
)
def test_poison_records_say_why(topic: str, value: bytes, headers: list[tuple[str, bytes]], reason: str) -> None:
    with pytest.raises(EventDecodeError) as caught:
        decode_record(Record(topic, value, headers), PREFIX)
    assert caught.value.reason == reason


def test_json_with_unknown_fields_is_refused_not_silently_dropped() -> None:
    with pytest.raises(EventDecodeError, match="bogus"):
        decode_record(
            Record("gyre.features.events", b'{"entityId": "e", "bogus": 2}', [("content-type", b"application/json")]),
            PREFIX,
        )


def test_every_record_gets_a_traceparent_even_with_tracing_off() -> None:
    from gyre_common.bus import tracing

    [(name, value)] = tracing.trace_headers()  # no current span: a fresh sampled root
    context = tracing.parse_traceparent(value.decode())
    assert name == "traceparent" and context is not None and context.trace_flags == 1
    assert tracing.trace_headers()[0][1] != value  # random per record
    assert tracing.format_traceparent(context) == value
    for bad in (None, "", "00-xyz", "ff-" + value.decode()[3:], "00-" + "0" * 32 + "-" + "1" * 16 + "-01"):
        assert tracing.parse_traceparent(bad) is None


def test_now_bytes_is_rfc3339_utc_to_the_millisecond() -> None:
    stamp = h.now_bytes()
    moment = h.parse_time(stamp.decode())
    assert stamp.endswith(b"000Z") and abs(moment - datetime.now(UTC)) < timedelta(seconds=5)


def test_envelope_text_attributes_are_decoded_on_access() -> None:
    headers = [*published_headers(), ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    env = decode_record(Record("gyre.features.events", feature().SerializeToString(), headers), PREFIX)
    assert (env.ce_id, env.source, env.key) == ("id-1", "features", "e1")
    assert env.traceparent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert env.trace_context() is not None and "id-1" in repr(env)
