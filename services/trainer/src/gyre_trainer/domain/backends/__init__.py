"""Training backends behind one interface (:class:`~.base.TrainerBackend`), by name.

* ``sklearn`` (:mod:`.sklearn`): scikit-learn pipelines, AutoML over estimator families; skops.
* ``torch-text`` (:mod:`.torch_text`): a pretrained text encoder (``gyre_ml``) with a new head,
  fine-tuned on cached encoder states; safetensors. Imported only when used: torch is heavy.

Adding a framework: subclass :class:`~.base.TrainerBackend` in a new module and add it to
:data:`BACKENDS`, :func:`backend_for` and :func:`backend_for_format`.
"""

from __future__ import annotations

from gyre_trainer.domain.backends.base import TrainerBackend
from gyre_trainer.domain.backends.options import TextOptions

SKLEARN = "sklearn"
TORCH_TEXT = "torch-text"
BACKENDS = (SKLEARN, TORCH_TEXT)
"""Names a TrainingRequest's ``backend`` may take ("" picks one, see the runner)."""

TEXT_HEAD_FAMILY = "text_head"
"""The torch-text backend's one model family (an encoder with a head); the only name its requests
may list in ``estimator_families``."""

__all__ = ["BACKENDS", "SKLEARN", "TEXT_HEAD_FAMILY", "TORCH_TEXT", "TextOptions", "TrainerBackend",
           "backend_for", "backend_for_format"]


def backend_for(name: str, *, text: TextOptions | None = None) -> TrainerBackend:
    """The backend called ``name`` ("" is sklearn); ``text`` configures torch-text.

    Raises:
        ValueError: an unknown name.
    """
    if name in ("", SKLEARN):
        from gyre_trainer.domain.backends.sklearn import SklearnBackend

        return SklearnBackend()
    if name == TORCH_TEXT:
        from gyre_trainer.domain.backends.torch_text import TorchTextBackend

        return TorchTextBackend(text or TextOptions())
    raise ValueError(f"unknown training backend {name!r}; known: {', '.join(BACKENDS)}")


def backend_for_format(model_format: str, *, text: TextOptions | None = None) -> TrainerBackend:
    """The backend that loads artifacts of ``model_format`` (a champion to re-score); "" and
    ``skops`` are scikit-learn's (versions registered before formats were recorded)."""
    if model_format == "safetensors-text":  # gyre_ml.text_model.MODEL_FORMAT, without importing torch
        return backend_for(TORCH_TEXT, text=text)
    return backend_for(SKLEARN)
