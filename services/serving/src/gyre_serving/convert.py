"""Serving's protobuf conversions: registry contracts (``gyre.events.v1`` / ``gyre.registry.v1``
messages) into domain types, and served batches into ``InferenceEvent`` messages."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_contracts.gyre.registry.v1 import registry_service_pb2
from gyre_serving.domain.events import ServedBatch
from gyre_serving.domain.registry import ChangeKind, RegistryChange
from gyre_serving.domain.runtime import ModelSource
from gyre_serving.domain.signature import Signature, TensorSpec

_KINDS = {
    events_pb2.REGISTRY_EVENT_KIND_VERSION_CREATED: ChangeKind.VERSION_CREATED,
    events_pb2.REGISTRY_EVENT_KIND_VERSION_ARCHIVED: ChangeKind.VERSION_ARCHIVED,
    events_pb2.REGISTRY_EVENT_KIND_ALIAS_SET: ChangeKind.ALIAS_SET,
    events_pb2.REGISTRY_EVENT_KIND_ALIAS_REMOVED: ChangeKind.ALIAS_REMOVED,
}


def signature_from_proto(message: common_pb2.ModelSignature) -> Signature | None:
    """The domain signature, or None when the message declares no inputs (serving then infers one)."""
    if not message.inputs:
        return None
    return Signature(
        inputs=tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in message.inputs),
        outputs=tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in message.outputs),
    )


def source_from_event(event: events_pb2.RegistryEvent) -> ModelSource | None:
    """What to load for a VERSION_CREATED or alias event; None when it carries no artifact."""
    if not event.HasField("artifact") or not event.artifact.uri or event.version <= 0:
        return None
    return ModelSource(
        name=event.model_name,
        version=event.version,
        artifact_uri=event.artifact.uri,
        sha256=event.artifact.sha256.lower(),
        format=event.artifact.format,
        signature=signature_from_proto(event.signature),
    )


def source_from_version(version: registry_service_pb2.ModelVersion) -> ModelSource | None:
    """What to load for a registry ``ModelVersion``; None when it has no artifact."""
    if not version.artifact.uri:
        return None
    return ModelSource(
        name=version.model_name,
        version=version.version,
        artifact_uri=version.artifact.uri,
        sha256=version.artifact.sha256.lower(),
        format=version.artifact.format,
        signature=signature_from_proto(version.signature),
    )


def change_from_event(event: events_pb2.RegistryEvent) -> RegistryChange:
    """The registry change ``event`` reports (kinds serving ignores become OTHER)."""
    return RegistryChange(kind=_KINDS.get(event.kind, ChangeKind.OTHER), model_name=event.model_name,
                          version=event.version, alias=event.alias, source=source_from_event(event))


def _set_value(target: common_pb2.FeatureValue, value: Any) -> None:
    """Write one Python value (from ``ndarray.tolist()``) into a map entry's FeatureValue."""
    if value is None:
        return
    if isinstance(value, float):  # the common case first: numeric features and probabilities
        # NaN is how numeric clients send "missing" (imputers read it so); the contract's
        # missing value is an unset FeatureValue.
        if value == value:
            target.double_value = value
    elif isinstance(value, bool | np.bool_):
        target.bool_value = bool(value)
    elif isinstance(value, int):
        target.int64_value = value
    elif isinstance(value, bytes):
        target.string_value = value.decode("utf-8", "replace")
    else:
        target.string_value = str(value)


def _text_digests(texts: list[Any]) -> list[str]:
    """``sha256:<hex of the UTF-8 bytes>:<length in characters>`` of each text (what the monitor reads
    in hash-only mode: the length descriptors still work, the text never leaves serving)."""
    digests = []
    for text in texts:
        value = text if isinstance(text, str) else bytes(text).decode("utf-8", "replace")
        digests.append(f"sha256:{hashlib.sha256(value.encode('utf-8')).hexdigest()}:{len(value)}")
    return digests


def inference_events(batch: ServedBatch) -> list[events_pb2.InferenceEvent]:
    """One ``InferenceEvent`` per row of ``batch``, with named inputs and outputs."""
    served_at = Timestamp()
    served_at.FromDatetime(batch.served_at)
    # Values are written straight into each event's map entries (no FeatureValue built and copied):
    # this runs once per served row, on the serving process's core.
    inputs = [(name, column.tolist()) for name, column in zip(batch.feature_names, batch.feature_columns,
                                                             strict=True)]
    if batch.hashed_inputs:
        inputs = [(name, _text_digests(values) if name in batch.hashed_inputs else values) for name, values in inputs]
    event_time: Timestamp | None = None
    if batch.event_time is not None:
        event_time = Timestamp()
        event_time.FromDatetime(batch.event_time)
    outputs = [(name, column.tolist()) for name, column in batch.output_columns]
    events = []
    for row, prediction_id in enumerate(batch.prediction_ids):
        event = events_pb2.InferenceEvent(
            prediction_id=prediction_id,
            model_name=batch.model_name,
            model_version=batch.model_version,
            alias=batch.alias,
            served_at=served_at,
            latency_ms=batch.latency_ms,
            request_id=batch.request_id,
            row_index=row,
            request_key=batch.request_key,
            shadow=batch.shadow,
            entity_id=batch.entity_id,
            event_time=event_time,
        )
        event_inputs, event_outputs = event.inputs, event.outputs
        for name, values in inputs:
            _set_value(event_inputs[name], values[row])
        for name, values in outputs:
            _set_value(event_outputs[name], values[row])
        events.append(event)
    return events
