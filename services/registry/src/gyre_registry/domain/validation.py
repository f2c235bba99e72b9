"""Input checks of the registry's use cases: names, aliases, digests, sizes, and whole version
drafts (artifact, signature, lineage, evaluation). Raise :class:`InvalidArgument` naming the dotted
field path of the request (e.g. ``lineage.reference_profile.sha256``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from gyre_registry.domain.errors import InvalidArgument
from gyre_registry.domain.models import ArtifactRef, HoldoutEvaluation, Lineage, ModelSignature, VersionDraft

MODEL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
ALIAS = re.compile(r"^[a-z0-9_\-]{1,64}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
LATEST = "latest"
"""Reserved alias: the newest version that is not archived."""

MAX_DESCRIPTION_CHARS = 5000
MAX_TAGS = 100
MAX_TAG_KEY_CHARS = 250
MAX_TAG_VALUE_CHARS = 5000
MAX_URI_CHARS = 2048
MAX_LINEAGE_ENTRIES = 1000
"""Most hyperparameters, metrics or feature views one lineage may carry."""
MAX_TENSORS = 10000
"""Most inputs (or outputs) one signature may declare."""
MAX_COMMENT_CHARS = 2000


def model_name(name: str, field: str = "model_name") -> str:
    """``name`` if valid: letters, digits, ``_``, ``-`` and ``.``, 1 to 128 characters."""
    if not MODEL_NAME.match(name):
        shown = name if len(name) <= 140 else name[:140] + "..."
        raise InvalidArgument(
            field, f"invalid model name {shown!r}: use letters, digits, '_', '-' and '.', at most 128 characters"
        )
    if name in (".", ".."):
        raise InvalidArgument(field, f"invalid model name {name!r}")
    return name


def alias(name: str, field: str = "alias", *, allow_latest: bool = False) -> str:
    """``name`` if it is a settable alias (or ``latest`` when ``allow_latest``).

    Aliases are lowercase letters, digits, ``_`` and ``-``, not all digits (that would read as a
    version number), at most 64 characters; ``latest`` is reserved.
    """
    if allow_latest and name == LATEST:
        return name
    if not ALIAS.match(name) or name.isdigit():
        raise InvalidArgument(
            field,
            f"invalid alias {name[:80]!r}: use lowercase letters, digits, '_' and '-', not all digits, "
            "at most 64 characters",
        )
    if name == LATEST:
        raise InvalidArgument(field, "'latest' is reserved: it always means the newest version")
    return name


def version_number(version: int, field: str = "version") -> int:
    """``version`` if it is a version number (1 or more)."""
    if version < 1:
        raise InvalidArgument(field, f"versions are numbered from 1, got {version}")
    return version


def text(value: str, field: str, max_chars: int) -> str:
    """``value`` if it has at most ``max_chars`` characters."""
    if len(value) > max_chars:
        raise InvalidArgument(field, f"at most {max_chars} characters, got {len(value)}")
    return value


def tags(values: Mapping[str, str], field: str = "tags") -> None:
    """Check a tag map: at most 100 tags, keys 1 to 250 characters, values at most 5000."""
    if len(values) > MAX_TAGS:
        raise InvalidArgument(field, f"at most {MAX_TAGS} tags, got {len(values)}")
    for key, value in values.items():
        if not key or len(key) > MAX_TAG_KEY_CHARS:
            raise InvalidArgument(field, f"tag keys need 1 to {MAX_TAG_KEY_CHARS} characters, got {key[:40]!r}")
        if len(value) > MAX_TAG_VALUE_CHARS:
            raise InvalidArgument(f"{field}[{key}]", f"at most {MAX_TAG_VALUE_CHARS} characters")


def sha256_hex(value: str, field: str) -> str:
    """``value`` if it is 64 lowercase hex characters."""
    if not SHA256_HEX.match(value):
        raise InvalidArgument(field, f"must be 64 lowercase hex characters (a SHA-256 digest), got {value[:80]!r}")
    return value


def page_size(size: int, field: str = "page_size") -> int:
    """The page size to use: 1 to 1000, 0 means 100."""
    if size == 0:
        return 100
    if not 1 <= size <= 1000:
        raise InvalidArgument(field, f"must be 1 to 1000 (or 0 for 100), got {size}")
    return size


def artifact_ref(ref: ArtifactRef, field: str) -> None:
    """Check an artifact reference: a uri, a sha256, a non-negative size."""
    if not ref.uri:
        raise InvalidArgument(f"{field}.uri", "is required")
    text(ref.uri, f"{field}.uri", MAX_URI_CHARS)
    sha256_hex(ref.sha256, f"{field}.sha256")
    if ref.size_bytes < 0:
        raise InvalidArgument(f"{field}.size_bytes", f"must be >= 0, got {ref.size_bytes}")
    text(ref.format, f"{field}.format", 64)


def signature(sig: ModelSignature, field: str = "signature") -> None:
    """Check a signature: bounded sizes, every tensor named."""
    for part, tensors in (("inputs", sig.inputs), ("outputs", sig.outputs)):
        if len(tensors) > MAX_TENSORS:
            raise InvalidArgument(f"{field}.{part}", f"at most {MAX_TENSORS} tensors, got {len(tensors)}")
        for i, tensor in enumerate(tensors):
            if not tensor.name:
                raise InvalidArgument(f"{field}.{part}[{i}].name", "is required")


def lineage(lin: Lineage, field: str = "lineage") -> None:
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
    if lin.window_start is not None and lin.window_end is not None and lin.window_end < lin.window_start:
        raise InvalidArgument(f"{field}.window_end", "is before window_start")
    if lin.training_rows < 0:
        raise InvalidArgument(f"{field}.training_rows", f"must be >= 0, got {lin.training_rows}")
    if lin.reference_profile is not None:
        artifact_ref(lin.reference_profile, f"{field}.reference_profile")


def evaluation(ev: HoldoutEvaluation, metrics: Mapping[str, float], field: str = "evaluation") -> None:
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


def version_draft(draft: VersionDraft) -> ArtifactRef:
    """Every check of a version to register (raises the first :class:`InvalidArgument`); its artifact."""
    model_name(draft.model_name)
    if draft.artifact is None:
        raise InvalidArgument("artifact", "is required")
    artifact_ref(draft.artifact, "artifact")
    signature(draft.signature)
    lineage(draft.lineage)
    evaluation(draft.evaluation, draft.lineage.metrics)
    text(draft.description, "description", MAX_DESCRIPTION_CHARS)
    tags(draft.tags)
    text(draft.idempotency_key, "idempotency_key", 256)
    return draft.artifact
