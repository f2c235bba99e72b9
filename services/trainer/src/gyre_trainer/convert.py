"""Domain objects to and from their protobuf contracts (used by the transports, the gRPC clients
of the other services and the job store's serialised requests).

A TrainingRequest converts both ways without loss except below the microsecond (Python's
datetimes stop there) and for enum numbers this build does not know: an unknown reason reads as
UNSPECIFIED (so validation refuses it), an unknown task as unset (inferred, as before).
"""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from gyre_common.artifacts import ArtifactRef
from gyre_common.timeconv import optional_time as _time
from gyre_contracts.gyre.events.v1 import common_pb2
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.gyre.trainer.v1 import trainer_service_pb2 as trainer_pb
from gyre_trainer.domain.jobs import Job, JobStatus, SearchSpec, TrainingReason, TrainingRequest
from gyre_trainer.domain.signature import Signature
from gyre_trainer.domain.task import Task
from gyre_trainer.ports import Lineage

_STATUS = {
    JobStatus.QUEUED: 0,  # TRAINING_STATUS_UNSPECIFIED: queued, per the TrainingJob contract
    JobStatus.RUNNING: 1,  # TRAINING_STATUS_STARTED
    JobStatus.SUCCEEDED: 3,
    JobStatus.FAILED: 4,
}


_TASKS = {ev.TRAINING_TASK_CLASSIFICATION: Task.CLASSIFICATION, ev.TRAINING_TASK_REGRESSION: Task.REGRESSION}
_TASK_NUMBERS = {task: number for number, task in _TASKS.items()}
_REASONS = frozenset(int(reason) for reason in TrainingReason)


def _set_time(stamp: Timestamp, value: datetime | None) -> None:
    if value is not None:
        stamp.FromDatetime(value)


def request_from_proto(message: ev.TrainingRequest) -> TrainingRequest:
    """The domain request of a ``gyre.events.v1.TrainingRequest`` message (times aware UTC)."""
    search = message.search
    return TrainingRequest(
        request_id=message.request_id,
        model_name=message.model_name,
        feature_view=message.feature_view,
        label=message.label,
        reason=TrainingReason(message.reason) if message.reason in _REASONS else TrainingReason.UNSPECIFIED,
        window_start=_time(message, "window_start"),
        window_end=_time(message, "window_end"),
        evidence=dict(message.evidence),
        requested_by=message.requested_by,
        requested_at=_time(message, "requested_at"),
        task=_TASKS.get(message.task),
        search=SearchSpec(
            max_evals=search.max_evals,
            estimator_families=tuple(search.estimator_families),
            objective_metric=search.objective_metric,
            timeout_seconds=search.timeout_seconds,
            random_seed=search.random_seed,
            holdout_fraction=search.holdout_fraction,
        ),
        promote_to_alias=message.promote_to_alias,
        backend=message.backend,
        text_feature=message.text_feature,
    )


def request_to_proto(request: TrainingRequest) -> ev.TrainingRequest:
    """The ``gyre.events.v1.TrainingRequest`` message of ``request``."""
    search = request.search
    message = ev.TrainingRequest(
        request_id=request.request_id,
        model_name=request.model_name,
        feature_view=request.feature_view,
        label=request.label,
        reason=int(request.reason),  # type: ignore[arg-type]
        evidence=dict(request.evidence),
        requested_by=request.requested_by,
        task=_TASK_NUMBERS[request.task] if request.task is not None else ev.TRAINING_TASK_UNSPECIFIED,
        promote_to_alias=request.promote_to_alias,
        backend=request.backend,
        text_feature=request.text_feature,
    )
    config = ev.SearchConfig(
        max_evals=search.max_evals,
        estimator_families=list(search.estimator_families),
        objective_metric=search.objective_metric,
        timeout_seconds=search.timeout_seconds,
        random_seed=search.random_seed,
        holdout_fraction=search.holdout_fraction,
    )
    if config.ByteSize():  # an all-default search stays unset, as the caller sent it
        message.search.CopyFrom(config)
    _set_time(message.window_start, request.window_start)
    _set_time(message.window_end, request.window_end)
    _set_time(message.requested_at, request.requested_at)
    return message


def artifact_to_proto(ref: ArtifactRef, fmt: str) -> common_pb2.ArtifactRef:
    """An ArtifactRef message of ``ref`` with format ``fmt``."""
    return common_pb2.ArtifactRef(uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size, format=fmt)


def signature_to_proto(signature: Signature) -> common_pb2.ModelSignature:
    """The ModelSignature message of ``signature``."""
    message = common_pb2.ModelSignature()
    for tensor in signature.inputs:
        message.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))
    for tensor in signature.outputs:
        message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))
    return message


def lineage_to_proto(lineage: Lineage) -> common_pb2.Lineage:
    """The Lineage message of ``lineage`` (times UTC)."""
    message = common_pb2.Lineage(
        training_request_id=lineage.training_request_id,
        feature_views=list(lineage.feature_views),
        dataset_fingerprint=lineage.dataset_fingerprint,
        run_id=lineage.run_id,
        experiment_id=lineage.experiment_id,
        hyperparameters=lineage.hyperparameters,
        metrics=lineage.metrics,
        code_version=lineage.code_version,
        label=lineage.label,
        training_rows=lineage.training_rows,
    )
    if lineage.window_start is not None:
        message.window_start.FromDatetime(lineage.window_start)
    if lineage.window_end is not None:
        message.window_end.FromDatetime(lineage.window_end)
    if lineage.reference_profile is not None:
        message.reference_profile.CopyFrom(artifact_to_proto(lineage.reference_profile,
                                                             lineage.reference_profile_format))
    return message


def job_to_proto(job: Job) -> trainer_pb.TrainingJob:
    """The TrainingJob message of ``job``."""
    message = trainer_pb.TrainingJob(
        job_id=job.job_id,
        status=_STATUS[job.status],  # type: ignore[arg-type]
        parent_run_id=job.parent_run_id,
        trials_completed=job.trials_completed,
        best_run_id=job.best_run_id,
        best_metrics=job.best_metrics,
        model_version=job.model_version,
        promoted=job.promoted,
        error=job.error,
    )
    message.request.CopyFrom(request_to_proto(job.request))
    message.created_at.FromDatetime(job.created_at)
    if job.started_at is not None:
        message.started_at.FromDatetime(job.started_at)
    if job.finished_at is not None:
        message.finished_at.FromDatetime(job.finished_at)
    return message
