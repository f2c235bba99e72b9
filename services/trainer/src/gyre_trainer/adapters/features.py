"""The features service as the trainer's :class:`~gyre_trainer.ports.TrainingDataSource`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import grpc
import numpy as np
import pandas as pd

from gyre_contracts.gyre.features.v1 import features_service_pb2 as pb
from gyre_contracts.gyre.features.v1 import features_service_pb2_grpc as pb_grpc
from gyre_trainer.adapters.rpc import call_metadata, dependency_error
from gyre_trainer.domain.dataset import TrainingSet
from gyre_trainer.ports import DependencyRejected, DependencyUnavailable, LoadedTrainingSet, TrainingDataSource


def column_values(chunks: Sequence[pb.Column], name: str) -> pd.Series:
    """One column from its chunks, with the narrowest dtype that holds it: int64 / bool when no
    value is missing, float64 with NaN for missing numbers and booleans, object with None for
    strings and text features.

    Raises:
        DependencyRejected: a float-vector feature (no backend trains on vectors yet).
    """
    if not chunks:
        return pd.Series([], dtype="float64", name=name)
    kind = chunks[0].type
    present = np.concatenate([np.asarray(c.present, dtype=bool) for c in chunks])
    complete = bool(present.all())
    if kind in (pb.VALUE_TYPE_STRING, pb.VALUE_TYPE_TEXT):  # text travels as strings
        values = [v for c in chunks for v in c.string_values]
        return pd.Series([v if p else None for v, p in zip(values, present, strict=True)], dtype="object", name=name)
    if kind == pb.VALUE_TYPE_DOUBLE:
        array = np.concatenate([np.asarray(c.double_values, dtype="float64") for c in chunks])
    elif kind == pb.VALUE_TYPE_INT64:
        array = np.concatenate([np.asarray(c.int64_values, dtype="int64") for c in chunks])
    elif kind == pb.VALUE_TYPE_BOOL:
        array = np.concatenate([np.asarray(c.bool_values, dtype=bool) for c in chunks])
    elif kind == pb.VALUE_TYPE_FLOAT_VECTOR:
        raise DependencyRejected(f"feature {name!r} is a float vector; no training backend takes vectors yet "
                                 "(train on a view without it)")
    else:
        raise DependencyUnavailable(f"features BuildTrainingSet: column {name!r} has no value type")
    if complete:
        return pd.Series(array, name=name)
    floats = array.astype("float64")
    floats[~present] = np.nan
    return pd.Series(floats, name=name)


def chunks_to_training_set(chunks: Sequence[pb.TrainingSetChunk], summary: pb.TrainingSetSummary,
                           label: str) -> TrainingSet:
    """Assemble streamed chunks into a :class:`TrainingSet` (columns in the summary's order).

    Raises:
        DependencyUnavailable: a chunk is malformed (columns of unequal length, a feature missing).
    """
    names = list(summary.features)
    per_feature: dict[str, list[pb.Column]] = {name: [] for name in names}
    labels: list[pb.Column] = []
    for chunk in chunks:
        rows = len(chunk.entity_ids)
        if len(chunk.event_times_unix_us) != rows or len(chunk.label.present) != rows:
            raise DependencyUnavailable("features BuildTrainingSet: a chunk has columns of unequal length")
        by_name = {column.name: column for column in chunk.features}
        for name in names:
            column = by_name.get(name)
            if column is None or len(column.present) != rows:
                raise DependencyUnavailable(f"features BuildTrainingSet: a chunk lacks feature {name!r}")
            per_feature[name].append(column)
        labels.append(chunk.label)
    times_us = np.concatenate([np.asarray(c.event_times_unix_us, dtype="int64") for c in chunks]) if chunks \
        else np.empty(0, dtype="int64")
    return TrainingSet(
        features=pd.DataFrame({name: column_values(per_feature[name], name) for name in names}, columns=names),
        label=column_values(labels, label),
        entity_ids=pd.Series([e for c in chunks for e in c.entity_ids], dtype="object"),
        event_times=pd.Series(pd.to_datetime(times_us, unit="us", utc=True)),
        source_fingerprint=summary.fingerprint,
    )


class GrpcTrainingDataSource(TrainingDataSource):
    """Streams ``BuildTrainingSet`` from ``gyre.features.v1.FeaturesService`` (labelled rows only)."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float, token: str | None = None,
                 chunk_size: int = 5000) -> None:
        self._stub = pb_grpc.FeaturesServiceStub(channel)
        self._timeout_s = timeout_s
        self._metadata = call_metadata(token)
        self._chunk_size = chunk_size

    async def training_set(self, feature_view: str, label: str, window_start: datetime | None,
                           window_end: datetime | None) -> LoadedTrainingSet:
        request = pb.BuildTrainingSetRequest(feature_view=feature_view, label=label, chunk_size=self._chunk_size)
        if window_start is not None:
            request.window_start.FromDatetime(window_start.astimezone(UTC))
        if window_end is not None:
            request.window_end.FromDatetime(window_end.astimezone(UTC))
        chunks: list[pb.TrainingSetChunk] = []
        summary: pb.TrainingSetSummary | None = None
        try:
            async for message in self._stub.BuildTrainingSet(request, timeout=self._timeout_s,
                                                             metadata=self._metadata):
                if message.HasField("chunk") and message.chunk.entity_ids:
                    chunks.append(message.chunk)
                if message.HasField("summary"):
                    summary = message.summary
        except grpc.aio.AioRpcError as exc:
            raise dependency_error("features", "BuildTrainingSet", exc) from None
        if summary is None:
            raise DependencyUnavailable("features BuildTrainingSet: the stream ended without its summary")
        data = chunks_to_training_set(chunks, summary, label)
        if data.rows != summary.row_count:
            raise DependencyUnavailable(f"features BuildTrainingSet: got {data.rows} rows, "
                                        f"the summary says {summary.row_count}")
        return LoadedTrainingSet(
            data,
            summary.window_start.ToDatetime(UTC) if summary.HasField("window_start") else window_start,
            summary.window_end.ToDatetime(UTC) if summary.HasField("window_end") else window_end,
        )
