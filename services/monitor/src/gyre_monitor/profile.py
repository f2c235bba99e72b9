"""Reference profiles on the wire: ``gyre.monitor.v1.ReferenceProfile`` (binary protobuf).

This is what a producer (the trainer) needs to hand the monitor a profile::

    from gyre_monitor.profile import build_reference_profile, encode_profile

    profile = build_reference_profile(X_train, model_name="churn", model_version=7,
                                      dataset_fingerprint=fingerprint)
    ref = artifacts.put(encode_profile(profile))          # gyre_common.artifacts
    lineage.reference_profile.uri = ref.uri                # gyre.events.v1.Lineage field 13
    lineage.reference_profile.sha256 = ref.sha256
    lineage.reference_profile.size_bytes = ref.size
    lineage.reference_profile.format = PROFILE_FORMAT

The registry copies the lineage into its VERSION_CREATED event; the monitor reads the artifact
(verifying its sha256) and stores the profile. The module depends on numpy and the generated
contracts only, so it can move to ``libs/common`` unchanged.
"""

from __future__ import annotations

from datetime import UTC

import numpy as np
from google.protobuf.message import DecodeError

from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2 as pb
from gyre_monitor.domain.profile import (
    FeatureKind,
    FeatureReference,
    ProfileError,
    ReferenceProfile,
    build_reference_profile,
)

__all__ = [
    "PROFILE_FORMAT",
    "ProfileError",
    "ReferenceProfile",
    "build_reference_profile",
    "decode_profile",
    "encode_profile",
    "profile_from_proto",
    "profile_to_proto",
]

PROFILE_FORMAT = "gyre.monitor.v1.ReferenceProfile"
"""``ArtifactRef.format`` of a stored profile: binary protobuf of that message."""

_KINDS = {
    FeatureKind.NUMERICAL: pb.FEATURE_KIND_NUMERICAL,
    FeatureKind.CATEGORICAL: pb.FEATURE_KIND_CATEGORICAL,
}


def profile_to_proto(profile: ReferenceProfile) -> pb.ReferenceProfile:
    """The protobuf form of a profile (``created_at`` set when known)."""
    message = pb.ReferenceProfile(
        model_name=profile.model_name,
        model_version=profile.model_version,
        rows=profile.rows,
        dataset_fingerprint=profile.dataset_fingerprint,
    )
    for feature in profile.features:
        entry = message.features.add(feature=feature.name, kind=_KINDS[feature.kind], missing_count=feature.missing)
        if feature.kind is FeatureKind.NUMERICAL:
            entry.values.extend(feature.values.tolist())
        else:
            entry.category_counts.update(feature.counts)
    if profile.created_at is not None:
        message.created_at.FromDatetime(profile.created_at.astimezone(UTC))
    return message


def profile_from_proto(message: pb.ReferenceProfile) -> ReferenceProfile:
    """A validated profile from its protobuf form.

    Raises:
        ProfileError: unspecified feature kind, or a profile that breaks the rules of
            :func:`gyre_monitor.domain.profile.validate_profile`.
    """
    features = []
    for entry in message.features:
        if entry.kind == pb.FEATURE_KIND_NUMERICAL:
            values = np.asarray(entry.values, dtype=np.float64)
            features.append(FeatureReference(entry.feature, FeatureKind.NUMERICAL, values=values,
                                             missing=entry.missing_count))
        elif entry.kind == pb.FEATURE_KIND_CATEGORICAL:
            features.append(FeatureReference(entry.feature, FeatureKind.CATEGORICAL,
                                             counts=dict(entry.category_counts), missing=entry.missing_count))
        else:
            raise ProfileError(f"feature {entry.feature!r} has no kind (numerical or categorical)")
    created_at = message.created_at.ToDatetime(tzinfo=UTC) if message.HasField("created_at") else None
    return ReferenceProfile(message.model_name, message.model_version, tuple(features), int(message.rows),
                            message.dataset_fingerprint, created_at)


def encode_profile(profile: ReferenceProfile) -> bytes:
    """Binary protobuf of a profile (what goes into the artifact store)."""
    return profile_to_proto(profile).SerializeToString()


def decode_profile(data: bytes) -> ReferenceProfile:
    """Parse and validate a binary profile.

    Raises:
        ProfileError: the bytes are not a ``gyre.monitor.v1.ReferenceProfile`` or the profile is invalid.
    """
    message = pb.ReferenceProfile()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise ProfileError(f"not a binary gyre.monitor.v1.ReferenceProfile: {exc}") from None
    return profile_from_proto(message)
