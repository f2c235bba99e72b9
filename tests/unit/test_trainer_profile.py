"""Reference profiles: the monitor's format and rules, and agreement with the monitor's builder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2 as monitor_pb
from gyre_trainer.adapters.convert import profile_to_proto
from gyre_trainer.domain.dataset import FeatureKind
from gyre_trainer.domain.profile import ProfileError, build_reference_profile


def training_inputs(rows: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "amount": rng.normal(100, 10, size=rows),
        "age": rng.integers(18, 90, size=rows),           # many distinct ints: numerical
        "stars": rng.integers(1, 6, size=rows),           # few distinct ints: categorical
        "flag": rng.choice([True, False], size=rows),
        "colour": rng.choice(["red", "green", None], size=rows),
        "comment": [f"free text {i}" for i in range(rows)],  # mostly distinct: text, left out
    })


def test_kinds_sample_and_counts() -> None:
    data = training_inputs()
    data.loc[3, "amount"] = np.nan
    profile = build_reference_profile(data, dataset_fingerprint="f" * 64, max_values=100, seed=1)
    kinds = {f.feature: f.kind for f in profile.features}
    assert kinds == {"amount": FeatureKind.NUMERICAL, "age": FeatureKind.NUMERICAL,
                     "stars": FeatureKind.CATEGORICAL, "flag": FeatureKind.CATEGORICAL,
                     "colour": FeatureKind.CATEGORICAL}
    by_name = {f.feature: f for f in profile.features}
    assert len(by_name["amount"].values) <= 100 and by_name["amount"].missing_count == 1
    assert sum(by_name["stars"].category_counts.values()) == len(data)
    assert set(by_name["flag"].category_counts) == {"true", "false"}
    assert by_name["colour"].missing_count == (data["colour"].isna()).sum()
    assert profile.rows == len(data)
    again = build_reference_profile(data, dataset_fingerprint="f" * 64, max_values=100, seed=1)
    assert again == profile


def test_proto_form_is_the_monitors_message() -> None:
    profile = build_reference_profile(training_inputs(50), dataset_fingerprint="ab" * 32, max_values=5000, seed=0)
    message = profile_to_proto(profile)
    decoded = monitor_pb.ReferenceProfile.FromString(message.SerializeToString())
    assert decoded.rows == 50 and decoded.dataset_fingerprint == "ab" * 32
    assert {f.kind for f in decoded.features} == {monitor_pb.FEATURE_KIND_NUMERICAL,
                                                 monitor_pb.FEATURE_KIND_CATEGORICAL}


def test_only_text_is_refused() -> None:
    with pytest.raises(ProfileError):
        build_reference_profile(pd.DataFrame({"t": [f"x{i}" for i in range(10)]}), dataset_fingerprint="",
                                max_values=10, seed=0)


def test_agrees_with_the_monitors_builder() -> None:
    monitor = pytest.importorskip("gyre_monitor.profile")
    data = training_inputs(2000)
    ours = profile_to_proto(build_reference_profile(data, dataset_fingerprint="c" * 64, max_values=500, seed=4),
                            "churn", 1)
    theirs = monitor.profile_to_proto(monitor.build_reference_profile(
        data, model_name="churn", model_version=1, max_values=500, seed=4, dataset_fingerprint="c" * 64))
    assert ours == theirs
