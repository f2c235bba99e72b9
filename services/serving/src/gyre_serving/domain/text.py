"""The torch text runtime: a Gyre text model (``safetensors-text``) answering BYTES (UTF-8) inputs.

The model comes from :func:`gyre_ml.text_model.load_text_model` (a pretrained encoder from an
installed package plus the fine-tuned head and layers from the artifact; no pickle). ``gyre_ml``
and torch are imported only when a text model is loaded, so serving installed without its ``text``
extra starts, serves scikit-learn models, and refuses a text model with a load error (``format``)
that says which extra to install.

Requests: one BYTES input of shape ``[batch]`` (or ``[batch, 1]``), one text per row, UTF-8 (invalid
UTF-8 answers INVALID_ARGUMENT), each at most ``max_text_bytes`` bytes. Outputs mirror a
scikit-learn classifier's: the predicted label (``predict``, BYTES) and the class probabilities
(``proba``, FP32 ``[batch, n_labels]``, columns in the model's label order); a regression model
answers one value per row (``predict``, FP32). A whole batch is tokenised at once, padded to its
longest text (:meth:`gyre_ml.text_model.TextModel.predict`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from gyre_serving.domain.errors import InvalidRequestError, ModelLoadError, PredictionError
from gyre_serving.domain.runtime import ModelSource, Prediction, Runtime
from gyre_serving.domain.signature import (
    PREDICT_OUTPUT,
    PROBA_OUTPUT,
    FeatureBatch,
    OutputKind,
    Signature,
    TensorSpec,
    assemble_features,
    output_kind,
    validate_signature,
)
from gyre_serving.domain.tensors import Tensor, cast

TEXT_MODEL_FORMAT = "safetensors-text"
"""The registry's ``model_format`` of text models (``gyre_ml.text_model.MODEL_FORMAT``; repeated
here so that recognising the format does not import torch)."""
PLATFORM = "torch"
"""``ModelMetadata.platform`` of text models."""
DEFAULT_TEXT_INPUT = "text"
"""Input name of a text model whose version declares no signature and whose configuration names none."""
DEFAULT_MAX_TEXT_BYTES = 16_384
"""Longest text one BYTES element may hold, in UTF-8 bytes, unless serving's ``max_text_bytes`` says
otherwise. Texts are truncated to the model's ``max_length`` tokens (128 by default: a few hundred
words) anyway, so a longer text only costs tokenising time."""
WARM_UP_TEXTS = ("warm-up", "a second, longer warm-up text so that the batch is padded")
"""The dummy batch a text model predicts before it takes traffic (two texts: padding runs too)."""


def torch_threads(setting: int) -> int:
    """Threads torch computes with: ``setting``, or (0) the cores this process may run on."""
    if setting > 0:
        return setting
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class TextRuntime(Runtime):
    """A text model version ready to predict. Build it with :func:`load_text_runtime`.

    Attributes:
        model: the ``gyre_ml.text_model.TextModel`` (eval mode).
        labels: class labels in probability-column order; empty for a regression model.
        max_text_bytes: longest text accepted, in UTF-8 bytes.
    """

    source: ModelSource
    signature: Signature
    model: Any
    labels: tuple[str, ...] = ()
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES
    text_inputs: frozenset[str] = frozenset()
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    runtime_note: str = ""

    # A transformer call takes milliseconds to tens of milliseconds: off the event loop.
    blocking = True

    @property
    def platform(self) -> str:
        return PLATFORM

    @property
    def runtime(self) -> str:
        return "torch"

    def features(self, inputs: Sequence[Tensor]) -> FeatureBatch:
        """The request's texts, decoded.

        Raises:
            InvalidRequestError: wrong input names, datatype or shape (as every runtime), a text
                longer than ``max_text_bytes``, or one that is not valid UTF-8 (the message names
                the input and the row).
        """
        batch = assemble_features(self.signature, inputs)
        name = batch.names[0]
        column = batch.columns[0]
        texts = np.empty(batch.rows, dtype=object)
        limit = self.max_text_bytes
        for row, item in enumerate(column):
            if len(item) > limit:
                raise InvalidRequestError(f"input {name!r} row {row}: the text has {len(item)} bytes; at most "
                                          f"{limit} (UTF-8)")
            try:
                texts[row] = item.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidRequestError(f"input {name!r} row {row} is not valid UTF-8: {exc.reason} at byte "
                                          f"{exc.start}") from None
        return FeatureBatch(batch.names, (texts,), batch.rows)

    def predict(self, batch: FeatureBatch) -> Prediction:
        """Every signature output for the batch's texts, tokenised together (padded to the longest).

        Raises:
            PredictionError: torch failed.
        """
        texts = list(batch.columns[0])
        try:
            # One padded batch, whatever its size: adaptive batching already chose the size.
            scores = self.model.predict(texts, batch_size=max(len(texts), 1))
        except Exception as exc:
            raise PredictionError(f"model {self.name} v{self.version} failed: {type(exc).__name__}: {exc}") from exc
        rows = batch.rows
        outputs: list[Tensor] = []
        events: list[tuple[str, np.ndarray[Any, Any]]] = []
        for spec in self.signature.outputs:
            if output_kind(spec) is OutputKind.PROBA:
                tensor = cast(spec.name, scores.reshape(rows, -1), spec.datatype)
                outputs.append(tensor)
                events.extend((f"{spec.name}_{label}", tensor.data[:, j]) for j, label in enumerate(self.labels))
                continue
            if self.labels:
                predicted = np.asarray(self.labels, dtype=object).take(np.argmax(scores, axis=1))
            else:
                predicted = scores.reshape(rows)
            tensor = cast(spec.name, predicted.reshape((rows, *[1] * (len(spec.shape) - 1))), spec.datatype)
            outputs.append(tensor)
            events.append((spec.name, tensor.data.reshape(-1)))
        return Prediction(tuple(outputs), tuple(events))

    def warm_up(self) -> Prediction:
        """Predict one dummy batch (:data:`WARM_UP_TEXTS`) before the version takes traffic.

        Raises:
            ModelLoadError: ``warmup`` with what failed.
        """
        texts = np.empty(len(WARM_UP_TEXTS), dtype=object)
        texts[:] = list(WARM_UP_TEXTS)
        try:
            return self.predict(FeatureBatch((self.signature.inputs[0].name,), (texts,), len(texts)))
        except Exception as exc:
            raise ModelLoadError("warmup", f"{self.name} v{self.version} failed its warm-up request: {exc}") from exc


def load_text_runtime(source: ModelSource, data: bytes, *, max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES,
                      threads: int = 0) -> TextRuntime:
    """Build a text runtime from verified artifact bytes (blocking: loads the encoder; not warmed up).

    Args:
        max_text_bytes: longest text accepted per element, in UTF-8 bytes.
        threads: torch's intra-op threads (process-wide); 0 for the cores this process may run on.

    Raises:
        ModelLoadError: ``format`` (serving was installed without its ``text`` extra),
            ``deserialise`` (not a Gyre text model, other base weights, tensors that do not fit) or
            ``signature`` (the declared signature does not fit the model).
    """
    label = f"{source.name} v{source.version}"
    try:
        import torch

        from gyre_ml.text_model import load_text_model
    except ImportError as exc:
        raise ModelLoadError("format", f"{label}: {TEXT_MODEL_FORMAT} models need torch, which this serving "
                                       f"was installed without (install gyre-serving[text]): {exc}") from None
    torch.set_num_threads(torch_threads(threads))
    try:
        model = load_text_model(data)
    except ValueError as exc:  # TextModelError and UnknownEncoder are ValueErrors
        raise ModelLoadError("deserialise", f"{label}: not a loadable text model: {exc}") from None
    config = model.config
    labels = tuple(str(label) for label in config.labels) if config.task == "classification" else ()
    signature = text_signature(source.signature, labels, config.extra)
    try:
        check_text_signature(signature, labels)
    except ValueError as exc:
        raise ModelLoadError("signature", f"{label}: {exc}") from None
    return TextRuntime(source, signature, model, labels, max_text_bytes,
                       text_inputs=frozenset({signature.inputs[0].name}))


def text_signature(declared: Signature | None, labels: tuple[str, ...], extra: dict[str, str]) -> Signature:
    """The declared signature, completed: the input named in the model's configuration
    (``extra["input_name"]``) or :data:`DEFAULT_TEXT_INPUT`; outputs as a scikit-learn model of the
    same task answers (label BYTES + probabilities FP32, or one FP32 value)."""
    if labels:
        outputs: tuple[TensorSpec, ...] = (TensorSpec(PREDICT_OUTPUT, "BYTES", (-1,)),
                                           TensorSpec(PROBA_OUTPUT, "FP32", (-1, len(labels))))
    else:
        outputs = (TensorSpec(PREDICT_OUTPUT, "FP32", (-1,)),)
    if declared is None or not declared.inputs:
        name = extra.get("input_name") or DEFAULT_TEXT_INPUT
        return Signature((TensorSpec(name, "BYTES", (-1,)),), outputs)
    return declared if declared.outputs else Signature(declared.inputs, outputs)


def check_text_signature(signature: Signature, labels: tuple[str, ...]) -> None:
    """Whether a text model can honour ``signature``.

    Raises:
        ValueError: not exactly one BYTES input of shape ``[-1]`` / ``[-1, 1]``; probabilities from
            a regression model, or a probability width other than the number of labels.
    """
    validate_signature(signature)
    if len(signature.inputs) != 1:
        raise ValueError(f"a text model takes one BYTES input; the signature has {len(signature.inputs)}")
    spec = signature.inputs[0]
    if spec.datatype != "BYTES" or spec.shape not in ((-1,), (-1, 1)):
        raise ValueError(f"the text input {spec.describe()} must be BYTES [-1]")
    for out in signature.outputs:
        if output_kind(out) is OutputKind.PROBA:
            if not labels:
                raise ValueError(f"output {out.describe()}: a regression model has no probabilities")
            if out.shape[1] >= 0 and out.shape[1] != len(labels):
                raise ValueError(f"output {out.describe()} has {out.shape[1]} columns but the model has "
                                 f"{len(labels)} labels")
