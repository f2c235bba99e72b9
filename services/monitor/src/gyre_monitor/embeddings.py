"""The text embedder of embedding drift: ``gyre_ml``'s shared encoders, when the ``text`` extra is installed.

Without it (``pip install gyre-monitor`` alone) the monitor still tests tabular features and text
descriptors; text features' embedding drift is reported as skipped ("not checked: install
gyre-monitor[text]").
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from typing import Any

import numpy.typing as npt

from gyre_monitor.domain.text_drift import Embedder

log = logging.getLogger(__name__)


def _embed(encoder: str, texts: Sequence[str]) -> npt.NDArray[Any]:
    # Imported on first use: torch and the encoder load only when a text feature is tested.
    from gyre_ml.encoders import shared_encoder

    return shared_encoder(encoder).embed(texts)


def text_embedder() -> Embedder | None:
    """The embedder, or None when ``gyre-ml`` or scikit-learn (the ``text`` extra) is not installed."""
    missing = [name for name in ("gyre_ml", "sklearn") if importlib.util.find_spec(name) is None]
    if missing:
        log.info("text features' embedding drift is off (%s not installed): install gyre-monitor[text]",
                 ", ".join(missing))
        return None
    return _embed
