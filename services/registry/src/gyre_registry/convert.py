"""Protobuf <-> domain conversion of the registry: ``gyre.registry.v1`` requests into domain values,
domain results into responses, domain events into ``gyre.events.v1.RegistryEvent`` bytes, and the
proto3 JSON the store keeps signatures, lineages and promotion decisions in.

Used by the transports (api_grpc, api_http, the MLflow layer's events through the handlers'
outbox helper) and the store's PostgreSQL adapter; the handlers never see a message.

Presence: an optional sub-message is None in the domain when it is unset in the message. A stored
version's signature and lineage are set in answers only when they hold something (as the proto3
JSON they are stored in keeps them); a version's artifact and evaluation are always set.
Timestamps: aware UTC datetimes in the domain (microseconds; nanoseconds below are dropped).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from gyre_common.timeconv import timestamp
from gyre_contracts.gyre.events.v1 import common_pb2
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.gyre.registry.v1 import registry_service_pb2 as pb
from gyre_registry.domain.errors import InvalidArgument
from gyre_registry.domain.models import (
    ArtifactRef,
    AuditEntry,
    HoldoutEvaluation,
    Lineage,
    Listing,
    ModelSignature,
    ModelVersion,
    PromotionDecision,
    PromotionOutcome,
    RegisteredModel,
    Registration,
    RegistryEvent,
    RegistryEventKind,
    TensorSpec,
    VersionDraft,
    VersionStatus,
)

M = TypeVar("M", bound=Message)

_STATUS = {VersionStatus.READY: pb.MODEL_VERSION_STATUS_READY, VersionStatus.ARCHIVED: pb.MODEL_VERSION_STATUS_ARCHIVED}
_OUTCOMES = {
    PromotionOutcome.PROMOTED: pb.PROMOTION_OUTCOME_PROMOTED,
    PromotionOutcome.CHALLENGER: pb.PROMOTION_OUTCOME_CHALLENGER,
    PromotionOutcome.NOT_PROMOTED: pb.PROMOTION_OUTCOME_NOT_PROMOTED,
    PromotionOutcome.SKIPPED: pb.PROMOTION_OUTCOME_SKIPPED,
}
_OUTCOMES_BACK = {number: outcome for outcome, number in _OUTCOMES.items()}
_EVENT_KINDS = {
    RegistryEventKind.MODEL_CREATED: ev.REGISTRY_EVENT_KIND_MODEL_CREATED,
    RegistryEventKind.VERSION_CREATED: ev.REGISTRY_EVENT_KIND_VERSION_CREATED,
    RegistryEventKind.ALIAS_SET: ev.REGISTRY_EVENT_KIND_ALIAS_SET,
    RegistryEventKind.ALIAS_REMOVED: ev.REGISTRY_EVENT_KIND_ALIAS_REMOVED,
    RegistryEventKind.VERSION_ARCHIVED: ev.REGISTRY_EVENT_KIND_VERSION_ARCHIVED,
}


def _time(message: Message, field: str, path: str) -> datetime | None:
    """The Timestamp field ``field`` as an aware UTC datetime, None when unset.

    Raises:
        InvalidArgument: a Timestamp outside years 1 to 9999 (a gRPC client can send one).
    """
    if not message.HasField(field):
        return None
    try:
        return getattr(message, field).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
    except (ValueError, OverflowError):
        raise InvalidArgument(path, "is not a valid time (years 1 to 9999)") from None


# -- messages -> domain ------------------------------------------------------------------------------

def artifact_ref(message: common_pb2.ArtifactRef) -> ArtifactRef:
    """The domain form of an ArtifactRef."""
    return ArtifactRef(message.uri, message.sha256, message.size_bytes, message.format)


def signature(message: common_pb2.ModelSignature) -> ModelSignature:
    """The domain form of a ModelSignature."""
    def tensors(specs: Any) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in specs)
    return ModelSignature(tensors(message.inputs), tensors(message.outputs))


def lineage(message: common_pb2.Lineage, path: str = "lineage") -> Lineage:
    """The domain form of a Lineage. Raises InvalidArgument for a window time out of range."""
    return Lineage(
        training_request_id=message.training_request_id,
        feature_views=tuple(message.feature_views),
        window_start=_time(message, "window_start", f"{path}.window_start"),
        window_end=_time(message, "window_end", f"{path}.window_end"),
        dataset_fingerprint=message.dataset_fingerprint,
        run_id=message.run_id,
        experiment_id=message.experiment_id,
        hyperparameters=dict(message.hyperparameters),
        metrics=dict(message.metrics),
        code_version=message.code_version,
        label=message.label,
        training_rows=message.training_rows,
        reference_profile=artifact_ref(message.reference_profile) if message.HasField("reference_profile") else None,
    )


def evaluation(message: pb.HoldoutEvaluation) -> HoldoutEvaluation:
    """The domain form of a HoldoutEvaluation."""
    return HoldoutEvaluation(
        message.primary_metric, message.lower_is_better, message.holdout_id, message.champion_version,
        message.champion_score if message.HasField("champion_score") else None,
    )


def version_draft(request: pb.CreateModelVersionRequest) -> VersionDraft:
    """The version a CreateModelVersion request registers. Raises InvalidArgument for a lineage
    window time out of range (the other checks are the handler's)."""
    return VersionDraft(
        model_name=request.model_name,
        artifact=artifact_ref(request.artifact) if request.HasField("artifact") else None,
        signature=signature(request.signature),
        lineage=lineage(request.lineage),
        evaluation=evaluation(request.evaluation),
        description=request.description,
        tags=dict(request.tags),
        idempotency_key=request.idempotency_key,
        skip_promotion=request.skip_promotion,
    )


def audit_since(request: pb.ListAuditEntriesRequest) -> datetime | None:
    """``since`` of a ListAuditEntries request (None when unset)."""
    return _time(request, "since", "since")


# -- domain -> messages ------------------------------------------------------------------------------

def artifact_ref_message(ref: ArtifactRef) -> common_pb2.ArtifactRef:
    """The ArtifactRef message of ``ref``."""
    return common_pb2.ArtifactRef(uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size_bytes, format=ref.format)


def signature_message(sig: ModelSignature) -> common_pb2.ModelSignature:
    """The ModelSignature message of ``sig``."""
    def tensors(specs: tuple[TensorSpec, ...]) -> list[common_pb2.TensorSpec]:
        return [common_pb2.TensorSpec(name=t.name, datatype=t.datatype, shape=t.shape) for t in specs]
    return common_pb2.ModelSignature(inputs=tensors(sig.inputs), outputs=tensors(sig.outputs))


def lineage_message(lin: Lineage) -> common_pb2.Lineage:
    """The Lineage message of ``lin``."""
    message = common_pb2.Lineage(
        training_request_id=lin.training_request_id, feature_views=lin.feature_views,
        dataset_fingerprint=lin.dataset_fingerprint, run_id=lin.run_id, experiment_id=lin.experiment_id,
        hyperparameters=lin.hyperparameters, metrics=lin.metrics, code_version=lin.code_version, label=lin.label,
        training_rows=lin.training_rows,
    )
    if lin.window_start is not None:
        message.window_start.CopyFrom(timestamp(lin.window_start))
    if lin.window_end is not None:
        message.window_end.CopyFrom(timestamp(lin.window_end))
    if lin.reference_profile is not None:
        message.reference_profile.CopyFrom(artifact_ref_message(lin.reference_profile))
    return message


def evaluation_message(e: HoldoutEvaluation) -> pb.HoldoutEvaluation:
    """The HoldoutEvaluation message of ``e``."""
    message = pb.HoldoutEvaluation(primary_metric=e.primary_metric, lower_is_better=e.lower_is_better,
                                   holdout_id=e.holdout_id, champion_version=e.champion_version)
    if e.champion_score is not None:
        message.champion_score = e.champion_score
    return message


def _if_any(message: M) -> M | None:
    """``message``, or None when it holds nothing (so that the field stays unset)."""
    return message if message.ByteSize() else None


def model_version(version: ModelVersion) -> pb.ModelVersion:
    """The ModelVersion message of ``version``."""
    return pb.ModelVersion(
        model_name=version.model_name, version=version.version, status=_STATUS[version.status],
        artifact=artifact_ref_message(version.artifact),
        signature=_if_any(signature_message(version.signature)),
        lineage=_if_any(lineage_message(version.lineage)),
        aliases=version.aliases, description=version.description, tags=version.tags,
        created_by=version.created_by, created_at=timestamp(version.created_at),
        evaluation=evaluation_message(version.evaluation),
    )


def registered_model(model: RegisteredModel) -> pb.RegisteredModel:
    """The RegisteredModel message of ``model``."""
    return pb.RegisteredModel(
        name=model.name, description=model.description, aliases=model.aliases, latest_version=model.latest_version,
        tags=model.tags, created_at=timestamp(model.created_at), updated_at=timestamp(model.updated_at),
    )


def promotion(decision: PromotionDecision) -> pb.PromotionDecision:
    """The PromotionDecision message of ``decision``."""
    return pb.PromotionDecision(outcome=_OUTCOMES[decision.outcome], alias=decision.alias,
                                previous_version=decision.previous_version,
                                champion_version=decision.champion_version, reason=decision.reason)


def audit_entry(entry: AuditEntry) -> pb.AuditEntry:
    """The AuditEntry message of ``entry``."""
    return pb.AuditEntry(audit_id=entry.audit_id, actor=entry.actor, action=entry.action,
                         model_name=entry.model_name, version=entry.version, details=entry.details,
                         occurred_at=timestamp(entry.occurred_at))


def registry_event_message(event: RegistryEvent) -> ev.RegistryEvent:
    """The RegistryEvent message of ``event`` (artifact, lineage, signature set when not None)."""
    message = ev.RegistryEvent(
        kind=_EVENT_KINDS[event.kind], model_name=event.model_name, version=event.version, alias=event.alias,
        previous_version=event.previous_version, actor=event.actor, comment=event.comment,
        occurred_at=timestamp(event.occurred_at), audit_id=event.audit_id,
    )
    if event.artifact is not None:
        message.artifact.CopyFrom(artifact_ref_message(event.artifact))
    if event.lineage is not None:
        message.lineage.CopyFrom(lineage_message(event.lineage))
    if event.signature is not None:
        message.signature.CopyFrom(signature_message(event.signature))
    return message


def registry_event(event: RegistryEvent) -> bytes:
    """``event`` as the protobuf bytes queued in the outbox for ``registry.events``."""
    return registry_event_message(event).SerializeToString()


# -- responses (the same for gRPC and the REST mirror) ----------------------------------------------

ModelResponse = TypeVar("ModelResponse", pb.GetRegisteredModelResponse, pb.CreateRegisteredModelResponse)
VersionResponse = TypeVar("VersionResponse", pb.GetModelVersionResponse, pb.GetModelVersionByAliasResponse,
                          pb.ArchiveModelVersionResponse)


def registered_model_response(response: type[ModelResponse], model: RegisteredModel) -> ModelResponse:
    """The answer of an RPC returning one model (GetRegisteredModel, CreateRegisteredModel)."""
    return response(registered_model=registered_model(model))


def registered_models_response(page: Listing[RegisteredModel]) -> pb.ListRegisteredModelsResponse:
    """ListRegisteredModels' answer."""
    return pb.ListRegisteredModelsResponse(registered_models=[registered_model(m) for m in page.items],
                                           next_page_token=page.next_page_token)


def registration_response(registration: Registration) -> pb.CreateModelVersionResponse:
    """CreateModelVersion's answer (``promotion`` unset when the version has no decision)."""
    decision = registration.promotion
    return pb.CreateModelVersionResponse(model_version=model_version(registration.model_version),
                                         promotion=promotion(decision) if decision is not None else None)


def model_version_response(response: type[VersionResponse], version: ModelVersion) -> VersionResponse:
    """The answer of an RPC returning one version (GetModelVersion, GetModelVersionByAlias,
    ArchiveModelVersion)."""
    return response(model_version=model_version(version))


def model_versions_response(page: Listing[ModelVersion]) -> pb.ListModelVersionsResponse:
    """ListModelVersions' answer."""
    return pb.ListModelVersionsResponse(model_versions=[model_version(v) for v in page.items],
                                        next_page_token=page.next_page_token)


def alias_set_response(previous_version: int) -> pb.SetAliasResponse:
    """SetAlias' answer: applied (no alias needs an approval yet), and where the alias pointed before."""
    return pb.SetAliasResponse(applied=True, previous_version=previous_version)


def alias_removed_response(previous_version: int) -> pb.DeleteAliasResponse:
    """DeleteAlias' answer: where the alias pointed."""
    return pb.DeleteAliasResponse(previous_version=previous_version)


def audit_entries_response(page: Listing[AuditEntry]) -> pb.ListAuditEntriesResponse:
    """ListAuditEntries' answer."""
    return pb.ListAuditEntriesResponse(entries=[audit_entry(e) for e in page.items],
                                       next_page_token=page.next_page_token)


# -- the store's proto3 JSON columns -------------------------------------------------------------------

def _to_json(message: Message) -> str:
    return json_format.MessageToJson(message, indent=None, sort_keys=True)


def signature_json(sig: ModelSignature) -> str:
    """``sig`` as the proto3 JSON of the ``signature`` column."""
    return _to_json(signature_message(sig))


def signature_from_json(text: str) -> ModelSignature:
    """The signature in a ``signature`` column (unknown fields ignored)."""
    return signature(json_format.Parse(text, common_pb2.ModelSignature(), ignore_unknown_fields=True))


def lineage_json(lin: Lineage) -> str:
    """``lin`` as the proto3 JSON of the ``lineage`` column (``lineage->>'runId'`` is queried)."""
    return _to_json(lineage_message(lin))


def lineage_from_json(text: str) -> Lineage:
    """The lineage in a ``lineage`` column (unknown fields ignored)."""
    return lineage(json_format.Parse(text, common_pb2.Lineage(), ignore_unknown_fields=True))


def promotion_json(decision: PromotionDecision) -> str:
    """``decision`` as the proto3 JSON of the ``promotion`` column."""
    return _to_json(promotion(decision))


def promotion_from_json(text: str) -> PromotionDecision:
    """The decision in a ``promotion`` column."""
    message = json_format.Parse(text, pb.PromotionDecision(), ignore_unknown_fields=True)
    return PromotionDecision(_OUTCOMES_BACK[message.outcome], message.alias, message.previous_version,
                             message.champion_version, message.reason)
