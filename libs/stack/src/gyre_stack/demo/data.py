"""The data of the story: scikit-learn's breast cancer dataset, stamped in time, and how it drifts.

569 patients, 30 float features and the int label ``target``. Row *i* is the event of patient
``patient-<i>`` at :data:`T0` + *i* minutes; traffic replays the rows in seeded orders, and drifted
traffic adds :data:`SHIFT_STD` standard deviations to a few features.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from sklearn.datasets import load_breast_cancer

#: First event time of the dataset (UTC); row i is stamped T0 + i minutes, so 569 rows span ~9.5 h.
T0 = datetime(2025, 1, 1, tzinfo=UTC)

#: Standard deviations added to the drifted features.
SHIFT_STD = 5.0

#: Rows of the feedback batch; its corrected labels are the dataset's true targets.
FEEDBACK_ROWS = 10


@functools.cache
def _dataset() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    bunch = load_breast_cancer()
    return bunch.data, bunch.target, tuple(str(n) for n in bunch.feature_names)


def features() -> np.ndarray:
    """The 569 x 30 feature matrix (float64), one row per patient."""
    return _dataset()[0].copy()


def targets() -> np.ndarray:
    """The 569 labels (int: 0 malignant, 1 benign)."""
    return _dataset()[1].copy()


def feature_names() -> list[str]:
    """The dataset's 30 feature names as Gyre names (lowercase, underscores)."""
    return [re.sub(r"[^a-z0-9]+", "_", n.lower()).strip("_") for n in _dataset()[2]]


def drifted_features(drift_share: float, names: Sequence[str]) -> tuple[str, ...]:
    """The fewest features whose shift makes a window drift at ``drift_share`` (evenly spread)."""
    count = max(1, math.ceil(drift_share * len(names) - 1e-9))
    step = len(names) / count
    return tuple(names[int(i * step)] for i in range(count))


def sample(data: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` rows of ``data`` in a seeded order (every row, repeated if needed)."""
    order = np.random.default_rng(seed).permutation(len(data))
    return data[np.resize(order, count)]


def rfc3339(moment: datetime) -> str:
    """``moment`` in UTC as RFC 3339 with a ``Z`` (the form feature events and the trainer take)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
