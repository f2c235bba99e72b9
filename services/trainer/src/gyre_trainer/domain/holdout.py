"""The fixed holdout: which rows the search never sees and every candidate is judged on.

The split is a function of the canonical training set (see :func:`~.dataset.fingerprint`), the
seed and the fraction only, so anyone holding the same data, seed and fraction (all recorded in
the lineage) gets the same holdout rows, and the new version and the champion are compared on
exactly those rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from gyre_trainer.domain.dataset import DatasetError, TrainingSet


@dataclass(frozen=True)
class HoldoutSplit:
    """The development rows (searched on) and the holdout rows (judged on).

    Attributes:
        development: rows the search cross-validates and the best model is refitted on.
        holdout: rows kept out of the search.
        seed: seed of the split.
        fraction: share of the rows held out, in (0, 1).
        stratified: whether the split kept the label's class proportions.
        holdout_digest: SHA-256 of the holdout rows' (entity_id, event_time) keys, canonical order.
    """

    development: TrainingSet
    holdout: TrainingSet
    seed: int
    fraction: float
    stratified: bool
    holdout_digest: str


def split_holdout(data: TrainingSet, *, seed: int, fraction: float, stratify: bool) -> HoldoutSplit:
    """Split the canonical form of ``data`` into development and holdout rows.

    Args:
        data: the training set, in any row order.
        seed: seed of the shuffle (a non-negative int below 2**32).
        fraction: share of the rows held out, in (0, 1).
        stratify: keep the label's class proportions (classification).

    Raises:
        DatasetError: a class has fewer than two rows (stratification impossible) or either side
            would be empty.
    """
    canon = data.canonical()
    positions = np.arange(canon.rows)
    labels = canon.label.to_numpy() if stratify else None
    if stratify:
        counts = canon.label.value_counts()
        if (counts < 2).any():
            rare = ", ".join(repr(v) for v in counts[counts < 2].index)
            raise DatasetError(f"label class(es) {rare} have fewer than 2 rows: cannot hold out a stratified sample")
    try:
        dev_pos, hold_pos = train_test_split(
            positions, test_size=fraction, random_state=seed % 2**32, shuffle=True, stratify=labels
        )
    except ValueError as exc:
        raise DatasetError(f"cannot split {canon.rows} rows with holdout fraction {fraction}: {exc}") from None
    # Keep both sides in canonical order: the split is a set of rows, not a permutation.
    dev_pos, hold_pos = np.sort(dev_pos), np.sort(hold_pos)
    holdout = canon.take(hold_pos)
    return HoldoutSplit(
        development=canon.take(dev_pos),
        holdout=holdout,
        seed=seed,
        fraction=fraction,
        stratified=stratify,
        holdout_digest=_keys_digest(holdout),
    )


def _keys_digest(data: TrainingSet) -> str:
    digest = hashlib.sha256()
    for entity, time in zip(data.entity_ids.astype(str), data.event_times, strict=True):
        digest.update(f"{entity}\x1f{time.isoformat()}\x1e".encode())
    return digest.hexdigest()
