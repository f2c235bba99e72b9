"""The features service's pure domain: validation, TTL, merges, fingerprints, conversions."""

from __future__ import annotations

import hashlib
import json
import struct
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import json_format

from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_contracts.gyre.features.v1 import features_service_pb2 as pb
from gyre_features import convert
from gyre_features.domain.errors import Conflict, InvalidArgument, InvalidFeatureEvent, NotFound
from gyre_features.domain.events import FeatureRow, RawFeatureEvent, merge_same_key, validate_event
from gyre_features.domain.fingerprint import TrainingSetFingerprint
from gyre_features.domain.online import FeatureStatus, OnlineValue, online_result
from gyre_features.domain.timestamps import unix_us
from gyre_features.domain.training import (
    TrainingSetChunk,
    TrainingSetQuery,
    TrainingSetSchema,
    training_columns,
)
from gyre_features.domain.values import ValueType
from gyre_features.domain.views import FeatureSpec, FeatureView

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
VIEW = FeatureView(
    "customer_stats", "customer",
    (FeatureSpec("spend", ValueType.FLOAT), FeatureSpec("orders", ValueType.INT),
     FeatureSpec("segment", ValueType.STRING), FeatureSpec("churned", ValueType.BOOL)),
    ttl_seconds=60,
)
VIEWS = {VIEW.name: VIEW}


def raw(**overrides: object) -> RawFeatureEvent:
    base: dict[str, object] = dict(
        feature_view=VIEW.name, entity_id="c1", event_time=T0,
        values={"spend": (ValueType.FLOAT, 1.5), "orders": (ValueType.INT, 2)},
        event_id="e1", received_time=T0 + timedelta(seconds=1),
    )
    base.update(overrides)
    return RawFeatureEvent(**base)  # type: ignore[arg-type]


def test_a_valid_event_becomes_a_row() -> None:
    row = validate_event(VIEWS, raw())
    assert row.values == {"spend": 1.5, "orders": 2}
    assert row.created_time == T0 + timedelta(seconds=1)  # broker time replaces a missing created_time
    assert not row.complete


def test_an_int_is_accepted_for_a_float_feature_and_a_missing_value_is_none() -> None:
    row = validate_event(VIEWS, raw(values={"spend": (ValueType.INT, 3), "orders": (None, None),
                                            "segment": (ValueType.STRING, "g"), "churned": (ValueType.BOOL, True)}))
    assert row.values == {"spend": 3.0, "orders": None, "segment": "g", "churned": True}
    assert isinstance(row.values["spend"], float) and row.complete


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"feature_view": ""}, "missing_feature_view"),
    ({"feature_view": "nope"}, "unknown_view"),
    ({"entity_id": ""}, "missing_entity_id"),
    ({"event_time": None}, "missing_event_time"),
    ({"values": {}}, "no_values"),
    ({"values": {"colour": (ValueType.STRING, "red")}}, "unknown_feature"),
    ({"values": {"orders": (ValueType.FLOAT, 2.5)}}, "wrong_type"),
    ({"values": {"churned": (ValueType.INT, 1)}}, "wrong_type"),
    ({"values": {"spend": (ValueType.FLOAT, float("nan"))}}, "bad_value"),
])
def test_invalid_events_say_why(overrides: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidFeatureEvent) as info:
        validate_event(VIEWS, raw(**overrides))
    assert info.value.reason == reason


def test_view_definitions_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="invalid"):
        FeatureView("Bad-Name", "e", (FeatureSpec("x", ValueType.INT),))
    with pytest.raises(InvalidArgument, match="at least one feature"):
        FeatureView("v", "e", ())
    with pytest.raises(InvalidArgument, match="twice"):
        FeatureView("v", "e", (FeatureSpec("x", ValueType.INT), FeatureSpec("x", ValueType.BOOL)))
    with pytest.raises(InvalidArgument, match="ttl_seconds"):
        FeatureView("v", "e", (FeatureSpec("x", ValueType.INT),), ttl_seconds=-1)


def test_view_updates_may_only_add() -> None:
    VIEW.check_update(FeatureView(VIEW.name, VIEW.entity, (*VIEW.features, FeatureSpec("age", ValueType.INT)), 5))
    with pytest.raises(Conflict):
        VIEW.check_update(FeatureView(VIEW.name, VIEW.entity, VIEW.features[1:]))
    with pytest.raises(Conflict):
        VIEW.check_update(FeatureView(VIEW.name, "other", VIEW.features))


def test_online_status_and_ttl_edges() -> None:
    assert online_result(VIEW, None, T0).status == FeatureStatus.NOT_FOUND
    fresh = OnlineValue(4.0, T0)
    assert online_result(VIEW, fresh, T0 + timedelta(seconds=60)).status == FeatureStatus.PRESENT  # inclusive
    expired = online_result(VIEW, fresh, T0 + timedelta(seconds=60, microseconds=1))
    assert (expired.status, expired.value, expired.event_time) == (FeatureStatus.OUTSIDE_TTL, None, T0)
    assert online_result(VIEW, OnlineValue(None, T0), T0).status == FeatureStatus.NULL_VALUE
    forever = FeatureView("v", "e", (FeatureSpec("x", ValueType.INT),), ttl_seconds=0)
    assert online_result(forever, OnlineValue(1, T0), T0 + timedelta(days=3650)).status == FeatureStatus.PRESENT


def test_rows_with_the_same_key_merge_later_created_wins() -> None:
    def row(created: int, **values: object) -> FeatureRow:
        return FeatureRow(VIEW.name, "c1", T0, T0 + timedelta(seconds=created), values, False, f"e{created}")  # type: ignore[arg-type]

    merged = merge_same_key([row(5, spend=2.0), row(1, spend=1.0, orders=1), row(3, segment="x")])
    assert len(merged) == 1
    assert merged[0].values == {"spend": 2.0, "orders": 1, "segment": "x"}
    assert merged[0].event_id == "e5"


def test_training_columns_put_the_label_last() -> None:
    assert [c.name for c in training_columns(VIEW, TrainingSetQuery(VIEW.name, "churned"))] == [
        "spend", "orders", "segment", "churned"]
    chosen = training_columns(VIEW, TrainingSetQuery(VIEW.name, "churned", features=("segment", "spend")))
    assert [c.name for c in chosen] == ["segment", "spend", "churned"]
    with pytest.raises(NotFound):
        training_columns(VIEW, TrainingSetQuery(VIEW.name, "nope"))
    with pytest.raises(InvalidArgument):
        training_columns(VIEW, TrainingSetQuery(VIEW.name, "churned", features=("churned",)))
    with pytest.raises(InvalidArgument):
        TrainingSetQuery(VIEW.name, "churned", start=T0, end=T0)


def test_fingerprint_follows_the_documented_encoding_whatever_the_chunking() -> None:
    features = (FeatureSpec("spend", ValueType.FLOAT), FeatureSpec("segment", ValueType.STRING))
    schema = TrainingSetSchema(VIEW.name, features, FeatureSpec("churned", ValueType.BOOL), None, T0)
    whole = TrainingSetChunk(["c1", "c2"], [T0, T0], [[1.5, None], ["x", "é"]], [True, False])
    one = TrainingSetFingerprint(schema)
    one.update(whole)
    split = TrainingSetFingerprint(schema)
    split.update(TrainingSetChunk(["c1"], [T0], [[1.5], ["x"]], [True]))
    split.update(TrainingSetChunk(["c2"], [T0], [[None], ["é"]], [False]))
    assert one.hexdigest() == split.hexdigest() and one.rows == 2

    def strings(*items: str) -> bytes:
        return b"".join(len(x.encode()).to_bytes(4, "little") + x.encode() for x in items)

    us = unix_us(T0)
    assert us == int(T0.timestamp()) * 1_000_000
    columns = [
        ("entity_id:string", strings("c1", "c2"), b"\x01\x01"),
        ("event_time:timestamp_us", struct.pack("<qq", us, us), b"\x01\x01"),
        ("spend:float", struct.pack("<dd", 1.5, 0.0), b"\x01\x00"),
        ("segment:string", strings("x", "é"), b"\x01\x01"),
        ("churned:bool", b"\x01\x00", b"\x01\x01"),
    ]
    expected = hashlib.sha256()
    for header, values, present in columns:
        expected.update(header.encode() + b"\n")
        expected.update(hashlib.sha256(values).digest())
        expected.update(hashlib.sha256(present).digest())
    assert one.hexdigest() == expected.hexdigest()


def test_the_documented_json_event_decodes_to_a_valid_row() -> None:
    text = json.dumps({
        "featureView": "customer_stats", "entityId": "c-42", "eventTime": "2025-03-01T12:00:00Z",
        "values": {"orders": {"int64Value": "7"}, "spend": {"doubleValue": 53.2},
                   "segment": {"stringValue": "gold"}, "churned": {"boolValue": False}},
    })
    event = json_format.Parse(text, events_pb2.FeatureEvent())
    row = validate_event(VIEWS, convert.raw_event(event, "id", T0))
    assert row.values == {"orders": 7, "spend": 53.2, "segment": "gold", "churned": False}
    assert row.event_time == T0 and row.complete


def test_view_and_columns_round_trip_through_protobuf() -> None:
    assert convert.view_from_proto(convert.view_to_proto(VIEW)) == VIEW
    with pytest.raises(InvalidArgument, match="needs a type"):
        convert.view_from_proto(pb.FeatureView(name="v", entity="e", features=[pb.FeatureSpec(name="x")]))
    column = convert.column_to_proto(FeatureSpec("orders", ValueType.INT), [1, None, 3])
    assert list(column.int64_values) == [1, 0, 3] and list(column.present) == [True, False, True]
