"""Reading a model version from the artifact store: verify its sha256, load it with skops trusting
only named types (never pickle), check it against its signature and warm it up."""

from __future__ import annotations

from collections.abc import Iterable

import skops.io as sio

from gyre_common.artifacts import ArtifactIntegrityError, ArtifactNotFoundError, ArtifactStore
from gyre_common.models import SKOPS_FORMAT, TRUSTED_SKOPS_TYPES, untrusted_types
from gyre_serving.domain.errors import ModelLoadError
from gyre_serving.domain.model import LoadedModel, ModelSource

SKOPS_FORMATS = frozenset({"", SKOPS_FORMAT})
"""``ArtifactRef.format`` values read as skops (empty: producers that did not say)."""


class ModelLoader:
    """Turns a :class:`ModelSource` into a warmed-up :class:`LoadedModel`.

    :meth:`load` is blocking (file I/O, deserialisation, a warm-up prediction): call it in a worker
    thread.

    Args:
        store: where artifacts are read from (each read verifies the sha256).
        trusted_types: types beyond skops' defaults an artifact may hold; by default the list the
            trainer saves with (:data:`gyre_common.models.TRUSTED_SKOPS_TYPES`).
        compile: try ONNX Runtime for each model (``GYRE_SERVING_RUNTIME=auto``); see
            :mod:`gyre_serving.domain.compiled`.
    """

    def __init__(self, store: ArtifactStore, trusted_types: Iterable[str] = TRUSTED_SKOPS_TYPES, *,
                 compile: bool = False) -> None:
        self.store = store
        self.trusted_types = tuple(trusted_types)
        self.compile = compile

    def load(self, source: ModelSource) -> LoadedModel:
        """Read, verify, deserialise, check and warm up one model version.

        Raises:
            ModelLoadError: with ``reason`` ``format``, ``integrity`` (no or wrong sha256),
                ``not_found`` / ``unreadable`` (retryable), ``untrusted``, ``deserialise``,
                ``signature`` or ``warmup``.
        """
        label = f"{source.name} v{source.version}"
        if source.format not in SKOPS_FORMATS:
            raise ModelLoadError("format", f"{label}: artifact format {source.format!r} is not served "
                                           f"(serving loads skops artifacts)")
        if not source.sha256:
            raise ModelLoadError("integrity", f"{label}: the artifact has no sha256; serving loads only verified "
                                              f"artifacts")
        try:
            data = self.store.get(source.artifact_uri, source.sha256)
        except ArtifactIntegrityError as exc:
            raise ModelLoadError("integrity", f"{label}: {exc}") from None
        except ArtifactNotFoundError as exc:
            raise ModelLoadError("not_found", f"{label}: {exc}", retryable=True) from None
        except OSError as exc:
            raise ModelLoadError("unreadable", f"{label}: cannot read {source.artifact_uri}: {exc}",
                                 retryable=True) from None
        except ValueError as exc:
            raise ModelLoadError("unreadable", f"{label}: {exc}") from None
        try:
            untrusted = untrusted_types(data, self.trusted_types)
        except Exception as exc:
            raise ModelLoadError("deserialise", f"{label}: not a skops artifact: {exc}") from None
        if untrusted:
            raise ModelLoadError("untrusted", f"{label}: the artifact holds types that are not trusted: "
                                              f"{', '.join(untrusted)} (see GYRE_SERVING_TRUSTED_TYPES)")
        try:
            estimator = sio.loads(data, trusted=list(self.trusted_types))
        except Exception as exc:
            raise ModelLoadError("deserialise", f"{label}: skops could not load the artifact: {exc}") from None
        model = LoadedModel.build(source, estimator, compile=self.compile)
        model.warm_up()
        return model
