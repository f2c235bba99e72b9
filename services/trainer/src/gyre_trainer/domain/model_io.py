"""Model artifacts in skops format: serialise, and load back trusting only named types.

skops never unpickles: it rebuilds objects from an explicit schema and refuses types that are not
trusted. scikit-learn's own estimators are trusted by default; the tree internals our families
use are not, so they are listed here once, and loaders pass exactly this list (never
``trusted=True``). ``tests/unit/test_trainer_model_io.py`` checks that every family needs no more.
"""

from __future__ import annotations

from typing import Any

import skops.io as sio

ARTIFACT_FORMAT = "skops"
"""ArtifactRef.format of the trainer's model artifacts."""

TRUSTED_TYPES: tuple[str, ...] = (
    # The fitted trees of the forest and boosting families.
    "sklearn.tree._tree.Tree",
    # SimpleImputer remembers the dtype it was fitted on: a dtype descriptor, no code.
    "numpy.dtype",
)
"""Types a Gyre model artifact may hold beyond skops' defaults. Serving must load with exactly
this list (``skops.io.loads(data, trusted=list(TRUSTED_TYPES))``)."""


class UntrustedArtifactError(ValueError):
    """The artifact holds types that are not in :data:`TRUSTED_TYPES`; it is not loaded."""


def dump_model(model: Any) -> bytes:
    """The skops bytes of a fitted estimator or pipeline."""
    return bytes(sio.dumps(model))


def load_model(data: bytes) -> Any:
    """Load skops bytes, trusting only :data:`TRUSTED_TYPES` (plus skops' defaults).

    Raises:
        UntrustedArtifactError: the artifact holds other types.
    """
    untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    if untrusted:
        raise UntrustedArtifactError(f"model artifact holds untrusted types: {', '.join(untrusted)}")
    return sio.loads(data, trusted=list(TRUSTED_TYPES))
