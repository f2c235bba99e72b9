"""Property tests of record decoding: whatever a producer sends, ``decode_record`` returns an
Envelope or raises ``EventDecodeError``, never anything else (a stray exception would stop a
consumer instead of dead-lettering one record)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gyre_common.bus import Envelope, EventDecodeError, decode_record, message_class
from gyre_common.bus import headers as h
from gyre_contracts.gyre.events.v1 import events_pb2 as ev

PREFIX = "gyre."
TOPICS = [f"{PREFIX}features.events", f"{PREFIX}inference.events", f"{PREFIX}training.requests",
          f"{PREFIX}nope.events", "other.features.events"]
message_class("gyre.events.v1.FeatureEvent")  # import the generated modules before the deadline applies

FUZZ = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
"""Bounded so the file runs in seconds; the deadline (ms per example) catches a pathological parse."""


@dataclass
class Record:
    topic: str
    value: bytes | None
    headers: list[tuple[str, bytes | None]] | None
    key: bytes | None
    timestamp: Any
    partition: int = 0
    offset: int = 7


ODD_TIMES = [
    "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2024-05-01T12:00:00Z", "2024-05-01T12:00:00",
    "2024-02-30T00:00:00Z", "2024-05-01T12:00:00.123456789Z", "24:00", "", "NaN", "+999999-01-01T00:00:00Z",
    "2024-05-01T12:00:00+99:00", "\u0661\u0662:00", "2024-05-01T12:00:00\x00Z",
]
header_names = st.sampled_from([h.CE_ID, h.CE_TYPE, h.CE_SOURCE, h.CE_TIME, h.CE_SPECVERSION, h.CONTENT_TYPE,
                                h.TRACEPARENT, h.TRACESTATE, "gyre_dlq_reason", "x"]) | st.text(max_size=8)
header_values = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.sampled_from(ODD_TIMES).map(str.encode),
    st.sampled_from([b"gyre.events.v1.FeatureEvent", b"gyre.events.v1.InferenceEvent", b"application/json",
                     b"application/protobuf", b"text/json; charset=utf-8", b"application/x-protobuf", b"image/png",
                     b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", b"\xff\xfe"]),
    st.text(max_size=30).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
headers = st.none() | st.lists(st.tuples(header_names, header_values), max_size=8)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "9999-12-31T23:59:59-23:59"]),
)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)
feature_json = st.fixed_dictionaries(
    {},
    optional={
        "featureView": json_scalars, "entityId": json_scalars, "source": json_scalars,
        "eventTime": st.sampled_from(ODD_TIMES) | json_scalars,
        "values": st.dictionaries(st.text(max_size=6), st.dictionaries(
            st.sampled_from(["doubleValue", "int64Value", "stringValue", "boolValue", "nope"]), json_scalars,
            max_size=2), max_size=3),
        "extra": json_values,
    },
)


def _dumps(document: object) -> bytes:
    # Python's json writes NaN/Infinity and huge integers: exactly the odd input wanted here.
    return json.dumps(document, allow_nan=True).encode()


def _valid_feature(view: str, number: float) -> bytes:
    event = ev.FeatureEvent(feature_view=view, entity_id="e")
    event.values["x"].double_value = number
    return event.SerializeToString()


payloads = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.binary(max_size=60).map(lambda b: b"{" + b),
    feature_json.map(_dumps),
    json_values.map(_dumps),
    st.builds(_valid_feature, st.text(max_size=10), st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(lambda pid: ev.InferenceEvent(prediction_id=pid).SerializeToString(), st.text(max_size=10)),
    st.builds(lambda pid: ev.InferenceEvent(prediction_id=pid).SerializeToString()[:-1], st.text(min_size=1,
                                                                                                  max_size=10)),
)
timestamps = st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                       st.floats(allow_nan=True, allow_infinity=True))


def _exercise(envelope: Envelope) -> None:
    """Everything a handler may read must be readable."""
    assert envelope.time.tzinfo is not None
    for value in (envelope.ce_id, envelope.source, envelope.key, envelope.traceparent, envelope.tracestate,
                  envelope.ce_type, envelope.content_type, repr(envelope)):
        assert value is None or isinstance(value, str)
    envelope.trace_context()


@FUZZ
@given(topic=st.sampled_from(TOPICS), value=payloads, record_headers=headers,
       key=st.none() | st.binary(max_size=20), timestamp=timestamps)
@example(topic=TOPICS[0], value=b'{"featureView": "fv", "entityId": "e"}',
         record_headers=[("ce_time", b"9999-12-31T23:59:59-23:59")], key=None, timestamp=1)
@example(topic=TOPICS[0], value=b'{"featureView": "fv", "entityId": "e", "values": {"x": {"doubleValue": NaN}}}',
         record_headers=None, key=None, timestamp=10**20)
@example(topic=TOPICS[0], value=b"[" * 100_000, record_headers=[("content-type", b"application/json")], key=None,
         timestamp=None)
def test_decode_record_returns_an_envelope_or_raises_its_own_error(
    topic: str, value: bytes | None, record_headers: list[tuple[str, bytes | None]] | None, key: bytes | None,
    timestamp: Any,
) -> None:
    record = Record(topic, value, record_headers, key, timestamp)
    try:
        envelope = decode_record(record, PREFIX)
    except EventDecodeError as exc:
        assert exc.reason and isinstance(exc.detail, str)
        return
    _exercise(envelope)


@FUZZ
@given(record_headers=st.lists(st.tuples(header_names, header_values), max_size=6),
       view=st.text(max_size=10), number=st.floats(allow_nan=True, allow_infinity=True))
def test_a_valid_protobuf_body_decodes_whatever_the_other_headers_are(
    record_headers: list[tuple[str, bytes | None]], view: str, number: float,
) -> None:
    # Only the headers the bus checks (ce_type, content-type, ce_time) may make it a poison record.
    checked = {h.CE_TYPE, h.CONTENT_TYPE, h.CE_TIME}
    kept = [(name, value) for name, value in record_headers if name not in checked]
    record = Record(TOPICS[0], _valid_feature(view, number), kept, b"k", 1_700_000_000_000)
    envelope = decode_record(record, PREFIX)
    _exercise(envelope)
    assert isinstance(envelope.message, ev.FeatureEvent) and envelope.message.feature_view == view
    stored = envelope.message.values["x"].double_value
    assert stored == number or (math.isnan(stored) and math.isnan(number))
