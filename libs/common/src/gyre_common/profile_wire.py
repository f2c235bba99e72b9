"""The wire form of a reference profile (:mod:`gyre_common.profile`): the protobuf message
``gyre.monitor.v1.ReferenceProfile``, binary in the artifact store (:data:`~gyre_common.profile.PROFILE_FORMAT`).

Apart from :mod:`gyre_common.profile` so that the profile itself, which services' domains use,
does not depend on the generated contracts; transports, stores and artifact adapters use this.
"""

from __future__ import annotations

from datetime import UTC

import numpy as np
from google.protobuf.message import DecodeError

from gyre_common.profile import (
    MAX_EMBEDDING_DIMENSIONS,
    MAX_EMBEDDING_ROWS,
    FeatureKind,
    FeatureReference,
    ProfileError,
    ReferenceProfile,
    TextReference,
)
from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2 as pb

__all__ = ["decode_profile", "encode_profile", "profile_from_proto", "profile_to_proto"]

_KINDS = {
    FeatureKind.NUMERICAL: pb.FEATURE_KIND_NUMERICAL,
    FeatureKind.CATEGORICAL: pb.FEATURE_KIND_CATEGORICAL,
    FeatureKind.TEXT: pb.FEATURE_KIND_TEXT,
}
_FROM_KINDS = {value: kind for kind, value in _KINDS.items()}
# TextProfile.embeddings: float16, little-endian, row-major.
_EMBEDDING_DTYPE = np.dtype("<f2")


def _fill_feature(entry: pb.FeatureProfile, feature: FeatureReference) -> None:
    entry.feature = feature.name
    entry.kind = _KINDS[feature.kind]
    entry.missing_count = feature.missing
    if feature.kind is FeatureKind.NUMERICAL:
        entry.values.extend(feature.values.tolist())
    elif feature.kind is FeatureKind.CATEGORICAL:
        entry.category_counts.update(feature.counts)
    elif feature.text is not None:
        text = feature.text
        rows, dims = text.embeddings.shape
        entry.text.encoder = text.encoder
        entry.text.embedding_dimensions = dims if rows else 0
        entry.text.embeddings = text.embeddings.astype(_EMBEDDING_DTYPE).tobytes() if rows else b""
        entry.text.vocabulary.extend(text.vocabulary)
        for descriptor in text.descriptors:
            _fill_feature(entry.text.descriptors.add(), descriptor)


def _feature(entry: pb.FeatureProfile) -> FeatureReference:
    kind = _FROM_KINDS.get(entry.kind)
    if kind is FeatureKind.NUMERICAL:
        return FeatureReference(entry.feature, kind, values=np.asarray(entry.values, dtype=np.float64),
                                missing=entry.missing_count)
    if kind is FeatureKind.CATEGORICAL:
        return FeatureReference(entry.feature, kind, counts=dict(entry.category_counts), missing=entry.missing_count)
    if kind is FeatureKind.TEXT:
        return FeatureReference(entry.feature, kind, missing=entry.missing_count, text=_text(entry))
    raise ProfileError(f"feature {entry.feature!r} has no kind (numerical, categorical or text)")


def _text(entry: pb.FeatureProfile) -> TextReference:
    text = entry.text
    dims, data = text.embedding_dimensions, text.embeddings
    if not data:
        embeddings = np.zeros((0, 0), dtype=np.float32)
    else:
        if not 1 <= dims <= MAX_EMBEDDING_DIMENSIONS:
            raise ProfileError(f"text feature {entry.feature!r}: embedding_dimensions must be in "
                               f"[1, {MAX_EMBEDDING_DIMENSIONS}], got {dims}")
        width = dims * _EMBEDDING_DTYPE.itemsize
        if len(data) % width or len(data) // width > MAX_EMBEDDING_ROWS:
            raise ProfileError(f"text feature {entry.feature!r}: {len(data)} bytes of embeddings are not "
                               f"at most {MAX_EMBEDDING_ROWS} rows of {dims} float16 values")
        embeddings = np.frombuffer(data, dtype=_EMBEDDING_DTYPE).reshape(-1, dims).astype(np.float32)
    descriptors = []
    for item in text.descriptors:
        if item.kind == pb.FEATURE_KIND_TEXT:
            raise ProfileError(f"text feature {entry.feature!r}: descriptor {item.feature!r} cannot be text")
        descriptors.append(_feature(item))
    return TextReference(text.encoder, embeddings, tuple(text.vocabulary), tuple(descriptors))


def profile_to_proto(profile: ReferenceProfile) -> pb.ReferenceProfile:
    """The protobuf form of a profile (``created_at`` set when known)."""
    message = pb.ReferenceProfile(
        model_name=profile.model_name,
        model_version=profile.model_version,
        rows=profile.rows,
        dataset_fingerprint=profile.dataset_fingerprint,
    )
    for feature in profile.features:
        _fill_feature(message.features.add(), feature)
    if profile.created_at is not None:
        message.created_at.FromDatetime(profile.created_at.astimezone(UTC))
    return message


def profile_from_proto(message: pb.ReferenceProfile) -> ReferenceProfile:
    """A validated profile from its protobuf form.

    Raises:
        ProfileError: unspecified feature kind, embeddings bytes that are not rows of
            ``embedding_dimensions`` float16 values, or a profile that breaks the rules of
            :func:`validate_profile`.
    """
    features = [_feature(entry) for entry in message.features]
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
