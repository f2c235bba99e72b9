"""The model registry as the trainer's :class:`~gyre_trainer.ports.ModelRegistryClient`."""

from __future__ import annotations

import grpc

from gyre_common.artifacts import ArtifactRef
from gyre_contracts.gyre.registry.v1 import registry_service_pb2 as pb
from gyre_contracts.gyre.registry.v1 import registry_service_pb2_grpc as pb_grpc
from gyre_trainer.adapters.rpc import call_metadata, dependency_error
from gyre_trainer.convert import artifact_to_proto, lineage_to_proto, signature_to_proto
from gyre_trainer.ports import ModelRegistryClient, Promotion, RegisteredNew, RegisteredVersion, Registration

_OUTCOMES = {
    pb.PROMOTION_OUTCOME_PROMOTED: "promoted",
    pb.PROMOTION_OUTCOME_CHALLENGER: "challenger",
    pb.PROMOTION_OUTCOME_NOT_PROMOTED: "not_promoted",
    pb.PROMOTION_OUTCOME_SKIPPED: "skipped",
}


class GrpcModelRegistryClient(ModelRegistryClient):
    """Calls ``gyre.registry.v1.RegistryService``."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float, token: str | None = None) -> None:
        self._stub = pb_grpc.RegistryServiceStub(channel)
        self._timeout_s = timeout_s
        self._metadata = call_metadata(token)

    async def register(self, registration: Registration) -> RegisteredNew:
        request = pb.CreateModelVersionRequest(
            model_name=registration.model_name,
            artifact=artifact_to_proto(registration.artifact, registration.artifact_format),
            signature=signature_to_proto(registration.signature),
            lineage=lineage_to_proto(registration.lineage),
            description=registration.description,
            tags=registration.tags,
            idempotency_key=registration.idempotency_key,
            skip_promotion=registration.skip_promotion,
        )
        if registration.evaluation is not None:
            request.evaluation.CopyFrom(pb.HoldoutEvaluation(
                primary_metric=registration.evaluation.primary_metric,
                lower_is_better=registration.evaluation.lower_is_better,
                holdout_id=registration.evaluation.holdout_id,
                champion_version=registration.evaluation.champion_version,
                champion_score=registration.evaluation.champion_score,
            ))
        try:
            response = await self._stub.CreateModelVersion(request, timeout=self._timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise dependency_error("registry", "CreateModelVersion", exc) from None
        decision = response.promotion
        return RegisteredNew(
            version=int(response.model_version.version),
            promotion=Promotion(
                outcome=_OUTCOMES.get(decision.outcome, "unspecified"),
                alias=decision.alias,
                champion_version=int(decision.champion_version),
                reason=decision.reason,
            ),
        )

    async def version_by_alias(self, model_name: str, alias: str) -> RegisteredVersion | None:
        try:
            response = await self._stub.GetModelVersionByAlias(
                pb.GetModelVersionByAliasRequest(model_name=model_name, alias=alias),
                timeout=self._timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise dependency_error("registry", "GetModelVersionByAlias", exc) from None
        version = response.model_version
        return RegisteredVersion(
            model_name=version.model_name,
            version=int(version.version),
            artifact=ArtifactRef(version.artifact.uri, version.artifact.sha256, int(version.artifact.size_bytes)),
            input_names=tuple(tensor.name for tensor in version.signature.inputs),
            tags=dict(version.tags),
            artifact_format=version.artifact.format,
        )
