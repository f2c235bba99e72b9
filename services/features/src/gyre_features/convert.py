"""Protobuf <-> domain conversions shared by the gRPC API and the Kafka consumer.

Timestamps: protobuf ``Timestamp`` is UTC by definition; domain datetimes are aware UTC.
"""

from __future__ import annotations

from datetime import datetime

from gyre_common.timeconv import optional_time
from gyre_common.timeconv import timestamp as to_timestamp
from gyre_common.timeconv import to_datetime as to_datetime  # re-exported: api_grpc decodes with it
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_contracts.gyre.features.v1 import features_service_pb2 as pb
from gyre_features.domain.errors import InvalidArgument
from gyre_features.domain.events import RawFeatureEvent
from gyre_features.domain.online import FeatureResult, FeatureStatus
from gyre_features.domain.timestamps import unix_us
from gyre_features.domain.training import TrainingSetChunk
from gyre_features.domain.values import FloatVector, Value, ValueType
from gyre_features.domain.views import FeatureSpec, FeatureView

_TYPE_TO_PROTO = {
    ValueType.FLOAT: pb.VALUE_TYPE_DOUBLE,
    ValueType.INT: pb.VALUE_TYPE_INT64,
    ValueType.STRING: pb.VALUE_TYPE_STRING,
    ValueType.BOOL: pb.VALUE_TYPE_BOOL,
    ValueType.TEXT: pb.VALUE_TYPE_TEXT,
    ValueType.FLOAT_VECTOR: pb.VALUE_TYPE_FLOAT_VECTOR,
}
_TYPE_FROM_PROTO = {number: value_type for value_type, number in _TYPE_TO_PROTO.items()}
_STATUS_TO_PROTO = {
    FeatureStatus.PRESENT: pb.FEATURE_STATUS_PRESENT,
    FeatureStatus.NULL_VALUE: pb.FEATURE_STATUS_NULL_VALUE,
    FeatureStatus.NOT_FOUND: pb.FEATURE_STATUS_NOT_FOUND,
    FeatureStatus.OUTSIDE_TTL: pb.FEATURE_STATUS_OUTSIDE_TTL,
}
_KIND_TYPES = {
    "double_value": ValueType.FLOAT,
    "int64_value": ValueType.INT,
    "string_value": ValueType.STRING,
    "bool_value": ValueType.BOOL,
    "float_vector": ValueType.FLOAT_VECTOR,
}


def value_from_proto(value: common_pb2.FeatureValue) -> tuple[ValueType | None, object | None]:
    """(type, value) of a FeatureValue; (None, None) when no kind is set (a missing value).

    Text arrives as ``string_value`` (type STRING; validation accepts it for a TEXT feature); a
    vector as the sequence of its float32 elements (validated into a FloatVector).
    """
    kind = value.WhichOneof("kind")
    if kind is None:
        return None, None
    if kind == "float_vector":
        return ValueType.FLOAT_VECTOR, value.float_vector.values
    return _KIND_TYPES[kind], getattr(value, kind)


def value_to_proto(value_type: ValueType, value: Value | None) -> common_pb2.FeatureValue:
    """A FeatureValue of ``value`` (empty for None); TEXT as ``string_value``."""
    message = common_pb2.FeatureValue()
    if value is None:
        return message
    if isinstance(value, FloatVector):
        message.float_vector.values.extend(value.values)
    elif value_type == ValueType.FLOAT:
        message.double_value = float(value)
    elif value_type == ValueType.INT:
        message.int64_value = int(value)
    elif value_type in (ValueType.STRING, ValueType.TEXT):
        message.string_value = str(value)
    else:
        message.bool_value = bool(value)
    return message


def raw_event(event: events_pb2.FeatureEvent, event_id: str, received_time: datetime) -> RawFeatureEvent:
    """The domain form of a FeatureEvent, before validation."""
    return RawFeatureEvent(
        feature_view=event.feature_view,
        entity_id=event.entity_id,
        event_time=optional_time(event, "event_time"),
        values={name: value_from_proto(value) for name, value in event.values.items()},
        event_id=event_id,
        received_time=received_time,
        created_time=optional_time(event, "created_time"),
        source=event.source,
    )


def view_from_proto(message: pb.FeatureView) -> FeatureView:
    """A domain view from its protobuf form (created_at/updated_at are ignored).

    Raises:
        InvalidArgument: invalid names, no features, duplicates, an unspecified type, negative TTL.
    """
    specs = []
    for feature in message.features:
        value_type = _TYPE_FROM_PROTO.get(feature.type)
        if value_type is None:
            raise InvalidArgument(f"feature {feature.name!r} needs a type (VALUE_TYPE_DOUBLE, _INT64, _STRING, _BOOL, "
                                  "_TEXT, _FLOAT_VECTOR)")
        specs.append(FeatureSpec(feature.name, value_type, feature.description, feature.dimension,
                                 feature.max_text_bytes))
    return FeatureView(
        name=message.name,
        entity=message.entity,
        features=tuple(specs),
        ttl_seconds=message.ttl_seconds,
        description=message.description,
        owner=message.owner,
        tags=dict(message.tags),
    )


def view_to_proto(view: FeatureView) -> pb.FeatureView:
    """The protobuf form of a stored view."""
    message = pb.FeatureView(
        name=view.name,
        entity=view.entity,
        features=[pb.FeatureSpec(name=f.name, type=_TYPE_TO_PROTO[f.type], description=f.description,
                                 dimension=f.dimension, max_text_bytes=f.max_text_bytes)
                  for f in view.features],
        ttl_seconds=view.ttl_seconds,
        description=view.description,
        owner=view.owner,
        tags=dict(view.tags),
    )
    if view.created_at is not None:
        message.created_at.CopyFrom(to_timestamp(view.created_at))
    if view.updated_at is not None:
        message.updated_at.CopyFrom(to_timestamp(view.updated_at))
    return message


def online_row_to_proto(entity_id: str, found: bool, results: dict[str, FeatureResult],
                        types: dict[str, ValueType], event_time: datetime | None) -> pb.OnlineFeatureRow:
    """One row of GetOnlineFeatures."""
    row = pb.OnlineFeatureRow(entity_id=entity_id, found=found)
    for name, result in results.items():
        row.values[name].CopyFrom(value_to_proto(types[name], result.value))
        row.statuses[name] = _STATUS_TO_PROTO[result.status]
    if event_time is not None:
        row.event_time.CopyFrom(to_timestamp(event_time))
    return row


def column_to_proto(spec: FeatureSpec, values: list[Value | None]) -> pb.Column:
    """A columnar block: the typed list filled with placeholders where ``present`` is false.

    TEXT fills ``string_values`` like STRING; FLOAT_VECTOR fills ``float_vector_values`` row-major
    with ``dimension`` elements per row (zeros for a missing row).
    """
    column = pb.Column(name=spec.name, type=_TYPE_TO_PROTO[spec.type])
    column.present.extend([v is not None for v in values])
    if spec.type == ValueType.FLOAT_VECTOR:
        column.dimension = spec.dimension
        zeros = (0.0,) * spec.dimension
        column.float_vector_values.extend(
            [x for v in values for x in (zeros if v is None else v.values)])  # type: ignore[union-attr]
    elif spec.type == ValueType.FLOAT:
        column.double_values.extend([0.0 if v is None else float(v) for v in values])  # type: ignore[arg-type]
    elif spec.type == ValueType.INT:
        column.int64_values.extend([0 if v is None else int(v) for v in values])  # type: ignore[arg-type]
    elif spec.type in (ValueType.STRING, ValueType.TEXT):
        column.string_values.extend(["" if v is None else str(v) for v in values])
    else:
        column.bool_values.extend([False if v is None else bool(v) for v in values])
    return column


def chunk_to_proto(features: tuple[FeatureSpec, ...], label: FeatureSpec,
                   chunk: TrainingSetChunk) -> pb.TrainingSetChunk:
    """A training-set chunk in columnar protobuf form."""
    return pb.TrainingSetChunk(
        entity_ids=chunk.entity_ids,
        event_times_unix_us=[unix_us(moment) for moment in chunk.event_times],
        features=[column_to_proto(spec, chunk.columns[i]) for i, spec in enumerate(features)],
        label=column_to_proto(label, chunk.label),
    )
