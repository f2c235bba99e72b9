"""Model artifacts in skops format: the one list of trusted types, and save/load helpers.

skops never unpickles: it rebuilds objects from an explicit schema and refuses types that are not
trusted. scikit-learn's own estimators are trusted by default; the tree internals some families
use are not, so they are listed here once, and every loader (the trainer's check before
registration, serving) passes exactly this list — never ``trusted=True``, never pickle.
``tests/unit/test_trainer_model_io.py`` checks that every family the trainer searches needs no more.

skops is imported lazily: services that never touch models (most of them) need not install it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SKOPS_FORMAT = "skops"
"""``ArtifactRef.format`` of a skops model artifact."""

TRUSTED_SKOPS_TYPES: tuple[str, ...] = (
    # The fitted trees of the forest and boosting families.
    "sklearn.tree._tree.Tree",
    # SimpleImputer remembers the dtype it was fitted on: a dtype descriptor, no code.
    "numpy.dtype",
)
"""Types a Gyre model artifact may hold beyond skops' defaults."""


class UntrustedArtifactError(ValueError):
    """The artifact holds types that are not trusted; it is not loaded."""


def untrusted_types(data: bytes, trusted: Iterable[str] = TRUSTED_SKOPS_TYPES) -> list[str]:
    """The types in skops bytes that are neither skops defaults nor in ``trusted``, sorted.

    Raises:
        Exception: whatever skops raises for bytes that are not a skops artifact.
    """
    import skops.io as sio

    return sorted(set(sio.get_untrusted_types(data=data)) - set(trusted))


def dump_model(model: Any) -> bytes:
    """The skops bytes of a fitted estimator or pipeline."""
    import skops.io as sio

    return bytes(sio.dumps(model))


def load_model(data: bytes, trusted: Iterable[str] = TRUSTED_SKOPS_TYPES) -> Any:
    """Load skops bytes, trusting only ``trusted`` (default :data:`TRUSTED_SKOPS_TYPES`) plus skops' defaults.

    Raises:
        UntrustedArtifactError: the artifact holds other types.
        Exception: whatever skops raises for bytes that are not a skops artifact.
    """
    import skops.io as sio

    allowed = tuple(trusted)
    untrusted = untrusted_types(data, allowed)
    if untrusted:
        raise UntrustedArtifactError(f"model artifact holds untrusted types: {', '.join(untrusted)}")
    return sio.loads(data, trusted=list(allowed))
