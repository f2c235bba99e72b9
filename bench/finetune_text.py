"""Fine-tuning a text classifier on a CPU: what caching the frozen encoder buys (issue #11).

The trainer's torch-text backend (``gyre_trainer.domain.backends.torch_text``) trains
all-MiniLM-L6-v2 + a linear head on ~2,000 generated texts of two topics, three ways:

* ``frozen``: the whole encoder frozen; its token states are computed once per text (the cache),
  then every epoch runs only pooling + the head;
* ``last 1`` / ``last 2``: the last one or two encoder layers fine-tuned; the states below them
  are cached, every epoch runs those layers (forward and backward) and the head;

against the peer, the same frozen-encoder training written naively: the full encoder forward pass
on every batch of every epoch (no cache), same batches, epochs, optimiser and seed.

Reported: the one-off cache time, seconds per epoch (mean over epochs 2.., from the backend's
per-epoch timestamps), total wall time, and the ratios naive / cached. Same machine, same run,
torch's default threads (the machine's cores).

Usage: ``.venv/bin/python bench/finetune_text.py [--quick] [--rows N] [--epochs E]``. ``--quick``:
400 texts, 2 epochs. Exits non-zero only when it could not run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch
from torch import nn

from gyre_ml.text_model import TextModelConfig, new_text_model
from gyre_trainer.domain.backends.options import TextOptions
from gyre_trainer.domain.backends.torch_text import TorchTextBackend
from gyre_trainer.domain.search import SearchConfig
from gyre_trainer.domain.task import Task
from gyre_trainer.testing import topic_training_set

SEED = 7
LEARNING_RATE = 0.02


def params(layers: int, epochs: int) -> dict[str, object]:
    return {"family": "text_head", "learning_rate": LEARNING_RATE, "epochs": epochs, "layers_unfrozen": layers,
            "dropout": 0.1, "hidden_units": 0}


def cached_run(backend: TorchTextBackend, data_rows: int, layers: int, epochs: int) -> dict[str, float]:
    data = topic_training_set(data_rows, seed=1)
    config = SearchConfig(Task.CLASSIFICATION, ("text_head",), "accuracy", 1, seed=SEED)
    backend.check(data, Task.CLASSIFICATION)
    prepared = backend.prepare(data, config)
    rows = np.arange(data.rows)
    started = time.perf_counter()
    backend._states(prepared, 6 - layers)  # the one-off cache (timed apart)
    cached = time.perf_counter()
    _, history = backend._train(prepared, params(layers, epochs), config, rows, None)
    done = time.perf_counter()
    stamps = [point.at.timestamp() for point in history]
    per_epoch = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else done - cached
    return {"cache_s": cached - started, "epoch_s": per_epoch, "total_s": done - started,
            "loss": history[-1].metrics["train_loss"]}


def naive_run(data_rows: int, epochs: int, options: TextOptions) -> dict[str, float]:
    """The frozen case without a cache: tokenise and run the whole encoder on every batch, every epoch."""
    data = topic_training_set(data_rows, seed=1)
    texts = data.features["review"].tolist()
    classes = sorted(set(data.label))
    targets = torch.tensor([classes.index(v) for v in data.label], dtype=torch.int64)
    model = new_text_model(TextModelConfig(task="classification", labels=tuple(classes), dropout=0.1,
                                           max_length=options.max_length), seed=SEED)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    shuffle = torch.Generator().manual_seed(SEED)
    loss_of = nn.CrossEntropyLoss()
    stamps, started = [], time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(texts), generator=shuffle).tolist()
        for start in range(0, len(order), options.batch_size):
            batch = order[start:start + options.batch_size]
            loss = loss_of(model(**model.tokenize([texts[i] for i in batch])), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        stamps.append(time.perf_counter())
    per_epoch = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else stamps[0] - started
    return {"cache_s": 0.0, "epoch_s": per_epoch, "total_s": stamps[-1] - started, "loss": float(loss.detach())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="400 texts, 2 epochs")
    parser.add_argument("--rows", type=int, default=2000, help="generated texts (default 2000)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per case (default 3)")
    args = parser.parse_args()
    rows, epochs = (400, 2) if args.quick else (args.rows, args.epochs)
    options = TextOptions(max_length=64, batch_size=32, max_epochs=epochs)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), python {platform.python_version()}")
    print(f"data: {rows} generated texts of two topics, max_length {options.max_length}, batch "
          f"{options.batch_size}, {epochs} epochs, linear head, AdamW lr {LEARNING_RATE}\n")
    results: dict[str, dict[str, float]] = {}
    for name, layers in (("frozen (cached)", 0), ("last 1 unfrozen (cached)", 1), ("last 2 unfrozen (cached)", 2)):
        results[name] = cached_run(TorchTextBackend(options), rows, layers, epochs)
    results["frozen, naive (no cache)"] = naive_run(rows, epochs, options)
    print(f"{'case':<28}{'cache s':>9}{'s/epoch':>10}{'total s':>10}{'last loss':>11}")
    for name, r in results.items():
        print(f"{name:<28}{r['cache_s']:>9.2f}{r['epoch_s']:>10.3f}{r['total_s']:>10.2f}{r['loss']:>11.4f}")
    frozen, naive = results["frozen (cached)"], results["frozen, naive (no cache)"]
    print(f"\nfrozen encoder, naive / cached: {naive['epoch_s'] / frozen['epoch_s']:.1f}x per epoch, "
          f"{naive['total_s'] / frozen['total_s']:.1f}x in total ({epochs} epochs, cache included)")
    for name in ("last 1 unfrozen (cached)", "last 2 unfrozen (cached)"):
        print(f"{name}: {results[name]['epoch_s'] / frozen['epoch_s']:.1f}x the frozen epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
