"""gRPC adapter: ``gyre.tracking.v1.TrackingService``. Decode, call a handler, encode.

Handler errors become status codes (gyre_common.errors) with the handler's message as details:
InvalidArgument -> INVALID_ARGUMENT, NotFound -> NOT_FOUND, AlreadyExists (incl. ParamConflict) ->
ALREADY_EXISTS, FailedPrecondition -> FAILED_PRECONDITION.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc

from gyre_common.grpc_errors import abort_grpc
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2 as pb
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2_grpc as pb_grpc
from gyre_tracking.convert import (
    artifact_from_proto,
    artifact_to_proto,
    experiment_to_proto,
    metric_from_proto,
    metric_to_proto,
    optional_time,
    run_info_to_proto,
    run_to_proto,
    status_from_proto,
)
from gyre_tracking.domain.errors import InvalidArgument, TrackingError
from gyre_tracking.domain.model import RunStatus
from gyre_tracking.handlers import TrackingHandlers

SERVICE_NAME = "gyre.tracking.v1.TrackingService"

T = TypeVar("T")


async def _call(context: grpc.aio.ServicerContext, work: Awaitable[T]) -> T:
    try:
        return await work
    except TrackingError as exc:
        await abort_grpc(context, exc)


def _status(value: int) -> RunStatus | None:
    try:
        return status_from_proto(value)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


class TrackingServicer(pb_grpc.TrackingServiceServicer):
    """The gRPC face of :class:`TrackingHandlers`."""

    def __init__(self, handlers: TrackingHandlers) -> None:
        self.handlers = handlers

    async def CreateExperiment(self, request: pb.CreateExperimentRequest, context: grpc.aio.ServicerContext
                               ) -> pb.CreateExperimentResponse:
        experiment = await _call(context, self.handlers.create_experiment(
            request.name, request.artifact_location, [(t.key, t.value) for t in request.tags]))
        return pb.CreateExperimentResponse(experiment=experiment_to_proto(experiment))

    async def GetExperiment(self, request: pb.GetExperimentRequest, context: grpc.aio.ServicerContext
                            ) -> pb.GetExperimentResponse:
        if request.WhichOneof("selector") == "experiment_id":
            work = self.handlers.get_experiment(request.experiment_id)
        else:
            work = self.handlers.get_experiment_by_name(request.name)
        experiment = await _call(context, work)
        return pb.GetExperimentResponse(experiment=experiment_to_proto(experiment))

    async def ListExperiments(self, request: pb.ListExperimentsRequest, context: grpc.aio.ServicerContext
                              ) -> pb.ListExperimentsResponse:
        experiments, token = await _call(context, self.handlers.list_experiments(request.page_size,
                                                                                 request.page_token))
        return pb.ListExperimentsResponse(experiments=[experiment_to_proto(e) for e in experiments],
                                          next_page_token=token)

    async def CreateRun(self, request: pb.CreateRunRequest, context: grpc.aio.ServicerContext
                        ) -> pb.CreateRunResponse:
        run = await _call(context, self.handlers.create_run(
            request.experiment_id, run_id=request.run_id, run_name=request.run_name,
            start_time=optional_time(request, "start_time"), tags=[(t.key, t.value) for t in request.tags],
            user=request.user))
        return pb.CreateRunResponse(run=run_to_proto(run))

    async def UpdateRun(self, request: pb.UpdateRunRequest, context: grpc.aio.ServicerContext
                        ) -> pb.UpdateRunResponse:
        async def work() -> pb.UpdateRunResponse:
            info = await self.handlers.update_run(
                request.run_id, status=_status(request.status),
                end_time=optional_time(request, "end_time"), run_name=request.run_name or None)
            return pb.UpdateRunResponse(info=run_info_to_proto(info))
        return await _call(context, work())

    async def LogMetrics(self, request: pb.LogMetricsRequest, context: grpc.aio.ServicerContext
                         ) -> pb.LogMetricsResponse:
        await _call(context, self.handlers.log_metrics(
            request.run_id, [metric_from_proto(m, None) for m in request.metrics]))
        return pb.LogMetricsResponse()

    async def LogParams(self, request: pb.LogParamsRequest, context: grpc.aio.ServicerContext
                        ) -> pb.LogParamsResponse:
        await _call(context, self.handlers.log_params(request.run_id, [(p.key, p.value) for p in request.params]))
        return pb.LogParamsResponse()

    async def SetTags(self, request: pb.SetTagsRequest, context: grpc.aio.ServicerContext) -> pb.SetTagsResponse:
        await _call(context, self.handlers.set_tags(request.run_id, [(t.key, t.value) for t in request.tags]))
        return pb.SetTagsResponse()

    async def LogArtifact(self, request: pb.LogArtifactRequest, context: grpc.aio.ServicerContext
                          ) -> pb.LogArtifactResponse:
        stored = await _call(context, self.handlers.log_artifact(
            request.run_id, artifact_from_proto(request.path, request.artifact)))
        return pb.LogArtifactResponse(artifact=artifact_to_proto(stored))

    async def GetRun(self, request: pb.GetRunRequest, context: grpc.aio.ServicerContext) -> pb.GetRunResponse:
        run = await _call(context, self.handlers.get_run(request.run_id))
        return pb.GetRunResponse(run=run_to_proto(run))

    async def GetMetricHistory(self, request: pb.GetMetricHistoryRequest, context: grpc.aio.ServicerContext
                               ) -> pb.GetMetricHistoryResponse:
        points = await _call(context, self.handlers.metric_history(request.run_id, request.key))
        return pb.GetMetricHistoryResponse(metrics=[metric_to_proto(m) for m in points])

    async def SearchRuns(self, request: pb.SearchRunsRequest, context: grpc.aio.ServicerContext
                         ) -> pb.SearchRunsResponse:
        runs, token = await _call(context, self.handlers.search_runs(
            list(request.experiment_ids), request.filter, list(request.order_by), request.page_size,
            request.page_token))
        return pb.SearchRunsResponse(runs=[run_to_proto(r) for r in runs], next_page_token=token)
