"""The one interface every model runtime implements, as MLServer organises its runtimes.

A :class:`Runtime` is one model version ready to predict: it was loaded from the artifact's bytes
by the factory registered for the artifact's ``model_format`` (:class:`RuntimeFactory`), checked
against the version's signature and warmed up. The data plane, the adaptive batcher and the
repository only see this interface:

* :meth:`Runtime.features` checks a request's decoded inputs against the signature and arranges
  them as a :class:`~gyre_serving.domain.signature.FeatureBatch` (the input side of encoding);
* :meth:`Runtime.predict` answers a batch with every signature output plus the per-row columns of
  the inference events (the output side: :class:`Prediction`);
* :meth:`Runtime.warm_up` predicts once on dummy inputs before the version takes traffic.

Adapters: scikit-learn (:class:`gyre_serving.domain.model.LoadedModel`, ``skops`` artifacts), which
hands rows to ONNX Runtime when the model converts exactly (:mod:`gyre_serving.domain.compiled`),
and torch text models (:class:`gyre_serving.domain.text.TextRuntime`, ``safetensors-text``).

A runtime is immutable once built: swapping versions replaces the object, so a request that started
on the old version finishes on it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from gyre_serving.domain.errors import ModelLoadError
from gyre_serving.domain.signature import FeatureBatch, Signature, dummy_inputs
from gyre_serving.domain.tensors import Tensor


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a model version comes from: what the registry says about it.

    Attributes:
        name: registered model name.
        version: version number (from 1).
        artifact_uri: artifact location (``file:///...`` for the local store).
        sha256: lowercase hex digest the artifact must have.
        format: artifact format, which picks the runtime ("skops", "safetensors-text"; empty is
            read as skops).
        signature: the version's signature; None lets the runtime infer one from the model.
    """

    name: str
    version: int
    artifact_uri: str
    sha256: str
    format: str = "skops"
    signature: Signature | None = None


@dataclass(frozen=True, slots=True)
class Prediction:
    """The outputs of one request.

    Attributes:
        outputs: every signature output, in signature order, with the request's batch size first.
        event_columns: per-row values for inference events: ``(name, 1-D array)`` with the predict
            output under its own name and each probability column as ``<output>_<class>``.
    """

    outputs: tuple[Tensor, ...]
    event_columns: tuple[tuple[str, np.ndarray[Any, Any]], ...]


class Runtime(ABC):
    """One loaded model version behind the interface the data plane uses (see the module docstring).

    Attributes every adapter has: ``source`` (name, version, artifact, declared signature),
    ``signature`` (what requests are checked against: declared, or inferred from the model),
    ``loaded_at`` (UTC) and ``runtime_note`` (why a faster path was not taken; may be empty).
    """

    source: ModelSource
    signature: Signature
    loaded_at: datetime
    runtime_note: str

    blocking: bool = False
    """Whether one :meth:`predict` holds the CPU long enough (tens of milliseconds: a transformer)
    that the data plane runs it in a worker thread, so the event loop keeps answering meanwhile.
    False for the small tabular models, whose call is cheaper than the hand-off to a thread."""

    text_inputs: frozenset[str] = frozenset()
    """Inputs that are free text (their events may carry only a hash: ``GYRE_SERVING_EVENT_TEXT``)."""

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def version(self) -> int:
        return self.source.version

    @property
    @abstractmethod
    def platform(self) -> str:
        """``ModelMetadata.platform``: the framework the model was made with (``sklearn``, ``torch``)."""

    @property
    @abstractmethod
    def runtime(self) -> str:
        """What computes the answers (``sklearn``, ``onnxruntime``, ``torch``): logs and metrics."""

    @abstractmethod
    def features(self, inputs: Sequence[Tensor]) -> FeatureBatch:
        """Check request inputs against the signature. Raises :class:`InvalidRequestError`."""

    @abstractmethod
    def predict(self, batch: FeatureBatch) -> Prediction:
        """Every signature output for ``batch``, the batch size first.

        Raises:
            InvalidRequestError: the model rejected the values.
            PredictionError: anything else went wrong inside the model.
        """

    def warm_up(self) -> Prediction:
        """Predict on dummy inputs built from the signature, so the first real request pays no
        first-call costs and a model that cannot answer is refused before it takes traffic.

        Raises:
            ModelLoadError: ``warmup`` with what failed.
        """
        try:
            return self.predict(self.features(dummy_inputs(self.signature)))
        except Exception as exc:
            raise ModelLoadError("warmup", f"{self.name} v{self.version} failed its warm-up request: {exc}") from exc


RuntimeFactory = Callable[[ModelSource, bytes], Runtime]
"""Builds a runtime from a version's description and its verified artifact bytes (blocking: it
deserialises and may compile). Raises :class:`ModelLoadError` (``deserialise``, ``signature``,
``unavailable``, ...) when it cannot."""
