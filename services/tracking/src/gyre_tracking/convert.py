"""Translation between the domain model and the protobuf messages of gyre.tracking.v1 / gyre.events.v1.

Shared by the gRPC adapter, the REST adapter (which returns the same messages as proto3 JSON) and
the Kafka consumer.
"""

from __future__ import annotations

from datetime import datetime

from gyre_common.timeconv import optional_time
from gyre_common.timeconv import timestamp as to_timestamp
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2 as pb
from gyre_tracking.domain.model import (
    Experiment,
    LifecycleStage,
    Metric,
    Run,
    RunArtifact,
    RunInfo,
    RunStatus,
)

_STATUS_TO_PROTO = {
    RunStatus.RUNNING: events_pb2.RUN_STATUS_RUNNING,
    RunStatus.SCHEDULED: events_pb2.RUN_STATUS_SCHEDULED,
    RunStatus.FINISHED: events_pb2.RUN_STATUS_FINISHED,
    RunStatus.FAILED: events_pb2.RUN_STATUS_FAILED,
    RunStatus.KILLED: events_pb2.RUN_STATUS_KILLED,
}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}
_STAGE_TO_PROTO = {
    LifecycleStage.ACTIVE: pb.LIFECYCLE_STAGE_ACTIVE,
    LifecycleStage.DELETED: pb.LIFECYCLE_STAGE_DELETED,
}


def status_from_proto(value: int) -> RunStatus | None:
    """The domain status of a ``RunStatus`` enum value; None for RUN_STATUS_UNSPECIFIED.

    Raises:
        ValueError: an unknown enum number (a newer client).
    """
    if value == events_pb2.RUN_STATUS_UNSPECIFIED:
        return None
    try:
        return _STATUS_FROM_PROTO[value]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unknown run status {value}") from None


def metric_to_proto(metric: Metric) -> events_pb2.Metric:
    """A metric point as ``gyre.events.v1.Metric``."""
    return events_pb2.Metric(key=metric.key, value=metric.value, step=metric.step,
                             timestamp=to_timestamp(metric.timestamp))


def metric_from_proto(point: events_pb2.Metric, default_time: datetime | None
                      ) -> tuple[str, float, int, datetime | None]:
    """``(key, value, step, timestamp)`` of a point; an unset timestamp becomes ``default_time``."""
    return point.key, point.value, point.step, optional_time(point, "timestamp") or default_time


def experiment_to_proto(experiment: Experiment) -> pb.Experiment:
    """An experiment as ``gyre.tracking.v1.Experiment``."""
    return pb.Experiment(
        experiment_id=experiment.experiment_id,
        name=experiment.name,
        artifact_location=experiment.artifact_location,
        tags=[events_pb2.Tag(key=k, value=v) for k, v in experiment.tags.items()],
        created_at=to_timestamp(experiment.created_at),
        lifecycle_stage=_STAGE_TO_PROTO[experiment.lifecycle_stage],
        last_updated_at=to_timestamp(experiment.last_updated_at),
    )


def run_info_to_proto(info: RunInfo) -> pb.RunInfo:
    """A run's info as ``gyre.tracking.v1.RunInfo``."""
    message = pb.RunInfo(
        run_id=info.run_id,
        experiment_id=info.experiment_id,
        run_name=info.run_name,
        status=_STATUS_TO_PROTO[info.status],
        start_time=to_timestamp(info.start_time),
        artifact_uri=info.artifact_uri,
        user=info.user,
        lifecycle_stage=_STAGE_TO_PROTO[info.lifecycle_stage],
    )
    if info.end_time is not None:
        message.end_time.CopyFrom(to_timestamp(info.end_time))
    return message


def artifact_to_proto(artifact: RunArtifact) -> pb.RunArtifact:
    """A run artifact as ``gyre.tracking.v1.RunArtifact``."""
    message = pb.RunArtifact(
        path=artifact.path,
        artifact=common_pb2.ArtifactRef(uri=artifact.uri, sha256=artifact.sha256, size_bytes=artifact.size_bytes,
                                        format=artifact.format),
    )
    if artifact.logged_at is not None:
        message.logged_at.CopyFrom(to_timestamp(artifact.logged_at))
    return message


def artifact_from_proto(path: str, ref: common_pb2.ArtifactRef) -> RunArtifact:
    """The domain artifact of a LogArtifact request."""
    return RunArtifact(path=path, uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size_bytes, format=ref.format)


def run_to_proto(run: Run) -> pb.Run:
    """A run as ``gyre.tracking.v1.Run`` (latest metrics, params and tags sorted by key)."""
    return pb.Run(
        info=run_info_to_proto(run.info),
        data=pb.RunData(
            metrics=[metric_to_proto(m) for m in run.metrics],
            params=[events_pb2.Param(key=k, value=v) for k, v in run.params.items()],
            tags=[events_pb2.Tag(key=k, value=v) for k, v in run.tags.items()],
        ),
        artifacts=[artifact_to_proto(a) for a in run.artifacts],
    )
