"""Reading a model version from the artifact store: verify its sha256, build the runtime its
artifact format names (:mod:`gyre_serving.domain.runtime`) and warm it up.

* ``skops`` (or empty): scikit-learn, and ONNX Runtime for models that convert exactly; skops
  trusting only named types (never pickle);
* ``safetensors-text``: torch (serving's ``text`` extra); a Gyre text model, safetensors with its
  configuration in the file's metadata.
"""

from __future__ import annotations

from collections.abc import Iterable

import skops.io as sio

from gyre_common.artifacts import ArtifactIntegrityError, ArtifactNotFoundError, ArtifactStore
from gyre_common.models import SKOPS_FORMAT, TRUSTED_SKOPS_TYPES, untrusted_types
from gyre_serving.domain.errors import ModelLoadError
from gyre_serving.domain.model import LoadedModel
from gyre_serving.domain.runtime import ModelSource, Runtime, RuntimeFactory
from gyre_serving.domain.text import DEFAULT_MAX_TEXT_BYTES, TEXT_MODEL_FORMAT, load_text_runtime

SKOPS_FORMATS = frozenset({"", SKOPS_FORMAT})
"""``ArtifactRef.format`` values read as skops (empty: producers that did not say)."""


class ModelLoader:
    """Turns a :class:`ModelSource` into a warmed-up :class:`Runtime`.

    :meth:`load` is blocking (file I/O, deserialisation, a warm-up prediction): call it in a worker
    thread.

    Args:
        store: where artifacts are read from (each read verifies the sha256).
        trusted_types: types beyond skops' defaults an artifact may hold; by default the list the
            trainer saves with (:data:`gyre_common.models.TRUSTED_SKOPS_TYPES`).
        compile: try ONNX Runtime for each scikit-learn model (``GYRE_SERVING_RUNTIME=auto``); see
            :mod:`gyre_serving.domain.compiled`.
        max_text_bytes: longest text a text model accepts per element, in UTF-8 bytes.
        torch_threads: torch's threads (0: the cores this process may run on).
    """

    def __init__(self, store: ArtifactStore, trusted_types: Iterable[str] = TRUSTED_SKOPS_TYPES, *,
                 compile: bool = False, max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES, torch_threads: int = 0) -> None:
        self.store = store
        self.trusted_types = tuple(trusted_types)
        self.compile = compile
        self.max_text_bytes = max_text_bytes
        self.torch_threads = torch_threads
        self.runtimes: dict[str, RuntimeFactory] = {fmt: self.load_sklearn for fmt in SKOPS_FORMATS}
        self.runtimes[TEXT_MODEL_FORMAT] = self.load_text
        """The runtime factory of each artifact format served."""

    def load(self, source: ModelSource) -> Runtime:
        """Read, verify, deserialise, check and warm up one model version.

        Raises:
            ModelLoadError: with ``reason`` ``format`` (a format no runtime here loads),
                ``integrity`` (no or wrong sha256), ``not_found`` / ``unreadable`` (retryable),
                ``untrusted``, ``deserialise``, ``signature`` or ``warmup``.
        """
        label = f"{source.name} v{source.version}"
        factory = self.runtimes.get(source.format)
        if factory is None:
            served = ", ".join(sorted(fmt for fmt in self.runtimes if fmt))
            raise ModelLoadError("format", f"{label}: artifact format {source.format!r} is not served "
                                           f"(serving loads {served})")
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
        model = factory(source, data)
        model.warm_up()
        return model

    def load_sklearn(self, source: ModelSource, data: bytes) -> LoadedModel:
        """The scikit-learn runtime of a skops artifact (compiled for ONNX Runtime when asked and exact)."""
        label = f"{source.name} v{source.version}"
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
        return LoadedModel.build(source, estimator, compile=self.compile)

    def load_text(self, source: ModelSource, data: bytes) -> Runtime:
        """The torch runtime of a text model (:mod:`gyre_serving.domain.text`)."""
        return load_text_runtime(source, data, max_text_bytes=self.max_text_bytes, threads=self.torch_threads)
