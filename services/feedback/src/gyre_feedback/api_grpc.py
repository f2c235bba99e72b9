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
from gyre_feedback.events import feedback_from_event, timestamp
from gyre_feedback.handlers import FeedbackHandlers, QualityReport

SERVICE_NAME = "gyre.feedback.v1.FeedbackService"


def quality_response(report: QualityReport) -> pb.GetQualityResponse:
    """The GetQualityResponse of a report; metrics without data stay unset."""
    response = pb.GetQualityResponse(model_name=report.model_name, window_start=timestamp(report.window_start),
                                     window_end=timestamp(report.window_end))
    for v in report.versions:
        entry = response.versions.add(model_version=v.model_version, predictions=v.predictions,
                                      feedback_count=v.feedback_count, labelled_count=v.labelled_count)
        if v.accuracy is not None:
            entry.accuracy = v.accuracy
        if v.mean_stars is not None:
            entry.mean_stars = v.mean_stars
        if v.thumbs_up_rate is not None:
            entry.thumbs_up_rate = v.thumbs_up_rate
        if v.mean_score is not None:
            entry.mean_score = v.mean_score
    return response


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
            events = await self.handlers.prediction_feedback(request.prediction_id)
        return pb.GetPredictionFeedbackResponse(feedback=events)

    async def GetQuality(self, request: pb.GetQualityRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetQualityResponse:
        start = request.window_start.ToDatetime(tzinfo=UTC) if request.HasField("window_start") else None
        end = request.window_end.ToDatetime(tzinfo=UTC) if request.HasField("window_end") else None
        async with grpc_errors(context):
            report = await self.handlers.quality(request.model_name, request.model_version or None, start, end)
        return quality_response(report)
