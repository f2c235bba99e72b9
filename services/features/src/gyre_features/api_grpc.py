"""gRPC adapter: ``gyre.features.v1.FeaturesService``. Decode, call a handler, encode.

Handler errors become status codes (gyre_common.errors): NotFound -> NOT_FOUND, InvalidArgument ->
INVALID_ARGUMENT, Conflict -> FAILED_PRECONDITION, TooLarge -> RESOURCE_EXHAUSTED; the message says
what is wrong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from gyre_common.grpc_errors import abort_grpc
from gyre_contracts.gyre.features.v1 import features_service_pb2 as pb
from gyre_contracts.gyre.features.v1 import features_service_pb2_grpc as pb_grpc
from gyre_features.convert import (
    chunk_to_proto,
    online_row_to_proto,
    optional_time,
    raw_event,
    to_datetime,
    to_timestamp,
    view_from_proto,
    view_to_proto,
)
from gyre_features.domain.errors import FeatureStoreError, InvalidArgument
from gyre_features.domain.training import EntityRow, TrainingSetQuery
from gyre_features.handlers import FeaturesHandlers

SERVICE_NAME = "gyre.features.v1.FeaturesService"

class FeaturesServicer(pb_grpc.FeaturesServiceServicer):
    """The gRPC face of :class:`FeaturesHandlers`."""

    def __init__(self, handlers: FeaturesHandlers) -> None:
        self.handlers = handlers

    async def RegisterFeatureView(
        self, request: pb.RegisterFeatureViewRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterFeatureViewResponse:
        try:
            view, created = await self.handlers.register_view(view_from_proto(request.feature_view))
        except FeatureStoreError as exc:
            await abort_grpc(context, exc)
        return pb.RegisterFeatureViewResponse(feature_view=view_to_proto(view), created=created)

    async def GetFeatureView(
        self, request: pb.GetFeatureViewRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetFeatureViewResponse:
        try:
            view = await self.handlers.get_view(request.name)
        except FeatureStoreError as exc:
            await abort_grpc(context, exc)
        return pb.GetFeatureViewResponse(feature_view=view_to_proto(view))

    async def ListFeatureViews(
        self, request: pb.ListFeatureViewsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListFeatureViewsResponse:
        try:
            views, token = await self.handlers.list_views(request.page_size, request.page_token)
        except FeatureStoreError as exc:
            await abort_grpc(context, exc)
        return pb.ListFeatureViewsResponse(feature_views=[view_to_proto(v) for v in views], next_page_token=token)

    async def WriteFeatures(
        self, request: pb.WriteFeaturesRequest, context: grpc.aio.ServicerContext
    ) -> pb.WriteFeaturesResponse:
        now = self.handlers.clock()
        # Synchronous writes have no CloudEvents id; the natural key dedupes them.
        events = [raw_event(event, f"grpc:{now.isoformat()}:{i}", now) for i, event in enumerate(request.events)]
        try:
            await self.handlers.write_features(events)
        except FeatureStoreError as exc:
            await abort_grpc(context, exc)
        return pb.WriteFeaturesResponse(written=len(events))

    async def GetOnlineFeatures(
        self, request: pb.GetOnlineFeaturesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOnlineFeaturesResponse:
        try:
            online = await self.handlers.get_online_features(
                request.feature_view, list(request.entity_ids), list(request.features))
        except FeatureStoreError as exc:
            await abort_grpc(context, exc)
        types = {spec.name: spec.type for spec in online.view.features}
        return pb.GetOnlineFeaturesResponse(rows=[
            online_row_to_proto(row.entity_id, row.found, dict(row.results), types, row.event_time)
            for row in online.rows
        ])

    async def BuildTrainingSet(
        self, request: pb.BuildTrainingSetRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.BuildTrainingSetResponse]:
        try:
            spine = []
            for i, point in enumerate(request.spine):
                if not point.HasField("event_time"):
                    raise InvalidArgument(f"spine row {i} has no event_time")
                spine.append(EntityRow(point.entity_id, to_datetime(point.event_time)))
            query = TrainingSetQuery(
                feature_view=request.feature_view,
                label=request.label,
                features=tuple(request.features),
                start=optional_time(request, "window_start"),
                end=optional_time(request, "window_end"),
                entity_rows=tuple(spine),
                keep_unlabelled=request.keep_unlabelled,
            )
            stream = await self.handlers.training_set(query, request.chunk_size)
        except FeatureStoreError as exc:
            await abort_grpc(context, exc)
        schema = stream.schema
        async for chunk in stream.chunks():
            yield pb.BuildTrainingSetResponse(chunk=chunk_to_proto(schema.features, schema.label, chunk))
        assert stream.summary is not None
        summary = pb.TrainingSetSummary(
            row_count=stream.summary.row_count,
            fingerprint=stream.summary.fingerprint,
            features=[spec.name for spec in schema.features],
            label=schema.label.name,
            unlabelled_rows_dropped=stream.summary.unlabelled_rows_dropped,
            window_end=to_timestamp(schema.end),
        )
        if schema.start is not None:
            summary.window_start.CopyFrom(to_timestamp(schema.start))
        yield pb.BuildTrainingSetResponse(summary=summary)
