"""Text drift: embedding drift (a domain classifier) agrees with Evidently's EmbeddingsDrift (method
"model", its default) on the same embeddings; descriptors are tested like numerical/categorical
features; hashed texts and a missing encoder are reported as skipped checks; alerts name the checks.

Agreement tolerance: given the same embeddings (the reference as stored, float16-rounded), our
split, classifier and seeds are Evidently's, so the ROC AUC agrees to 1e-9 and the decision exactly.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from gyre_common.profile import FeatureKind, ReferenceProfile, build_reference_profile, text_feature_profile
from gyre_monitor.convert import drift_alert, retraining_request
from gyre_monitor.domain.drift import DIGESTS_ONLY, TEXT_EXTRA_MISSING, PreparedReference, StatTest, window_columns
from gyre_monitor.domain.text_drift import TextDigest, embedding_drift, text_values

pytest.importorskip("evidently")
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.metrics.data_drift.embedding_drift_methods import model
from evidently.metrics import EmbeddingsDrift


def evidently_embedding_drift(reference: np.ndarray, current: np.ndarray) -> tuple[float, bool]:
    """Evidently's default embedding drift method, as EmbeddingsDrift calls it: (ROC AUC, drift detected).

    Called directly: the Report around it also draws a t-SNE picture, tens of seconds on this
    machine; :func:`test_evidently_report_uses_the_model_method` checks the Report gives the same score.
    """
    columns = [f"e{i}" for i in range(reference.shape[1])]
    score, detected, name = model(bootstrap=reference.shape[0] < 1000)(
        pd.DataFrame(current, columns=columns), pd.DataFrame(reference, columns=columns))
    assert name == "model"
    return float(score), bool(detected)


def test_evidently_report_uses_the_model_method() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(150, 4)).astype(np.float32)
    current = (rng.normal(size=(100, 4)) + 0.5).astype(np.float32)
    columns = [f"e{i}" for i in range(4)]
    definition = DataDefinition(embeddings={"text": columns})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([EmbeddingsDrift(embeddings_name="text")]).run(
            Dataset.from_pandas(pd.DataFrame(current, columns=columns), data_definition=definition),
            Dataset.from_pandas(pd.DataFrame(reference, columns=columns), data_definition=definition),
        )
    score = float(snapshot.dict()["metrics"][0]["value"])
    assert score == pytest.approx(evidently_embedding_drift(reference, current)[0], abs=1e-12)
    assert score == pytest.approx(embedding_drift(reference, current).roc_auc, abs=1e-9)


@pytest.mark.parametrize(("reference_rows", "shift", "drifts"), [
    (400, 0.0, False),   # same distribution, bootstrapped threshold (< 1000 reference rows)
    (400, 0.5, True),
    (1200, 0.0, False),  # same distribution, threshold 0.55
    (1200, 0.5, True),
])
def test_embedding_drift_agrees_with_evidently(reference_rows: int, shift: float, drifts: bool) -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(size=(reference_rows, 16)).astype(np.float32)
    current = (rng.normal(size=(300, 16)) + shift).astype(np.float32)
    ours = embedding_drift(reference, current)
    score, detected = evidently_embedding_drift(reference, current)
    assert ours.roc_auc == pytest.approx(score, abs=1e-9)
    assert ours.drifted == detected == drifts
    assert (ours.threshold == 0.55) == (reference_rows >= 1000)


# -- real sentence embeddings: two topics and languages ------------------------------------------------

PRODUCTS = ["parcel", "blender", "headset", "jacket", "lamp", "kettle", "charger", "backpack"]
VERDICTS = ["arrived late", "works perfectly", "broke after a week", "is exactly as described",
            "was cheaper elsewhere", "feels sturdy", "smells odd", "exceeded my expectations"]
ENDINGS = ["would buy again", "not recommended", "five stars", "returned it", "customer service helped",
           "good value for money"]
CITIES = ["Berlin", "Hamburg", "München", "Köln", "Leipzig", "Dresden", "Bremen", "Stuttgart"]
WEATHER = ["sonnig", "bewölkt", "regnerisch", "windig", "neblig", "stürmisch"]


def reviews(n: int, seed: int) -> list[str]:
    pick = random.Random(seed).choice
    return [f"The {pick(PRODUCTS)} {pick(VERDICTS)}, {pick(ENDINGS)}." for _ in range(n)]


def weather(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return [f"Das Wetter in {rnd.choice(CITIES)} ist heute {rnd.choice(WEATHER)} bei {rnd.randint(-5, 30)} Grad, "
            f"morgen wird es {rnd.choice(WEATHER)} und die Nacht bleibt {rnd.choice(WEATHER)}." for _ in range(n)]


@pytest.fixture(scope="module")
def embed():  # type: ignore[no-untyped-def]
    encoders = pytest.importorskip("gyre_ml.encoders")
    pytest.importorskip("sklearn")
    return lambda encoder, texts: encoders.shared_encoder(encoder).embed(texts)


@pytest.fixture(scope="module")
def review_profile(embed) -> ReferenceProfile:  # type: ignore[no-untyped-def]
    feature = text_feature_profile("review", reviews(300, seed=1), embed=lambda t: embed("all-MiniLM-L6-v2", t))
    return ReferenceProfile("shop", 1, (feature,), 300)


@pytest.mark.parametrize(("current", "drifts"), [(reviews(150, seed=2), False), (weather(150, seed=3), True)])
def test_text_feature_drift_agrees_with_evidently_on_real_embeddings(
        embed, review_profile: ReferenceProfile, current: list[str], drifts: bool) -> None:  # type: ignore[no-untyped-def]
    drift = PreparedReference(review_profile).detect({"review": current}, len(current), embedder=embed)
    by_check = {result.descriptor: result for result in drift.features}
    embedding = by_check["embedding"]
    assert embedding.test is StatTest.MODEL and embedding.kind is FeatureKind.TEXT
    reference = review_profile.features[0].text.embeddings  # type: ignore[union-attr]
    score, detected = evidently_embedding_drift(reference, embed("all-MiniLM-L6-v2", current))
    assert embedding.statistic == pytest.approx(score, abs=1e-9)
    assert embedding.drifted == detected == drifts
    assert drift.dataset_drift == drifts
    if drifts:
        # Another language and topic: longer texts, unseen words.
        assert by_check["length"].drifted and by_check["oov_share"].drifted
        assert drift.drifted_features == ["review"]
        assert drift.drifted_checks[:2] == ["review:embedding", "review:length"]
    else:
        assert drift.drifted_checks == []


# -- descriptors, hashes, no encoder, alerts ------------------------------------------------------------


def fake_embed(texts):  # type: ignore[no-untyped-def]
    return np.asarray([[len(t) % 7, t.count("e"), t.count(" ")] for t in texts], dtype=np.float32)


def hashed(name: str, text: str) -> dict[str, object]:
    """The inputs serving sends for a text in hash mode (GYRE_SERVING_EVENT_TEXT=hash)."""
    return {name: f"sha256:{hashlib.sha256(text.encode()).hexdigest()}:{len(text)}"}


def digests(texts: list[str]) -> list[object]:
    return window_columns(profile_with_text(), [hashed("review", t) for t in texts])["review"]


def profile_with_text() -> ReferenceProfile:
    data = {"review": reviews(400, seed=4), "stars": [float(i % 5) + 0.5 * (i % 3) for i in range(400)]}
    return build_reference_profile(data, model_name="shop", model_version=0, text=["review"], embed=fake_embed)


def test_text_values_split_texts_from_digests() -> None:
    rows = [{"review": "hello"}, {}, hashed("review", "abc"), {"review": 42}, {"review_length": True},
            {"review_length": 7}, {"review": "sha256:not-a-digest:3"}]
    columns = window_columns(profile_with_text(), rows)
    assert columns["review"] == ["hello", None, TextDigest(3), 42, None, TextDigest(7), "sha256:not-a-digest:3"]
    values = text_values(columns["review"])
    assert values.texts == ["hello", "42", "sha256:not-a-digest:3"]
    assert values.digest_lengths == [3, 7]
    assert values.lengths == [5.0, 2.0, 21.0, 3.0, 7.0]


def test_hashed_texts_test_length_and_empty_only() -> None:
    prepared = PreparedReference(profile_with_text())
    current = digests(weather(200, seed=5))
    drift = prepared.detect({"review": current, "stars": [1.0] * 200}, 200, embedder=lambda e, t: fake_embed(t))
    checks = {(r.feature, r.descriptor): r for r in drift.features}
    assert set(checks) == {("review", "length"), ("review", "empty"), ("stars", "")}
    assert checks[("review", "length")].drifted
    skipped = {(s.feature, s.descriptor): s.reason for s in drift.skipped}
    assert skipped == {("review", "embedding"): DIGESTS_ONLY, ("review", "oov_share"): DIGESTS_ONLY}


def test_without_an_encoder_embedding_drift_is_reported_as_not_checked() -> None:
    prepared = PreparedReference(profile_with_text())
    drift = prepared.detect({"review": reviews(100, seed=6)}, 100)
    assert ("review", "embedding", TEXT_EXTRA_MISSING) in {(s.feature, s.descriptor, s.reason) for s in drift.skipped}
    assert {r.descriptor for r in drift.features} == {"length", "oov_share", "empty"}


def test_a_text_feature_counts_once_in_the_drift_share() -> None:
    prepared = PreparedReference(profile_with_text())
    drift = prepared.detect({"review": weather(200, seed=7), "stars": [0.5 * (i % 9) for i in range(200)]}, 200,
                            embedder=lambda e, t: fake_embed(t))
    assert len([r for r in drift.features if r.feature == "review" and r.drifted]) >= 2
    drifted_stars = any(r.drifted for r in drift.features if r.feature == "stars")
    assert drift.drift_share == (1.0 if drifted_stars else 0.5)


def test_alert_and_retraining_evidence_name_the_text_feature_and_its_checks() -> None:
    prepared = PreparedReference(profile_with_text())
    drift = prepared.detect({"review": digests(weather(200, seed=8))}, 200)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    alert = drift_alert(alert_id="a", model_name="shop", model_version=1, window_start=now, window_end=now,
                        drift=drift, detected_at=now)
    assert [(f.feature, f.descriptor, f.test_name) for f in alert.feature_drifts if f.drifted] == [
        ("review", "length", "ks")]
    assert {(s.feature, s.descriptor) for s in alert.skipped} == {
        ("review", "embedding"), ("review", "oov_share"), ("stars", "")}
    request = retraining_request(request_id="r", alert=alert, window_seq=0, feature_view="v", label="y",
                                 promote_to_alias="", requested_at=now)
    assert request.evidence["drifted_features"] == "review"
    assert request.evidence["drifted_checks"] == "review:length"
