"""Text models (gyre_ml): embeddings as sentence-transformers computes them, training from cached
states equal to the full forward pass, and a safetensors artifact that rebuilds the same model."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from gyre_ml.encoders import DEFAULT_ENCODER, encoder_path, shared_encoder
from gyre_ml.text_model import (
    TextModelConfig,
    TextModelError,
    load_text_model,
    new_text_model,
    read_metadata,
    save_text_model,
)

TEXTS = ["the service answered in time", "a cat sat on the mat", "", "Drift is a change in the data",
         "très bien, merci", "x " * 300]


def test_embeddings_equal_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(encoder_path(DEFAULT_ENCODER)), device="cpu")
    expected = reference.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=False)
    ours = shared_encoder().embed(TEXTS, max_length=reference.max_seq_length)
    assert ours.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("unfrozen", [0, 2])
def test_cached_forward_equals_the_full_forward(unfrozen: int) -> None:
    model = new_text_model(TextModelConfig(task="classification", labels=("a", "b", "c"),
                                           layers_unfrozen=unfrozen, hidden_units=16), seed=3)
    model.eval()
    (states, mask), = model.cache_inputs(TEXTS)
    tokens = model.tokenize(TEXTS)
    with torch.inference_mode():
        np.testing.assert_allclose(model.forward_cached(states, mask).numpy(), model(**tokens).numpy(), atol=1e-5)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(name.startswith(("head.", *(f"encoder.encoder.layer.{i}." for i in range(6 - unfrozen, 6))))
               for name in trainable)


def test_artifact_rebuilds_the_same_model_and_holds_only_trained_tensors() -> None:
    model = new_text_model(TextModelConfig(task="classification", labels=("neg", "pos"), layers_unfrozen=1), seed=7)
    with torch.no_grad():  # as if trained: the unfrozen layer differs from the package's weights
        model.trainable_layers()[0].output.dense.bias.add_(0.05)
    data = save_text_model(model)
    metadata = read_metadata(data)
    assert metadata["gyre.format"] == "gyre-text-model/1"
    assert json.loads(metadata["gyre.config"])["labels"] == ["neg", "pos"]
    loaded = load_text_model(data)
    np.testing.assert_allclose(loaded.predict(TEXTS), model.predict(TEXTS), atol=1e-6)
    assert set(loaded.trained_state()) == set(model.trained_state())
    assert len(data) < 10 << 20  # the head and one layer, not the whole encoder (~90 MB)


def test_same_seed_same_head() -> None:
    config = TextModelConfig(task="regression", hidden_units=8)
    first, second = new_text_model(config, seed=11), new_text_model(config, seed=11)
    for name, tensor in first.trained_state().items():
        assert torch.equal(tensor, second.trained_state()[name])


def _with_metadata(data: bytes, **changes: str) -> bytes:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    header["__metadata__"].update(changes)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + length:]


def test_bad_artifacts_are_refused_with_a_reason() -> None:
    model = new_text_model(TextModelConfig(task="classification", labels=("a", "b")), seed=1)
    data = save_text_model(model)
    config = json.loads(read_metadata(data)["gyre.config"])
    with pytest.raises(TextModelError, match="not a safetensors"):
        load_text_model(b"\x80\x04pickle")
    with pytest.raises(TextModelError, match="not a Gyre text model"):
        load_text_model(_with_metadata(data, **{"gyre.format": "other"}))
    with pytest.raises(TextModelError, match="other all-MiniLM-L6-v2 weights"):
        load_text_model(_with_metadata(data, **{"gyre.config": json.dumps({**config, "encoder_sha256": "0" * 64})}))
    with pytest.raises(TextModelError, match="do not match the architecture"):
        load_text_model(_with_metadata(data, **{"gyre.config": json.dumps({**config, "hidden_units": 4})}))
    with pytest.raises(TextModelError, match="at least two labels"):
        TextModelConfig(task="classification", labels=("only",))
