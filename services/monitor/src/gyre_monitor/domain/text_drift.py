"""Drift of text features: a domain classifier on sentence embeddings, plus the descriptors.

Embedding drift follows Evidently 0.7's default for embeddings (``EmbeddingsDriftMetric`` with
``embedding_drift_methods.model``), reproduced on arrays:

1. reference embeddings (label 1) and current embeddings (label 0) are stacked, reference first;
2. ``train_test_split(test_size=0.5, shuffle=True, random_state=42)`` halves them;
3. ``SGDClassifier(loss="log_loss", random_state=42)`` learns to tell them apart on one half;
4. its ROC AUC on the other half is the drift score: the closer to 0.5, the less the classifier can
   tell the windows apart;
5. drift when the AUC is above the threshold: 0.55 when the reference holds at least 1,000
   embeddings; with fewer, the 95th percentile of the AUC of 100 random scorings of the held-out
   labels (Evidently's ``bootstrap``, seeds 0..99), so a small reference does not alarm by chance.

Same embeddings in, same split, same classifier, same seeds: the decision equals Evidently's
(``tests/unit/monitor/test_monitor_text_drift.py`` checks it). Inputs are bounded by the profile's
sample (at most 5,000 reference rows) and the window's sample (``max_current`` texts embedded).

Descriptors (length, oov_share, empty) are ordinary numerical/categorical references, so
:mod:`gyre_monitor.domain.drift` tests them with its usual tests.

Served values of a text feature are the text itself, or, when serving is told not to ship texts
(``GYRE_SERVING_EVENT_TEXT=hash``), ``sha256:<64 hex digits>:<length in characters>`` in its place
(inputs ``<name>_length`` beside a missing ``<name>`` are read the same way): then only ``length``
and ``empty`` (length 0) can be tested; embedding and oov_share drift are skipped and reported as
such. A real text of exactly that shape would be read as a digest; none is expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

EMBEDDING_DRIFT_THRESHOLD = 0.55
"""ROC AUC above which embeddings drifted (Evidently's ``model`` method default)."""

BOOTSTRAP_BELOW_ROWS = 1000
"""With fewer reference embeddings, the threshold is bootstrapped (Evidently's default switch)."""

BOOTSTRAP_QUANTILE = 0.95
"""Quantile of random AUCs used as the bootstrapped threshold (Evidently's ``quantile_probability``)."""

_BOOTSTRAP_ROUNDS = 100
_SEED = 42  # Evidently's split and classifier seed

Embedder = Callable[[str, Sequence[str]], npt.NDArray[Any]]
"""Embeds texts with the named encoder: ``(encoder, texts) -> (len(texts), dimensions)`` floats.
Blocking (torch); the monitor calls it from a worker thread."""



@dataclass(frozen=True)
class TextDigest:
    """A served text known only by its length in characters (serving shipped its sha256 and length)."""

    length: int


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}:(\d{1,12})")


def served_text(inputs: Mapping[str, object], name: str) -> object:
    """The value of text feature ``name`` in one prediction's inputs: the text; a :class:`TextDigest`
    for ``sha256:<hex>:<length>`` (or when only ``<name>_length``, a non-negative integer, came);
    None when nothing did."""
    value = inputs.get(name)
    if isinstance(value, str) and value.startswith("sha256:"):
        match = _DIGEST.fullmatch(value)
        if match is not None:
            return TextDigest(int(match.group(1)))
    if value is None:
        length = inputs.get(f"{name}_length")
        if isinstance(length, int | float) and not isinstance(length, bool) and length >= 0 and length == int(length):
            return TextDigest(int(length))
    return value


@dataclass(frozen=True)
class TextValues:
    """The served values of one text feature in one window, split by what they allow.

    Attributes:
        texts: values that arrived as text.
        digest_lengths: lengths (characters) of values that arrived as :class:`TextDigest`.
    """

    texts: list[str]
    digest_lengths: list[int]

    @property
    def lengths(self) -> list[float]:
        """Length in characters of every value, text or digest."""
        return [float(len(t)) for t in self.texts] + [float(n) for n in self.digest_lengths]


def text_values(raw: Sequence[object]) -> TextValues:
    """Split served values into texts and digests; None is missing, other values their ``str``."""
    texts: list[str] = []
    lengths: list[int] = []
    for value in raw:
        if value is None:
            continue
        if isinstance(value, TextDigest):
            lengths.append(value.length)
        else:
            texts.append(value if isinstance(value, str) else str(value))
    return TextValues(texts, lengths)


@dataclass(frozen=True)
class EmbeddingDrift:
    """Result of the domain classifier.

    Attributes:
        roc_auc: ROC AUC of the classifier on the held-out half, in [0, 1].
        threshold: the threshold applied (0.55, or the bootstrapped quantile).
        drifted: ``roc_auc > threshold``.
        reference_rows, current_rows: embeddings compared.
    """

    roc_auc: float
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int


def embedding_drift(reference: npt.NDArray[Any], current: npt.NDArray[Any], *,
                    threshold: float = EMBEDDING_DRIFT_THRESHOLD,
                    bootstrap: bool | None = None) -> EmbeddingDrift:
    """Evidently's ``model`` embedding drift of ``current`` against ``reference`` (module docstring).

    Args:
        reference, current: embeddings, one row each, the same width; at least 2 rows in all.
        threshold: ROC AUC threshold when not bootstrapping.
        bootstrap: bootstrap the threshold; None decides as Evidently does (fewer than 1,000
            reference rows).

    Raises:
        ValueError: different widths, or too few rows to split into two halves holding both labels.
    """
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    if reference.ndim != 2 or current.ndim != 2 or reference.shape[1] != current.shape[1]:
        raise ValueError(f"embeddings of different shapes: {reference.shape} and {current.shape}")
    if bootstrap is None:
        bootstrap = reference.shape[0] < BOOTSTRAP_BELOW_ROWS
    # No cast: Evidently fits on the frames' dtype (float32 embeddings stay float32), and so must we to agree.
    data = np.concatenate([reference, current])
    labels = np.concatenate([np.ones(reference.shape[0], dtype=np.int64), np.zeros(current.shape[0], dtype=np.int64)])
    x_train, x_test, y_train, y_test = train_test_split(data, labels, test_size=0.5, random_state=_SEED,
                                                        shuffle=True)
    if np.unique(y_train).size < 2 or np.unique(y_test).size < 2:
        raise ValueError("too few embeddings: both halves need reference and current rows")
    classifier = SGDClassifier(loss="log_loss", random_state=_SEED)
    classifier.fit(x_train, y_train)
    roc_auc = float(roc_auc_score(y_test, classifier.predict_proba(x_test)[:, 1]))
    if bootstrap:
        # Evidently seeds the global generator with 0..99; RandomState(i) draws the same numbers.
        random_aucs = [roc_auc_score(y_test, np.random.RandomState(i).rand(len(y_test)))
                       for i in range(_BOOTSTRAP_ROUNDS)]
        threshold = float(np.percentile(random_aucs, 100 * BOOTSTRAP_QUANTILE))
    return EmbeddingDrift(roc_auc, threshold, roc_auc > threshold, int(reference.shape[0]), int(current.shape[0]))


def sample_texts(texts: Sequence[str], limit: int, seed: int = 0) -> list[str]:
    """At most ``limit`` of ``texts``, a seeded sample in their order when there are more (bounds the
    embedding cost of a window; deterministic, so a replayed window gives the same result)."""
    if len(texts) <= limit:
        return list(texts)
    picks = np.sort(np.random.default_rng(seed).choice(len(texts), size=limit, replace=False))
    return [texts[i] for i in picks]
