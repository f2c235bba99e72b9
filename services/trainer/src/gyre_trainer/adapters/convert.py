"""Domain objects to and from their protobuf contracts."""

from __future__ import annotations

from gyre_common.artifacts import ArtifactRef
from gyre_contracts.gyre.events.v1 import common_pb2
from gyre_contracts.gyre.trainer.v1 import trainer_service_pb2 as trainer_pb
from gyre_trainer.domain.jobs import Job, JobStatus
from gyre_trainer.domain.signature import Signature
from gyre_trainer.ports import Lineage

_STATUS = {
    JobStatus.QUEUED: 0,  # TRAINING_STATUS_UNSPECIFIED: queued, per the TrainingJob contract
    JobStatus.RUNNING: 1,  # TRAINING_STATUS_STARTED
    JobStatus.SUCCEEDED: 3,
    JobStatus.FAILED: 4,
}


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
    message.request.CopyFrom(job.request)
    message.created_at.FromDatetime(job.created_at)
    if job.started_at is not None:
        message.started_at.FromDatetime(job.started_at)
    if job.finished_at is not None:
        message.finished_at.FromDatetime(job.finished_at)
    return message
