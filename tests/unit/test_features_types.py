"""Text and float-vector feature types (#11): view rules, validation, JSON/protobuf conversion, fingerprints."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from array import array
from datetime import UTC, datetime

import pytest
from google.protobuf import json_format

from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_contracts.gyre.features.v1 import features_service_pb2 as pb
from gyre_features import convert
from gyre_features.domain.errors import Conflict, InvalidArgument, InvalidFeatureEvent
from gyre_features.domain.events import RawFeatureEvent, validate_event
from gyre_features.domain.fingerprint import TrainingSetFingerprint
from gyre_features.domain.training import TrainingSetChunk, TrainingSetSchema
from gyre_features.domain.values import (
    MAX_TEXT_BYTES,
    FloatVector,
    ValueType,
    stored_value,
    vector_from_json,
    vector_to_json,
)
from gyre_features.domain.views import FeatureSpec, FeatureView

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
VIEW = FeatureView("reviews", "review", (
    FeatureSpec("text", ValueType.TEXT, max_text_bytes=10),
    FeatureSpec("note", ValueType.TEXT),
    FeatureSpec("embedding", ValueType.FLOAT_VECTOR, dimension=3),
    FeatureSpec("label", ValueType.STRING),
))
VIEWS = {VIEW.name: VIEW}


def raw(values: dict[str, tuple[ValueType | None, object]]) -> RawFeatureEvent:
    return RawFeatureEvent(feature_view="reviews", entity_id="r1", event_time=T0, values=values, event_id="e",
                           received_time=T0)


def reason(values: dict[str, tuple[ValueType | None, object]]) -> str:
    with pytest.raises(InvalidFeatureEvent) as info:
        validate_event(VIEWS, raw(values))
    return info.value.reason


def test_type_parameters_are_checked_and_the_dimension_cannot_change() -> None:
    with pytest.raises(InvalidArgument, match="dimension must be 1 to 16384"):
        FeatureView("v", "e", (FeatureSpec("x", ValueType.FLOAT_VECTOR),))
    with pytest.raises(InvalidArgument, match="only float_vector features take a dimension"):
        FeatureView("v", "e", (FeatureSpec("x", ValueType.FLOAT, dimension=2),))
    with pytest.raises(InvalidArgument, match="only text features take max_text_bytes"):
        FeatureView("v", "e", (FeatureSpec("x", ValueType.STRING, max_text_bytes=2),))
    with pytest.raises(InvalidArgument, match="max_text_bytes must be 1 to 65536"):
        FeatureView("v", "e", (FeatureSpec("x", ValueType.TEXT, max_text_bytes=MAX_TEXT_BYTES + 1),))
    wider = FeatureView("reviews", "review", tuple(
        FeatureSpec(s.name, s.type, dimension=4) if s.type == ValueType.FLOAT_VECTOR else s for s in VIEW.features))
    with pytest.raises(Conflict, match="dimension 3"):
        VIEW.check_update(wider)
    looser = FeatureView("reviews", "review", tuple(
        FeatureSpec(s.name, s.type, max_text_bytes=20) if s.name == "text" else s for s in VIEW.features))
    VIEW.check_update(looser)  # a text limit may change: it applies to later events
    assert VIEW.feature("note").text_limit_bytes == MAX_TEXT_BYTES


def test_text_and_vectors_validate() -> None:
    row = validate_event(VIEWS, raw({"text": (ValueType.STRING, "héllo"),
                                     "embedding": (ValueType.FLOAT_VECTOR, [0.1, 2, -3.5])}))
    assert row.values["text"] == "héllo"
    vector = row.values["embedding"]
    assert isinstance(vector, FloatVector) and vector.values == tuple(array("f", [0.1, 2.0, -3.5]))
    # The limit is in UTF-8 bytes: 5 "é" are 10 bytes (fits), 6 are 12 (refused).
    assert validate_event(VIEWS, raw({"text": (ValueType.STRING, "é" * 5)})).values["text"] == "é" * 5
    assert reason({"text": (ValueType.STRING, "é" * 6)}) == "bad_value"
    assert reason({"note": (ValueType.STRING, "x" * (MAX_TEXT_BYTES + 1))}) == "bad_value"
    assert reason({"embedding": (ValueType.FLOAT_VECTOR, [1.0, 2.0])}) == "bad_value"
    assert reason({"embedding": (ValueType.FLOAT_VECTOR, [1.0, math.inf, 0.0])}) == "bad_value"
    assert reason({"embedding": (ValueType.FLOAT_VECTOR, [1.0, 1e39, 0.0])}) == "bad_value"  # float32 overflow
    assert reason({"embedding": (ValueType.FLOAT, 1.0)}) == "wrong_type"
    assert reason({"text": (ValueType.FLOAT_VECTOR, [1.0, 2.0, 3.0])}) == "wrong_type"
    assert reason({"label": (ValueType.FLOAT_VECTOR, [1.0, 2.0, 3.0])}) == "wrong_type"
    # A missing value is fine for every type.
    assert validate_event(VIEWS, raw({"embedding": (None, None)})).values == {"embedding": None}


def test_json_and_protobuf_events_carry_text_and_vectors() -> None:
    message = events_pb2.FeatureEvent()
    json_format.Parse(json.dumps({
        "featureView": "reviews", "entityId": "r1", "eventTime": "2025-03-01T12:00:00Z",
        "values": {"text": {"stringValue": "good"}, "embedding": {"floatVector": {"values": [0.5, -1, 2.25]}}},
    }), message)
    event = convert.raw_event(message, "id", T0)
    row = validate_event(VIEWS, event)
    assert row.values == {"text": "good", "embedding": FloatVector((0.5, -1.0, 2.25))}
    # Back out: text as string_value, vectors as float_vector.
    assert convert.value_to_proto(ValueType.TEXT, "good").string_value == "good"
    out = convert.value_to_proto(ValueType.FLOAT_VECTOR, row.values["embedding"])
    assert out.WhichOneof("kind") == "float_vector" and list(out.float_vector.values) == [0.5, -1.0, 2.25]
    # The binary wire form is packed float32: 3 elements are 12 bytes of payload.
    assert len(out.float_vector.SerializeToString()) == 2 + 12


def test_views_and_columns_convert() -> None:
    message = convert.view_to_proto(VIEW)
    assert [(f.type, f.dimension, f.max_text_bytes) for f in message.features] == [
        (pb.VALUE_TYPE_TEXT, 0, 10), (pb.VALUE_TYPE_TEXT, 0, 0), (pb.VALUE_TYPE_FLOAT_VECTOR, 3, 0),
        (pb.VALUE_TYPE_STRING, 0, 0)]
    assert convert.view_from_proto(message) == VIEW
    vectors = convert.column_to_proto(VIEW.feature("embedding"), [FloatVector((1.0, 2.0, 3.0)), None])
    assert vectors.dimension == 3 and list(vectors.present) == [True, False]
    assert list(vectors.float_vector_values) == [1.0, 2.0, 3.0, 0.0, 0.0, 0.0]
    texts = convert.column_to_proto(VIEW.feature("text"), ["a", None])
    assert texts.type == pb.VALUE_TYPE_TEXT and list(texts.string_values) == ["a", ""]


def test_stored_form_round_trips_and_is_compact() -> None:
    vector = FloatVector.of([0.1 * i for i in range(384)])
    stored = json.loads(json.dumps(vector_to_json(vector)))
    assert vector_from_json(stored) == vector and stored_value(stored) == vector
    assert stored["n"] == pytest.approx(math.sqrt(sum(v * v for v in vector.values)))
    assert len(stored["f32"]) == 4 * 384 * 4 // 3  # base64 of 384 float32
    assert stored_value("text") == "text" and stored_value(1.5) == 1.5


def test_fingerprint_encodes_vectors_as_float32_and_text_as_strings() -> None:
    schema = TrainingSetSchema("reviews", (VIEW.feature("embedding"),), VIEW.feature("note"), None, T0)
    fingerprint = TrainingSetFingerprint(schema)
    fingerprint.update(TrainingSetChunk(["r1", "r2"], [T0, T0], [[FloatVector((1.0, 2.0, 3.0)), None]], ["a", None]))

    def lengths(*parts: bytes) -> bytes:
        return b"".join(len(p).to_bytes(4, "little") + p for p in parts)

    us = int(T0.timestamp() * 1_000_000)
    expected = hashlib.sha256()
    for name, kind, values, present in [
        ("entity_id", "string", lengths(b"r1", b"r2"), b"\x01\x01"),
        ("event_time", "timestamp_us", struct.pack("<qq", us, us), b"\x01\x01"),
        ("embedding", "float_vector[3]", struct.pack("<6f", 1, 2, 3, 0, 0, 0), b"\x01\x00"),
        ("note", "text", lengths(b"a", b""), b"\x01\x00"),
    ]:
        expected.update(f"{name}:{kind}\n".encode())
        expected.update(hashlib.sha256(values).digest())
        expected.update(hashlib.sha256(present).digest())
    assert fingerprint.hexdigest() == expected.hexdigest()
