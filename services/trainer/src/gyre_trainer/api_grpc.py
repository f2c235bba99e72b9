"""``gyre.trainer.v1.TrainerService`` over grpc.aio: decode, call the handler, encode.

Errors: INVALID_ARGUMENT (bad request, page token), NOT_FOUND (unknown job), FAILED_PRECONDITION
(cancelling an ended job), RESOURCE_EXHAUSTED (queue full), UNAUTHENTICATED (token required).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import grpc

from gyre_common.grpc_errors import abort_grpc, grpc_errors
from gyre_contracts.gyre.trainer.v1 import trainer_service_pb2 as pb
from gyre_contracts.gyre.trainer.v1 import trainer_service_pb2_grpc as pb_grpc
from gyre_trainer.auth import TokenAuth, Unauthenticated
from gyre_trainer.convert import job_to_proto, request_from_proto
from gyre_trainer.domain.jobs import InvalidRequest
from gyre_trainer.handlers import TrainerHandlers
from gyre_trainer.store import QueueFull

SERVICE_NAME = "gyre.trainer.v1.TrainerService"


class TrainerServicer(pb_grpc.TrainerServiceServicer):
    """Thin adapter over :class:`TrainerHandlers`; ``cancel_local`` stops a job running in this replica at once."""

    def __init__(self, handlers: TrainerHandlers, auth: TokenAuth,
                 cancel_local: Callable[[str], bool] | None = None) -> None:
        self.handlers = handlers
        self.auth = auth
        self._cancel_local = cancel_local or (lambda job_id: False)

    async def _subject(self, context: grpc.aio.ServicerContext) -> str:
        metadata = dict(context.invocation_metadata() or ())
        try:
            return self.auth.subject(metadata.get("authorization"))
        except Unauthenticated as exc:
            await abort_grpc(context, exc)

    async def SubmitTraining(self, request: pb.SubmitTrainingRequest,
                             context: grpc.aio.ServicerContext) -> pb.SubmitTrainingResponse:
        subject = await self._subject(context)
        training = request_from_proto(request.request)
        if not training.requested_by:
            training = replace(training, requested_by=subject)
        try:
            job, duplicate = await self.handlers.submit(training)
        except InvalidRequest as exc:
            await abort_grpc(context, exc, f"request.{exc}")
        except QueueFull as exc:
            await abort_grpc(context, exc, f"{exc}; retry later with the same request_id")
        return pb.SubmitTrainingResponse(job=job_to_proto(job), duplicate=duplicate)

    async def GetTrainingJob(self, request: pb.GetTrainingJobRequest,
                             context: grpc.aio.ServicerContext) -> pb.GetTrainingJobResponse:
        async with grpc_errors(context):  # JobNotFound, InvalidQuery
            job = await self.handlers.get_job(job_id=request.job_id, request_id=request.request_id)
        return pb.GetTrainingJobResponse(job=job_to_proto(job))

    async def ListTrainingJobs(self, request: pb.ListTrainingJobsRequest,
                               context: grpc.aio.ServicerContext) -> pb.ListTrainingJobsResponse:
        async with grpc_errors(context):  # InvalidQuery
            jobs, token = await self.handlers.list_jobs(model_name=request.model_name, page_size=request.page_size,
                                                        page_token=request.page_token)
        return pb.ListTrainingJobsResponse(jobs=[job_to_proto(j) for j in jobs], next_page_token=token)

    async def CancelTrainingJob(self, request: pb.CancelTrainingJobRequest,
                                context: grpc.aio.ServicerContext) -> pb.CancelTrainingJobResponse:
        await self._subject(context)
        async with grpc_errors(context):
            job = await self.handlers.cancel(request.job_id)
        self._cancel_local(request.job_id)
        return pb.CancelTrainingJobResponse(job=job_to_proto(job))
