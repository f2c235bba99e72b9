"""Loading model versions from a real local artifact store: verified, skops-only, trusted types only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

from gyre_common.artifacts import LocalArtifactStore
from gyre_serving.domain.errors import ModelLoadError
from gyre_serving.domain.model import ModelSource
from gyre_serving.loader import ModelLoader
from gyre_serving.settings import DEFAULT_TRUSTED_TYPES

pytestmark = pytest.mark.integration

X = np.random.default_rng(1).normal(size=(40, 4))
Y = (X[:, 0] > 0).astype(int)


def source(store: LocalArtifactStore, data: bytes, *, sha256: str | None = None, fmt: str = "skops") -> ModelSource:
    ref = store.put(data)
    return ModelSource("m", 1, ref.uri, sha256 if sha256 is not None else ref.sha256, fmt)


def test_a_forest_loads_with_the_default_trusted_types_and_warms_up(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, Y)
    model = ModelLoader(store, DEFAULT_TRUSTED_TYPES).load(source(store, sio.dumps(forest)))
    assert model.signature.inputs[0].shape == (-1, 4)
    np.testing.assert_array_equal(model.estimator.predict(X), forest.predict(X))


@pytest.mark.parametrize(("case", "reason", "retryable"), [
    ("sha256 mismatch", "integrity", False),
    ("no sha256", "integrity", False),
    ("untrusted type", "untrusted", False),
    ("not skops", "deserialise", False),
    ("torch format", "format", False),
    ("missing file", "not_found", True),
])
def test_bad_artifacts_are_refused_with_a_reason(tmp_path: Path, case: str, reason: str, retryable: bool) -> None:
    store = LocalArtifactStore(tmp_path)
    loader = ModelLoader(store, DEFAULT_TRUSTED_TYPES)
    good = sio.dumps(RandomForestClassifier(n_estimators=2, random_state=0).fit(X, Y))
    if case == "sha256 mismatch":
        bad = source(store, good, sha256="0" * 64)
    elif case == "no sha256":
        bad = source(store, good, sha256="")
    elif case == "untrusted type":
        bad = source(store, sio.dumps(HistGradientBoostingClassifier(max_iter=2).fit(X, Y)))
    elif case == "not skops":
        bad = source(store, b"\x80\x04 definitely a pickle")
    elif case == "torch format":
        bad = source(store, good, fmt="torch-state-dict")
    else:
        bad = ModelSource("m", 1, (tmp_path / "sha256" / "00" / ("0" * 64)).as_uri(), "0" * 64)
    with pytest.raises(ModelLoadError) as refused:
        loader.load(bad)
    assert refused.value.reason == reason and refused.value.retryable is retryable
    if case == "untrusted type":
        assert "TreePredictor" in str(refused.value)
