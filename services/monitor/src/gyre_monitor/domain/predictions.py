"""A served prediction, as far as drift is concerned."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

Scalar = float | int | str | bool | None
"""A served input value as the monitor stores it (JSON-compatible; None = missing)."""


@dataclass(frozen=True)
class Prediction:
    """One served prediction, as far as drift is concerned.

    Attributes:
        prediction_id: unique id (the dedupe key, with model and version).
        model_name, model_version: who served it.
        served_at: when, aware UTC.
        inputs: input values by feature name.
        shadow: made by a shadow model (not returned to the client).
    """

    prediction_id: str
    model_name: str
    model_version: int
    served_at: datetime
    inputs: Mapping[str, Scalar]
    shadow: bool = False
