"""gRPC adapter of ``gyre.monitor.v1.MonitorService``: decode, call a handler, encode.

Handler errors map to status codes: InvalidArgumentError and ProfileError -> INVALID_ARGUMENT,
NotFoundError -> NOT_FOUND, FailedPreconditionError -> FAILED_PRECONDITION.
"""

from __future__ import annotations

import grpc

from gyre_common.grpc_errors import grpc_errors
from gyre_common.profile_wire import profile_from_proto, profile_to_proto
from gyre_common.timeconv import optional_time as _time
from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2 as pb
from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2_grpc as pb_grpc
from gyre_monitor.convert import monitor_alerts, range_report, window_report
from gyre_monitor.handlers import InvalidArgumentError, MonitorHandlers

SERVICE_NAME = "gyre.monitor.v1.MonitorService"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page(page_size: int, page_token: str) -> tuple[int, int]:
    """(limit, offset) of a page request. Raises InvalidArgumentError for a bad size or token."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgumentError(f"page_size must be in [0, {MAX_PAGE_SIZE}], got {page_size}")
    offset = 0
    if page_token:
        if not page_token.isdigit():
            raise InvalidArgumentError(f"invalid page_token {page_token!r}")
        offset = int(page_token)
    return page_size or DEFAULT_PAGE_SIZE, offset


class MonitorServicer(pb_grpc.MonitorServiceServicer):
    """Serves MonitorService from :class:`MonitorHandlers`."""

    def __init__(self, handlers: MonitorHandlers) -> None:
        self.handlers = handlers

    async def SetReferenceProfile(self, request: pb.SetReferenceProfileRequest,
                                  context: grpc.aio.ServicerContext) -> pb.SetReferenceProfileResponse:
        async with grpc_errors(context):
            profile = profile_from_proto(request.profile)
            stored, _ = await self.handlers.set_reference_profile(profile, source="api")
            return pb.SetReferenceProfileResponse(profile=profile_to_proto(stored.profile))
        raise AssertionError("unreachable")

    async def GetReferenceProfile(self, request: pb.GetReferenceProfileRequest,
                                  context: grpc.aio.ServicerContext) -> pb.GetReferenceProfileResponse:
        async with grpc_errors(context):
            stored = await self.handlers.get_reference_profile(request.model_name, request.model_version)
            return pb.GetReferenceProfileResponse(profile=profile_to_proto(stored.profile))
        raise AssertionError("unreachable")

    async def GetDriftReport(self, request: pb.GetDriftReportRequest,
                             context: grpc.aio.ServicerContext) -> pb.GetDriftReportResponse:
        async with grpc_errors(context):
            report = await self.handlers.drift_report(
                request.model_name, request.model_version, _time(request, "window_start"),
                _time(request, "window_end"), include_html=request.include_html,
            )
            return pb.GetDriftReportResponse(report=range_report(report), html=report.html)
        raise AssertionError("unreachable")

    async def ListDriftWindows(self, request: pb.ListDriftWindowsRequest,
                               context: grpc.aio.ServicerContext) -> pb.ListDriftWindowsResponse:
        async with grpc_errors(context):
            limit, offset = page(request.page_size, request.page_token)
            records = await self.handlers.list_windows(request.model_name, request.model_version or None,
                                                       _time(request, "since"), limit, offset)
            token = str(offset + limit) if len(records) == limit else ""
            return pb.ListDriftWindowsResponse(reports=[window_report(r) for r in records], next_page_token=token)
        raise AssertionError("unreachable")

    async def ListAlerts(self, request: pb.ListAlertsRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListAlertsResponse:
        async with grpc_errors(context):
            limit, offset = page(request.page_size, request.page_token)
            if request.kind not in (events_pb2.ALERT_KIND_UNSPECIFIED, events_pb2.ALERT_KIND_DRIFT):
                # The monitor raises drift alerts only; quality alerts come from the feedback service.
                return pb.ListAlertsResponse()
            payloads = await self.handlers.list_alerts(request.model_name, _time(request, "since"), limit, offset)
            alerts = monitor_alerts(payloads)
            token = str(offset + limit) if len(alerts) == limit else ""
            return pb.ListAlertsResponse(alerts=alerts, next_page_token=token)
        raise AssertionError("unreachable")
