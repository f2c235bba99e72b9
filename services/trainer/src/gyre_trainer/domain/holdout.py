"""The holdout: which rows the search never sees and every version of a model is judged on.

The split is a rule on entity ids, not a shuffle of one training set, so it is the same for every
retrain of a model whatever window it is trained on:

* an entity's bucket is the first 8 bytes of ``sha256("gyre.holdout.v1" 0x1f entity_id)`` (big
  endian) modulo :data:`BUCKETS`; an entity is held out when its bucket is below
  ``round(fraction * BUCKETS)`` (e.g. fraction 0.2: buckets 0..1999);
* every row of a held-out entity is held out, in every window, so no version of any model ever
  trains on a holdout entity: scoring an older version (the production model) on a newer holdout
  is a fair, unseen test;
* :func:`holdout_id` names the rule, the fraction, the feature view and the label (not the data):
  versions with the same holdout id were measured on the same definition of held-out rows, which
  is what the registry's promotion policy compares (``HoldoutEvaluation.holdout_id``).

The rows' keys are also hashed (:attr:`HoldoutSplit.rows_digest`, tag ``gyre.holdout.digest``), so
two jobs on the same window can be shown to have used exactly the same rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from gyre_trainer.domain.dataset import DatasetError, TrainingSet

HOLDOUT_RULE = "gyre.holdout.entity-hash.v1"
"""Name of the split rule (part of :func:`holdout_id`; change it if the rule ever changes)."""

BUCKETS = 10_000
"""Entity ids are hashed into this many buckets."""

_SALT = b"gyre.holdout.v1\x1f"


def entity_bucket(entity_id: str) -> int:
    """The holdout bucket of one entity id, in ``[0, BUCKETS)``."""
    digest = hashlib.sha256(_SALT + entity_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def holdout_threshold(fraction: float) -> int:
    """Buckets below this are held out. Raises DatasetError for a fraction outside (0, 1)."""
    threshold = round(fraction * BUCKETS)
    if not 0 < threshold < BUCKETS:
        raise DatasetError(f"holdout fraction {fraction} must be in (0, 1) (at least 1/{BUCKETS})")
    return threshold


def holdout_id(*, feature_view: str, label: str, fraction: float) -> str:
    """Lowercase hex SHA-256 naming the holdout definition: rule, threshold, feature view, label."""
    spec = {"rule": HOLDOUT_RULE, "buckets": BUCKETS, "threshold": holdout_threshold(fraction),
            "feature_view": feature_view, "label": label}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class HoldoutSplit:
    """The development rows (searched on) and the holdout rows (judged on).

    Attributes:
        development: rows the search cross-validates and the best model is refitted on.
        holdout: rows of held-out entities, canonical order.
        fraction: share of the entity-id buckets held out, in (0, 1).
        holdout_id: :func:`holdout_id` of the definition (what the registry compares).
        rows_digest: SHA-256 of the holdout rows' (entity_id, event_time) keys, canonical order.
    """

    development: TrainingSet
    holdout: TrainingSet
    fraction: float
    holdout_id: str
    rows_digest: str


def split_holdout(data: TrainingSet, *, fraction: float, feature_view: str, label: str,
                  classification: bool) -> HoldoutSplit:
    """Split the canonical form of ``data`` by the entity-hash rule.

    Args:
        data: the training set, in any row order.
        fraction: share of entity buckets held out, in (0, 1).
        feature_view, label: what the rows are (part of the holdout id).
        classification: also require every class to keep two development rows (the search's
            stratified folds need them).

    Raises:
        DatasetError: a side would be empty (too few entities), or a class keeps fewer than two
            development rows.
    """
    threshold = holdout_threshold(fraction)
    canon = data.canonical()
    held = np.fromiter((entity_bucket(str(e)) < threshold for e in canon.entity_ids),
                       dtype=bool, count=canon.rows)
    if held.all() or not held.any():
        raise DatasetError(f"{canon.rows} rows of {canon.entity_ids.nunique()} entities leave the "
                           f"{'development' if held.all() else 'holdout'} side empty with holdout fraction "
                           f"{fraction}: more entities are needed")
    development = canon.take(np.flatnonzero(~held))
    holdout = canon.take(np.flatnonzero(held))
    if classification:
        counts = development.label.value_counts()
        missing = sorted(set(canon.label.unique()) - set(counts.index), key=repr)
        rare = [v for v in counts.index if counts[v] < 2] + missing
        if rare:
            raise DatasetError(f"label class(es) {', '.join(repr(v) for v in rare)} have fewer than 2 "
                               "development rows once the holdout entities are set aside")
    return HoldoutSplit(
        development=development,
        holdout=holdout,
        fraction=fraction,
        holdout_id=holdout_id(feature_view=feature_view, label=label, fraction=fraction),
        rows_digest=_keys_digest(holdout),
    )


def _keys_digest(data: TrainingSet) -> str:
    digest = hashlib.sha256()
    for entity, time in zip(data.entity_ids.astype(str), data.event_times, strict=True):
        digest.update(f"{entity}\x1f{time.isoformat()}\x1e".encode())
    return digest.hexdigest()
