"""Checks of the registry's request messages (``CreateModelVersionRequest`` and its parts), built
on the field rules of :mod:`gyre_registry.domain.validation`. They raise
:class:`~gyre_registry.domain.errors.InvalidArgument` naming the dotted field path."""

from __future__ import annotations

import math
from collections.abc import Mapping

from gyre_contracts.gyre.events.v1 import common_pb2
from gyre_contracts.gyre.registry.v1 import registry_service_pb2 as pb
from gyre_registry.domain.errors import InvalidArgument
from gyre_registry.domain.validation import (
    MAX_DESCRIPTION_CHARS,
    MAX_LINEAGE_ENTRIES,
    MAX_TENSORS,
    MAX_URI_CHARS,
    model_name,
    sha256_hex,
    tags,
    text,
)


def artifact_ref(ref: common_pb2.ArtifactRef, field: str) -> None:
    """Check an artifact reference: a uri, a sha256, a non-negative size."""
    if not ref.uri:
        raise InvalidArgument(f"{field}.uri", "is required")
    text(ref.uri, f"{field}.uri", MAX_URI_CHARS)
    sha256_hex(ref.sha256, f"{field}.sha256")
    if ref.size_bytes < 0:
        raise InvalidArgument(f"{field}.size_bytes", f"must be >= 0, got {ref.size_bytes}")
    text(ref.format, f"{field}.format", 64)


def signature(sig: common_pb2.ModelSignature, field: str = "signature") -> None:
    """Check a signature: bounded sizes, every tensor named."""
    for part, tensors in (("inputs", sig.inputs), ("outputs", sig.outputs)):
        if len(tensors) > MAX_TENSORS:
            raise InvalidArgument(f"{field}.{part}", f"at most {MAX_TENSORS} tensors, got {len(tensors)}")
        for i, tensor in enumerate(tensors):
            if not tensor.name:
                raise InvalidArgument(f"{field}.{part}[{i}].name", "is required")


def lineage(lin: common_pb2.Lineage, field: str = "lineage") -> None:
    """Check a lineage: digests are SHA-256 hex when given, sizes bounded, window ordered."""
    if lin.dataset_fingerprint:
        sha256_hex(lin.dataset_fingerprint, f"{field}.dataset_fingerprint")
    for name, entries in (
        ("feature_views", lin.feature_views),
        ("hyperparameters", lin.hyperparameters),
        ("metrics", lin.metrics),
    ):
        if len(entries) > MAX_LINEAGE_ENTRIES:
            raise InvalidArgument(f"{field}.{name}", f"at most {MAX_LINEAGE_ENTRIES} entries, got {len(entries)}")
    if (
        lin.HasField("window_start")
        and lin.HasField("window_end")
        and lin.window_end.ToNanoseconds() < lin.window_start.ToNanoseconds()
    ):
        raise InvalidArgument(f"{field}.window_end", "is before window_start")
    if lin.training_rows < 0:
        raise InvalidArgument(f"{field}.training_rows", f"must be >= 0, got {lin.training_rows}")
    if lin.HasField("reference_profile"):
        artifact_ref(lin.reference_profile, f"{field}.reference_profile")


def evaluation(ev: pb.HoldoutEvaluation, metrics: Mapping[str, float], field: str = "evaluation") -> None:
    """Check that a named primary metric is present in the lineage's metrics and is a number."""
    if not ev.primary_metric:
        return
    if ev.primary_metric not in metrics:
        known = ", ".join(sorted(metrics)) or "none"
        raise InvalidArgument(
            f"{field}.primary_metric",
            f"{ev.primary_metric!r} is not in lineage.metrics (has: {known})",
        )
    if math.isnan(metrics[ev.primary_metric]):
        raise InvalidArgument(f"{field}.primary_metric", f"lineage.metrics[{ev.primary_metric!r}] is NaN")
    text(ev.holdout_id, f"{field}.holdout_id", 256)


def create_model_version(request: pb.CreateModelVersionRequest) -> None:
    """Every check of a CreateModelVersion request (raises the first :class:`InvalidArgument`)."""
    model_name(request.model_name)
    if not request.HasField("artifact"):
        raise InvalidArgument("artifact", "is required")
    artifact_ref(request.artifact, "artifact")
    signature(request.signature)
    lineage(request.lineage)
    evaluation(request.evaluation, request.lineage.metrics)
    text(request.description, "description", MAX_DESCRIPTION_CHARS)
    tags(request.tags)
    text(request.idempotency_key, "idempotency_key", 256)
