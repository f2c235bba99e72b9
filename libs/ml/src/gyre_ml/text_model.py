"""Text models: a pretrained encoder with a small head, and their safe artifact format.

Architecture: the encoder's token states are mean-pooled and L2-normalised (the sentence
embedding), then a head (dropout + linear, or dropout + linear + ReLU + dropout + linear) gives
class logits or one regression value. The encoder is frozen except, optionally, its last
``layers_unfrozen`` transformer layers.

Why training is practical on a CPU: the frozen part runs once per text. :meth:`TextModel.cache_inputs`
computes the token states below the first trainable layer once, and every epoch runs only the
unfrozen layers and the head on them (:meth:`TextModel.forward_cached`). Inference runs the whole
encoder, whose unfrozen layers are the fine-tuned ones (they are the encoder's own modules).

Artifact (:func:`save_text_model` / :func:`load_text_model`): one safetensors file holding only
what training changed (the head, and the unfrozen layers), with the configuration in the file's
metadata. No pickle anywhere: the architecture is this module's code plus that configuration, the
base weights come from the encoder's package and are checked against the sha256 recorded at
training time.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from gyre_ml.encoders import (
    DEFAULT_ENCODER,
    Encoder,
    additive_mask,
    encoder_fingerprint,
    load_encoder,
    normalised_mean,
)

FORMAT = "gyre-text-model/1"
"""Value of the ``gyre.format`` metadata key of a text-model artifact."""
MODEL_FORMAT = "safetensors-text"
"""The registry's ``model_format`` for these artifacts (beside ``skops`` for scikit-learn)."""

Task = Literal["classification", "regression"]


class TextModelError(ValueError):
    """An artifact or a configuration that cannot make a text model (the message says why)."""


@dataclass(frozen=True)
class TextModelConfig:
    """Everything that, with the encoder's package, rebuilds a text model.

    Attributes:
        task: ``classification`` (one output per label) or ``regression`` (one output).
        labels: the classes in output order, as strings (classification only).
        encoder: name of the pretrained encoder (:data:`gyre_ml.encoders.ENCODERS`).
        encoder_sha256: fingerprint of its weights file, checked when loading.
        hidden_units: width of the head's hidden layer; 0 for a linear head.
        dropout: dropout probability before each linear layer of the head (training only).
        layers_unfrozen: how many of the encoder's last transformer layers are trained.
        max_length: texts are truncated at this many tokens.
    """

    task: Task
    labels: tuple[str, ...] = ()
    encoder: str = DEFAULT_ENCODER
    encoder_sha256: str = ""
    hidden_units: int = 0
    dropout: float = 0.1
    layers_unfrozen: int = 0
    max_length: int = 128
    extra: dict[str, str] = field(default_factory=dict)
    """Free-form string metadata (e.g. input and output names of the served signature)."""

    def __post_init__(self) -> None:
        if self.task not in ("classification", "regression"):
            raise TextModelError(f"task must be classification or regression, not {self.task!r}")
        if self.task == "classification" and len(self.labels) < 2:
            raise TextModelError("a classification model needs at least two labels")
        if self.task == "regression" and self.labels:
            raise TextModelError("a regression model has no labels")
        if not 0 <= self.dropout < 1:
            raise TextModelError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.hidden_units < 0 or self.layers_unfrozen < 0 or self.max_length < 1:
            raise TextModelError("hidden_units and layers_unfrozen must be >= 0, max_length >= 1")

    @property
    def outputs(self) -> int:
        return len(self.labels) if self.task == "classification" else 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TextModelConfig:
        try:
            data = json.loads(text)
            data["labels"] = tuple(data.get("labels", ()))
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise TextModelError(f"invalid text-model configuration: {exc}") from exc


def build_head(config: TextModelConfig, width: int) -> nn.Sequential:
    if config.hidden_units:
        return nn.Sequential(nn.Dropout(config.dropout), nn.Linear(width, config.hidden_units), nn.ReLU(),
                             nn.Dropout(config.dropout), nn.Linear(config.hidden_units, config.outputs))
    return nn.Sequential(nn.Dropout(config.dropout), nn.Linear(width, config.outputs))


class TextModel(nn.Module):
    """Encoder + head (see the module docstring)."""

    def __init__(self, config: TextModelConfig, encoder: Encoder) -> None:
        super().__init__()
        if config.layers_unfrozen > encoder.num_layers:
            raise TextModelError(f"layers_unfrozen={config.layers_unfrozen} but the encoder has "
                                 f"{encoder.num_layers} layers")
        self.config = config
        self.tokenizer = encoder.tokenizer
        self.encoder = encoder.model
        self.split = encoder.num_layers - config.layers_unfrozen
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(False)
        for layer in self.trainable_layers():
            for parameter in layer.parameters():
                parameter.requires_grad_(True)
        self.head = build_head(config, encoder.hidden_size)

    def trainable_layers(self) -> list[nn.Module]:
        layers: nn.ModuleList = self.encoder.encoder.layer  # type: ignore[union-attr,assignment]
        return list(layers[self.split:])

    def train(self, mode: bool = True) -> TextModel:
        super().train(mode)
        self.encoder.eval()  # the frozen part never uses dropout; unfrozen layers follow `mode`
        for layer in self.trainable_layers():
            layer.train(mode)
        return self

    def cache_inputs(self, texts: Sequence[str], batch_size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Token states below the first trained layer and attention masks, per batch of texts:
        what every epoch starts from (computed once, without gradients)."""
        batches = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenize(texts[start:start + batch_size])
            with torch.inference_mode():
                out = self.encoder(**tokens, output_hidden_states=True)
            batches.append((out.hidden_states[self.split].clone(), tokens["attention_mask"]))
        return batches

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.config.max_length,
                                 return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def forward_cached(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Outputs (logits or values) from cached token states: the unfrozen layers, pooling, head."""
        mask = additive_mask(attention_mask, states.dtype)
        for layer in self.trainable_layers():
            result = layer(states, attention_mask=mask)
            states = result[0] if isinstance(result, tuple) else result
        return self.head(normalised_mean(states, attention_mask))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(normalised_mean(states, attention_mask))

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray[Any, Any]:
        """Class probabilities (rows sum to 1) or regression values (one column), float32."""
        self.eval()
        rows = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenize(texts[start:start + batch_size])
            with torch.inference_mode():
                out = self(**tokens)
                if self.config.task == "classification":
                    out = torch.softmax(out, dim=1)
            rows.append(out.numpy())
        if not rows:
            return np.zeros((0, self.config.outputs), dtype=np.float32)
        return np.concatenate(rows).astype(np.float32, copy=False)

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The tensors training changed: the head's and the unfrozen layers' (by state-dict name)."""
        last = self.split + self.config.layers_unfrozen
        names = ["head.", *(f"encoder.encoder.layer.{index}." for index in range(self.split, last))]
        return {key: value.detach().contiguous() for key, value in self.state_dict().items()
                if any(key.startswith(prefix) for prefix in names)}


def new_text_model(config: TextModelConfig, seed: int | None = None) -> TextModel:
    """A text model with a freshly initialised head (from ``seed`` when given) on a fresh encoder;
    the configuration gets the encoder's fingerprint."""
    if not config.encoder_sha256:
        config = TextModelConfig(**{**asdict(config), "labels": config.labels,
                                    "encoder_sha256": encoder_fingerprint(config.encoder)})
    if seed is not None:
        torch.manual_seed(seed)
    return TextModel(config, load_encoder(config.encoder))


def save_text_model(model: TextModel) -> bytes:
    """The artifact bytes: :meth:`TextModel.trained_state` as safetensors, configuration in metadata."""
    return save_tensors(model.trained_state(), metadata={"gyre.format": FORMAT, "gyre.config": model.config.to_json()})


def read_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (its header is JSON after an 8-byte length)."""
    if len(data) < 8:
        raise TextModelError("not a safetensors file: shorter than its header length")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8 or length > 100 << 20:
        raise TextModelError("not a safetensors file: header length out of range")
    try:
        header = json.loads(data[8:8 + length])
    except ValueError as exc:
        raise TextModelError(f"not a safetensors file: {exc}") from exc
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return dict(metadata) if isinstance(metadata, dict) else {}


def load_text_model(data: bytes) -> TextModel:
    """Rebuild a text model from artifact bytes, in eval mode.

    Raises:
        TextModelError: not a Gyre text model, a configuration that does not validate, base weights
            other than the ones it was trained on, or tensors that do not fit the architecture.
        gyre_ml.encoders.UnknownEncoder: the encoder's package is not installed.
    """
    metadata = read_metadata(data)
    if metadata.get("gyre.format") != FORMAT:
        raise TextModelError(f"not a Gyre text model (format {metadata.get('gyre.format')!r}, expected {FORMAT!r})")
    config = TextModelConfig.from_json(metadata.get("gyre.config", ""))
    if config.encoder_sha256 != encoder_fingerprint(config.encoder):
        raise TextModelError(f"the model was trained on other {config.encoder} weights than the installed ones")
    try:
        tensors = load_tensors(data)
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise TextModelError(f"unreadable tensors: {exc}") from exc
    model = TextModel(config, load_encoder(config.encoder))
    expected = model.trained_state()
    if set(tensors) != set(expected):
        missing, unexpected = sorted(set(expected) - set(tensors))[:3], sorted(set(tensors) - set(expected))[:3]
        raise TextModelError(f"tensors do not match the architecture: missing {missing}, unexpected {unexpected}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise TextModelError(f"tensor {name} has shape {tuple(tensor.shape)}, "
                                 f"expected {tuple(expected[name].shape)}")
    model.load_state_dict(tensors, strict=False)
    model.eval()
    return model
