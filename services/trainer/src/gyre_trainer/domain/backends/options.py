"""Settings of the torch-text backend that are not hyperparameters (plain values, no torch import)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextOptions:
    """How the torch-text backend trains (from the trainer's settings and the request).

    Attributes:
        text_feature: the feature holding the text ("": the training set's only text feature).
        encoder: the pretrained encoder's name (:data:`gyre_ml.encoders.ENCODERS`).
        max_length: texts are truncated at this many tokens (training and serving alike).
        batch_size: texts per optimisation step.
        validation_fraction: share of the development rows each trial is validated on, in (0, 1)
            (stratified for classification, seeded); the final model trains on all of them.
        max_epochs: the largest number of epochs the search tries (it searches 1..max_epochs).
        threads: torch intra-op threads while training; 0 leaves torch's default. Results are
            reproducible for a seed at a fixed thread count.
    """

    text_feature: str = ""
    encoder: str = "all-MiniLM-L6-v2"
    max_length: int = 64
    batch_size: int = 32
    validation_fraction: float = 0.2
    max_epochs: int = 6
    threads: int = 0
