"""gRPC adapter of ``gyre.feedback.v1.FeedbackService``: decode, call a handler, encode.

Errors: invalid feedback or arguments -> INVALID_ARGUMENT (the details name every broken rule);
a model never seen -> NOT_FOUND (gyre_common.errors).
"""

from __future__ import annotations

from datetime import UTC

import grpc

from gyre_common.grpc_errors import grpc_errors
from gyre_contracts.gyre.feedback.v1 import feedback_service_pb2 as pb
from gyre_contracts.gyre.feedback.v1 import feedback_service_pb2_grpc as pb_grpc
from gyre_feedback.convert import feedback_events, feedback_from_event, quality_response
from gyre_feedback.handlers import FeedbackHandlers

SERVICE_NAME = "gyre.feedback.v1.FeedbackService"


class FeedbackServicer(pb_grpc.FeedbackServiceServicer):
    """``FeedbackService`` over :class:`FeedbackHandlers`."""

    def __init__(self, handlers: FeedbackHandlers) -> None:
        self.handlers = handlers

    async def SubmitFeedback(self, request: pb.SubmitFeedbackRequest,
                             context: grpc.aio.ServicerContext) -> pb.SubmitFeedbackResponse:
        async with grpc_errors(context):
            feedback = feedback_from_event(request.feedback)
        result = await self.handlers.submit(feedback)
        return pb.SubmitFeedbackResponse(feedback_id=result.feedback_id, duplicate=result.duplicate)

    async def GetPredictionFeedback(self, request: pb.GetPredictionFeedbackRequest,
                                    context: grpc.aio.ServicerContext) -> pb.GetPredictionFeedbackResponse:
        async with grpc_errors(context):
            payloads = await self.handlers.prediction_feedback(request.prediction_id)
        return pb.GetPredictionFeedbackResponse(feedback=feedback_events(payloads))

    async def GetQuality(self, request: pb.GetQualityRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetQualityResponse:
        start = request.window_start.ToDatetime(tzinfo=UTC) if request.HasField("window_start") else None
        end = request.window_end.ToDatetime(tzinfo=UTC) if request.HasField("window_end") else None
        async with grpc_errors(context):
            report = await self.handlers.quality(request.model_name, request.model_version or None, start, end)
        return quality_response(report)
