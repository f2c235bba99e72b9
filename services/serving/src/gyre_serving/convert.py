"""Registry contracts (``gyre.events.v1`` / ``gyre.registry.v1`` messages) into serving's domain types."""

from __future__ import annotations

from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_contracts.gyre.registry.v1 import registry_service_pb2
from gyre_serving.domain.model import ModelSource
from gyre_serving.domain.signature import Signature, TensorSpec


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
