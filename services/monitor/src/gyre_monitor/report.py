"""Evidently's HTML data-drift report of stored predictions against a reference profile (on demand).

Evidently and pandas are imported here only, lazily, so the streaming path never loads them. The
reference frame is rebuilt from the profile: numerical columns are the stored sample; categorical
columns are the stored counts laid out as rows (scaled to the frame's length when the training set
was larger than the sample, so their shares, and hence the test results, stay those of the profile).
Shorter columns are padded with missing values, which Evidently drops per column.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gyre_common.profile import FeatureKind, ReferenceProfile, category_key
from gyre_monitor.store import WindowRow

_MAX_CATEGORICAL_ROWS = 5000


def _reference_columns(profile: ReferenceProfile) -> dict[str, list[object]]:
    numerical = [f.values.size for f in profile.features if f.kind is FeatureKind.NUMERICAL]
    categorical = [min(sum(f.counts.values()), _MAX_CATEGORICAL_ROWS)
                   for f in profile.features if f.kind is FeatureKind.CATEGORICAL]
    length = max(numerical + categorical, default=0)
    columns: dict[str, list[object]] = {}
    for feature in profile.features:
        if feature.kind is FeatureKind.TEXT:
            continue
        if feature.kind is FeatureKind.NUMERICAL:
            values: list[object] = feature.values.tolist()
        else:
            total = sum(feature.counts.values())
            scale = min(1.0, _MAX_CATEGORICAL_ROWS / total)
            values = []
            for key, count in sorted(feature.counts.items()):
                values.extend([key] * max(1, round(count * scale)) if count else [])
        columns[feature.name] = values + [None] * (length - len(values))
    return columns


def render_drift_html(profile: ReferenceProfile, rows: Sequence[WindowRow]) -> str:
    """Evidently ``Report([DataDriftPreset()])`` of ``rows`` against ``profile``, as standalone HTML.

    Blocking and slow (about a second); call it in a worker thread.
    """
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    # Text features are left out: their drift (embeddings, descriptors) is in the JSON report only.
    kinds = {f.name: f.kind for f in profile.features if f.kind is not FeatureKind.TEXT}
    if not kinds:
        return ("<!doctype html><title>Drift report</title><p>This model has text features only; their drift "
                "(embedding and descriptors) is in the JSON report (format=json).</p>")
    current: dict[str, list[object]] = {}
    for name, kind in kinds.items():
        raw = [row.inputs.get(name) for row in rows]
        if kind is FeatureKind.NUMERICAL:
            current[name] = [float(v) if isinstance(v, int | float) and not isinstance(v, str) else np.nan
                             for v in raw]
        else:
            current[name] = [category_key(v) for v in raw]
    definition = DataDefinition(
        numerical_columns=[n for n, k in kinds.items() if k is FeatureKind.NUMERICAL],
        categorical_columns=[n for n, k in kinds.items() if k is FeatureKind.CATEGORICAL],
    )
    reference = pd.DataFrame(_reference_columns(profile))
    for name, kind in kinds.items():
        if kind is FeatureKind.NUMERICAL:
            reference[name] = reference[name].astype("float64")
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(pd.DataFrame(current), data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    return str(snapshot.get_html_str(as_iframe=False))
