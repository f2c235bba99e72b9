"""The torch-text backend: transfer learning on a pretrained text encoder (``gyre_ml``).

A model is all-MiniLM-L6-v2 (from its PyPI package, offline) with a new head for classification
(one output per label) or regression (one value), the encoder frozen except its last
``layers_unfrozen`` layers (:class:`gyre_ml.text_model.TextModel`). TPE searches the learning rate
(log-uniform), the epochs, the layers unfrozen (0..2), the dropout and the head's hidden units.

Why it is practical on a CPU: the frozen part of the encoder runs once per text and search, not
once per epoch and trial. The token states below the first trained layer are cached per row
(trimmed to the text's own length) the first time a trial needs that depth; every epoch of every
trial then runs only the unfrozen layers and the head on batches padded to their longest text.

Each trial trains on a seeded, stratified share of the development rows and is validated on the
rest after every epoch: ``train_loss`` and the ``val_*`` metrics of
:func:`gyre_trainer.domain.evaluation.evaluate` form its curve (tracked with step = epoch). The
final model trains the best point on every development row. Regression targets are standardised
for training and the scale folded back into the head's last layer, so the artifact predicts in the
label's units.

Deterministic for a seed: ``torch.manual_seed`` before the head is built and before training (the
dropout masks), a seeded generator for the epoch shuffles, ``torch.use_deterministic_algorithms``,
and one torch training at a time per process (the RNG and those switches are process-wide), at
the thread count of :attr:`TextOptions.threads`.

Artifacts: :func:`gyre_ml.text_model.save_text_model` (safetensors with the configuration in its
metadata, no pickle), registry format ``safetensors-text``.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import torch
from hyperopt import hp
from sklearn.model_selection import train_test_split
from torch import nn

from gyre_common.profile import ReferenceProfile, build_reference_profile
from gyre_ml.encoders import shared_encoder
from gyre_ml.text_model import (
    MODEL_FORMAT,
    TextModel,
    TextModelConfig,
    load_text_model,
    new_text_model,
    save_text_model,
)
from gyre_trainer.domain.backends.base import TrainerBackend
from gyre_trainer.domain.backends.options import TextOptions
from gyre_trainer.domain.dataset import DatasetError, TrainingSet
from gyre_trainer.domain.evaluation import evaluate
from gyre_trainer.domain.search import EpochMetrics, SearchConfig, TrialScore
from gyre_trainer.domain.signature import PREDICT_OUTPUT, PROBA_OUTPUT, Signature, Tensor
from gyre_trainer.domain.task import Task

FAMILY = "text_head"
"""The one model family of this backend (see :data:`gyre_trainer.domain.backends.TEXT_HEAD_FAMILY`)."""

LAYERS_UNFROZEN = (0, 1, 2)
"""Encoder layers (from the top) a trial may fine-tune."""
HIDDEN_UNITS = (0, 64, 256)
"""Widths of the head's hidden layer a trial may use; 0 is a linear head."""
LEARNING_RATES = (1e-3, 1e-1)
"""Bounds of the head's learning rate (log-uniform). The head reads L2-normalised embeddings (norm
1), so it needs larger steps than a network trained from raw features."""
MAX_DROPOUT = 0.5
ENCODER_LR_FACTOR = 0.01
"""Unfrozen encoder layers learn at this fraction of the head's rate (1e-5..1e-3, the usual
fine-tuning range): they start from pretrained weights a head-sized step would wreck."""
WEIGHT_DECAY = 0.01
_CACHE_BATCH = 64

# The torch RNG, the deterministic-algorithms switch and the thread count are process-wide: two
# jobs training at once would draw from each other's dropout masks.
_TORCH_LOCK = threading.Lock()


def texts_of(column: pd.Series) -> list[str]:
    """The column's values as texts; a missing value is the empty text."""
    return ["" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
            for value in column.tolist()]


def labels_of(label: pd.Series) -> pd.Series:
    """Class labels as strings (what the artifact stores and serving answers)."""
    return label.map(str)


class TextPredictor:
    """A text model as the search and the runner use a model: ``predict`` / ``predict_proba`` on a
    frame holding the text column (``input_name``, else the frame's first column) and ``classes_``."""

    def __init__(self, model: TextModel, input_name: str) -> None:
        self.model = model
        self.input_name = input_name
        self.classes_ = np.asarray(model.config.labels, dtype=object)
        self._memo: tuple[int, np.ndarray] | None = None

    def _outputs(self, features: pd.DataFrame) -> np.ndarray:
        # evaluate() asks for predict and predict_proba on the same frame: run the encoder once.
        if self._memo is not None and self._memo[0] == id(features):
            return self._memo[1]
        column = features[self.input_name] if self.input_name in features.columns else features.iloc[:, 0]
        outputs = self.model.predict(texts_of(column))
        self._memo = (id(features), outputs)
        return outputs

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Class probabilities (float32, rows sum to 1), columns in ``classes_`` order."""
        return self._outputs(features)

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """The most probable class (classification) or the value (regression, float64)."""
        outputs = self._outputs(features)
        if self.model.config.task == "classification":
            return self.classes_[outputs.argmax(axis=1)]
        return outputs[:, 0].astype(np.float64)


@dataclass
class _Outputs:
    """Outputs already computed (a validation pass on cached states), for evaluate()."""

    classes_: np.ndarray
    values: np.ndarray
    classification: bool

    def predict_proba(self, features: Any) -> np.ndarray:
        return self.values

    def predict(self, features: Any) -> np.ndarray:
        if self.classification:
            return self.classes_[self.values.argmax(axis=1)]
        return self.values[:, 0].astype(np.float64)


@dataclass
class _Prepared:
    """What the trials of one search share."""

    texts: list[str]
    label: pd.Series  # strings for classification, floats for regression
    targets: torch.Tensor  # class indices (int64) or standardised values (float32)
    classes: tuple[str, ...]
    train_rows: np.ndarray
    valid_rows: np.ndarray
    mean: float = 0.0
    std: float = 1.0
    states: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # per encoder depth, per row


@contextlib.contextmanager
def _deterministic(threads: int) -> Iterator[None]:
    with _TORCH_LOCK:
        previous, previous_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
        torch.use_deterministic_algorithms(True)
        if threads:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous)
            torch.set_num_threads(previous_threads)


def collate(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row token states ``[length, hidden]`` as one batch padded to its longest row, and the
    attention mask (1 where a token is)."""
    lengths = torch.tensor([row.shape[0] for row in rows])
    states = nn.utils.rnn.pad_sequence(list(rows), batch_first=True)
    mask = (torch.arange(states.shape[1])[None, :] < lengths[:, None]).to(torch.int64)
    return states, mask


class TorchTextBackend(TrainerBackend):
    """Fine-tunes a pretrained text encoder with a new head (see the module docstring)."""

    name = "torch-text"
    model_format = MODEL_FORMAT

    def __init__(self, options: TextOptions) -> None:
        self.options = options
        self.text_feature = options.text_feature

    # -- the search ---------------------------------------------------------------------------

    def check(self, data: TrainingSet, task: Task) -> None:
        """Fix the text feature: the one asked for, else the only text (string) feature.

        Raises:
            DatasetError: the feature is missing or not text, or there is no single text feature.
        """
        texts = [name for name in data.feature_names if _is_text(data.features[name])]
        if self.options.text_feature:
            if self.options.text_feature not in data.feature_names:
                raise DatasetError(f"text_feature {self.options.text_feature!r} is not a feature of the training set "
                                   f"(features: {', '.join(data.feature_names)})")
            if self.options.text_feature not in texts:
                raise DatasetError(f"text_feature {self.options.text_feature!r} does not hold text")
            self.text_feature = self.options.text_feature
            return
        if len(texts) != 1:
            raise DatasetError(f"the torch-text backend needs text_feature: the training set has "
                               f"{len(texts)} text features ({', '.join(texts) or 'none'})")
        self.text_feature = texts[0]

    def families(self, task: Task, requested: Sequence[str]) -> tuple[str, ...]:
        unknown = [name for name in requested if name != FAMILY]
        if unknown:
            raise DatasetError(f"unknown families {unknown} for the torch-text backend; known: {FAMILY}")
        return (FAMILY,)

    def search_space(self, config: SearchConfig) -> Any:
        p = f"torch_text.{config.task.value}"
        return {
            "family": FAMILY,
            "learning_rate": hp.loguniform(f"{p}.learning_rate", math.log(LEARNING_RATES[0]),
                                           math.log(LEARNING_RATES[1])),
            "epochs": hp.quniform(f"{p}.epochs", 1, max(1, self.options.max_epochs), 1),
            "layers_unfrozen": hp.choice(f"{p}.layers_unfrozen", list(LAYERS_UNFROZEN)),
            "dropout": hp.uniform(f"{p}.dropout", 0.0, MAX_DROPOUT),
            "hidden_units": hp.choice(f"{p}.hidden_units", list(HIDDEN_UNITS)),
        }

    def normalise(self, point: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "family": str(point.get("family", FAMILY)),
            "learning_rate": float(point["learning_rate"]),
            "epochs": max(1, round(float(point["epochs"]))),
            "layers_unfrozen": int(point["layers_unfrozen"]),
            "dropout": float(point["dropout"]),
            "hidden_units": int(point["hidden_units"]),
        }

    def prepare(self, development: TrainingSet, config: SearchConfig) -> _Prepared:
        """Texts, targets and the seeded (stratified) train/validation split of the development rows.

        Raises:
            DatasetError: too few rows (or rows of a class) to set some aside for validation.
        """
        if not self.text_feature:
            self.check(development, config.task)
        texts = texts_of(development.features[self.text_feature])
        positions = np.arange(development.rows)
        classification = config.task is Task.CLASSIFICATION
        if classification:
            label = labels_of(development.label)
            classes = tuple(sorted(label.unique()))
            if len(classes) < 2:
                raise DatasetError("classification needs at least two label classes")
            index = {name: i for i, name in enumerate(classes)}
            targets = torch.tensor([index[v] for v in label], dtype=torch.int64)
        else:
            label = development.label.astype("float64")
            classes = ()
            targets = torch.tensor(label.to_numpy(), dtype=torch.float32)
        try:
            train_rows, valid_rows = train_test_split(
                positions, test_size=self.options.validation_fraction, random_state=config.seed % 2**32,
                stratify=label.to_numpy() if classification else None)
        except ValueError as exc:
            raise DatasetError(f"cannot set {self.options.validation_fraction:.0%} of {development.rows} development "
                               f"rows aside for validation: {exc}") from None
        prepared = _Prepared(texts, label.reset_index(drop=True), targets, classes, np.sort(train_rows),
                             np.sort(valid_rows))
        if not classification:
            values = label.to_numpy()[prepared.train_rows]
            prepared.mean = float(values.mean())
            prepared.std = float(values.std()) or 1.0
        return prepared

    def score_trial(self, prepared: Any, params: Mapping[str, Any], config: SearchConfig) -> TrialScore:
        _, history = self._train(prepared, params, config, prepared.train_rows, prepared.valid_rows)
        final = history[-1].metrics
        return TrialScore({name[4:]: value for name, value in final.items() if name.startswith("val_")},
                          tuple(history))

    def fit_final(self, prepared: Any, params: Mapping[str, Any], config: SearchConfig) -> TextPredictor:
        rows = np.sort(np.concatenate([prepared.train_rows, prepared.valid_rows]))
        model, _ = self._train(prepared, params, config, rows, None)
        return TextPredictor(model, self.text_feature)

    # -- training -----------------------------------------------------------------------------

    def _states(self, prepared: _Prepared, depth: int) -> list[torch.Tensor]:
        """Token states after ``depth`` encoder layers, one ``[length, hidden]`` tensor per text,
        computed once per search (the frozen part of every model of this depth)."""
        cached = prepared.states.get(depth)
        if cached is None:
            encoder = shared_encoder(self.options.encoder)
            cached = []
            for start in range(0, len(prepared.texts), _CACHE_BATCH):
                states, mask = encoder.hidden_states(prepared.texts[start:start + _CACHE_BATCH],
                                                     self.options.max_length, depth)
                lengths = mask.sum(dim=1).tolist()
                cached.extend(states[row, :length].clone() for row, length in enumerate(lengths))
            prepared.states[depth] = cached
        return cached

    def _train(self, prepared: _Prepared, params: Mapping[str, Any], config: SearchConfig, rows: np.ndarray,
               valid_rows: np.ndarray | None) -> tuple[TextModel, list[EpochMetrics]]:
        classification = config.task is Task.CLASSIFICATION
        seed = config.seed % 2**31
        with _deterministic(self.options.threads):
            model_config = TextModelConfig(
                task="classification" if classification else "regression", labels=prepared.classes,
                encoder=self.options.encoder, hidden_units=int(params["hidden_units"]),
                dropout=float(params["dropout"]), layers_unfrozen=int(params["layers_unfrozen"]),
                max_length=self.options.max_length, extra={"input": self.text_feature})
            model = new_text_model(model_config, seed=seed)
            states = self._states(prepared, model.split)
            rate = float(params["learning_rate"])
            groups: list[dict[str, Any]] = [{"params": list(model.head.parameters()), "lr": rate}]
            layers = [p for layer in model.trainable_layers() for p in layer.parameters()]
            if layers:
                groups.append({"params": layers, "lr": rate * ENCODER_LR_FACTOR})
            optimizer = torch.optim.AdamW(groups, weight_decay=WEIGHT_DECAY)
            loss_of: nn.Module = nn.CrossEntropyLoss() if classification else nn.MSELoss()
            shuffle = torch.Generator().manual_seed(seed)
            torch.manual_seed(seed)
            history: list[EpochMetrics] = []
            for epoch in range(1, int(params["epochs"]) + 1):
                model.train()
                order = rows[torch.randperm(len(rows), generator=shuffle).numpy()]
                total = 0.0
                for start in range(0, len(order), self.options.batch_size):
                    batch = order[start:start + self.options.batch_size]
                    out = model.forward_cached(*collate([states[i] for i in batch]))
                    target = prepared.targets[batch]
                    if classification:
                        loss = loss_of(out, target)
                    else:
                        loss = loss_of(out[:, 0], (target - prepared.mean) / prepared.std)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(batch)
                metrics = {"train_loss": total / max(1, len(order))}
                if valid_rows is not None:
                    metrics.update(self._validate(model, prepared, states, valid_rows, config.task))
                history.append(EpochMetrics(epoch, metrics, datetime.now(UTC)))
            if not classification:
                # Trained on standardised targets: fold the scale into the last linear layer so the
                # artifact predicts in the label's units (exact: the layer is affine).
                last = model.head[-1]
                assert isinstance(last, nn.Linear)
                with torch.no_grad():
                    last.weight.mul_(prepared.std)
                    last.bias.mul_(prepared.std).add_(prepared.mean)
            model.eval()
        return model, history

    def _validate(self, model: TextModel, prepared: _Prepared, states: list[torch.Tensor], rows: np.ndarray,
                  task: Task) -> dict[str, float]:
        model.eval()
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(rows), _CACHE_BATCH):
                out = model.forward_cached(*collate([states[i] for i in rows[start:start + _CACHE_BATCH]]))
                chunks.append(torch.softmax(out, dim=1) if task is Task.CLASSIFICATION
                              else out * prepared.std + prepared.mean)
        values = torch.cat(chunks).numpy()
        outputs = _Outputs(np.asarray(prepared.classes, dtype=object), values, task is Task.CLASSIFICATION)
        label = prepared.label.iloc[rows].reset_index(drop=True)
        return {f"val_{name}": value for name, value in evaluate(outputs, None, label, task).items()}

    # -- the version --------------------------------------------------------------------------

    def evaluate(self, model: Any, features: pd.DataFrame, label: pd.Series, task: Task) -> dict[str, float]:
        truth = labels_of(label) if task is Task.CLASSIFICATION else label
        return evaluate(model, features, truth, task)

    def serialise(self, model: Any) -> bytes:
        blob = save_text_model(model.model)
        load_text_model(blob)  # what serving will do: refuse to register what it could not load
        return blob

    def load(self, blob: bytes) -> TextPredictor:
        model = load_text_model(blob)
        return TextPredictor(model, model.config.extra.get("input", self.text_feature))

    def input_names(self, data: TrainingSet) -> list[str]:
        return [self.text_feature]

    def signature(self, data: TrainingSet, task: Task, model: Any) -> Signature:
        """One BYTES input (the text, UTF-8); ``predict`` (the label as BYTES, or the value as FP32)
        and, for classifiers, ``proba`` (FP32, one column per class in ``classes`` order)."""
        inputs = (Tensor(self.text_feature, "BYTES", (-1,)),)
        if task is Task.REGRESSION:
            return Signature(inputs, (Tensor(PREDICT_OUTPUT, "FP32", (-1,)),))
        labels = tuple(model.model.config.labels)
        return Signature(inputs, (Tensor(PREDICT_OUTPUT, "BYTES", (-1,)),
                                  Tensor(PROBA_OUTPUT, "FP32", (-1, len(labels)))), labels)

    def reference_profile(self, inputs: pd.DataFrame, *, model_name: str, dataset_fingerprint: str,
                          max_values: int, seed: int) -> ReferenceProfile:
        return build_reference_profile(inputs, model_name=model_name, model_version=0,
                                       dataset_fingerprint=dataset_fingerprint, max_values=max_values, seed=seed,
                                       text=[self.text_feature], encoder=self.options.encoder)

    def describe(self, params: Mapping[str, Any]) -> str:
        head = f"{params['hidden_units']}-unit head" if params["hidden_units"] else "linear head"
        return f"{self.options.encoder} + {head}, {params['layers_unfrozen']} layer(s) unfrozen"

    def model_tags(self, model: Any) -> dict[str, str]:
        config: TextModelConfig = model.model.config
        return {"gyre.text_feature": self.text_feature, "gyre.encoder": config.encoder,
                "gyre.encoder.sha256": config.encoder_sha256, "gyre.text.max_length": str(config.max_length)}


def _is_text(column: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return False
    present = [value for value in column.tolist() if value is not None and not
               (isinstance(value, float) and math.isnan(value))]
    return bool(present) and all(isinstance(value, str) for value in present)
