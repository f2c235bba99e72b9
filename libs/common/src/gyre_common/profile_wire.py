"""The wire form of a reference profile (:mod:`gyre_common.profile`): the protobuf message
``gyre.monitor.v1.ReferenceProfile``, binary in the artifact store (:data:`~gyre_common.profile.PROFILE_FORMAT`).

Apart from :mod:`gyre_common.profile` so that the profile itself, which services' domains use,
does not depend on the generated contracts; transports, stores and artifact adapters use this.
"""

from __future__ import annotations

from datetime import UTC

import numpy as np
from google.protobuf.message import DecodeError

from gyre_common.profile import FeatureKind, FeatureReference, ProfileError, ReferenceProfile
from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2 as pb

__all__ = ["decode_profile", "encode_profile", "profile_from_proto", "profile_to_proto"]

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
            :func:`validate_profile`.
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
    # Deterministic: map entries (category counts) in key order, so equal profiles are equal bytes
    # (artifacts are content-addressed).
    return profile_to_proto(profile).SerializeToString(deterministic=True)


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
