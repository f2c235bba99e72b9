"""``inference.GRPCInferenceService`` (Open Inference Protocol V2 over gRPC): decode, call the
:class:`DataPlane`, encode. Errors become status codes as the proto file documents
(gyre_common.errors)."""

from __future__ import annotations

import time

import grpc

from gyre_common.grpc_errors import abort_grpc
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as pb
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from gyre_serving import metrics
from gyre_serving.domain.errors import ServingError
from gyre_serving.grpc_codec import decode_request, encode_response
from gyre_serving.handlers import DataPlane

SERVICE_NAME = "inference.GRPCInferenceService"
"""Full gRPC name of the service (also a gRPC health name)."""


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The Open Inference Protocol's gRPC service over a :class:`DataPlane`."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext,
                         ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext,
                          ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext,
                         ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.dataplane.model_ready(request.name, request.version))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext,
                             ) -> pb.ServerMetadataResponse:
        meta = self.dataplane.server_metadata()
        return pb.ServerMetadataResponse(name=meta.name, version=meta.version, extensions=meta.extensions)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext,
                            ) -> pb.ModelMetadataResponse:
        try:
            meta = self.dataplane.model_metadata(request.name, request.version)
        except ServingError as exc:
            await abort_grpc(context, exc)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name, versions=meta.versions, platform=meta.platform,
            inputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in meta.inputs],
            outputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in meta.outputs],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext,
                         ) -> pb.ModelInferResponse:
        started = time.perf_counter()
        served = self.dataplane.repository.get(request.model_name) is not None
        label = request.model_name if served else metrics.UNKNOWN_MODEL
        try:
            decoded, raw = decode_request(request, max_elements=self.dataplane.max_tensor_elements)
            response = await self.dataplane.infer(decoded, started_at=started)
            reply = encode_response(response, raw=raw)
        except ServingError as exc:
            metrics.observe_request(label, "grpc", exc.grpc_code, time.perf_counter() - started)
            await abort_grpc(context, exc)
        metrics.observe_request(label, "grpc", "OK", time.perf_counter() - started)
        return reply
