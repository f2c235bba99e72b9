"""Text features in reference profiles: descriptors, vocabulary, embeddings sample and the wire form."""

from __future__ import annotations

import numpy as np
import pytest

from gyre_common.profile import (
    FeatureKind,
    ProfileError,
    ReferenceProfile,
    TextDescriptor,
    build_reference_profile,
    oov_share,
    text_feature_profile,
    text_tokens,
)
from gyre_common.profile_wire import decode_profile, encode_profile


def fake_embed(texts):
    """Deterministic stand-in for the encoder: 8 dimensions from the text's characters."""
    rows = [[(sum(map(ord, t)) * (i + 1)) % 97 / 97.0 for i in range(8)] for t in texts]
    return np.asarray(rows, dtype=np.float32)


TEXTS = [f"the parcel number {i} arrived late and damaged" if i % 3 else "great product, fast delivery"
         for i in range(300)] + ["", "   ", None]


def test_tokens_and_oov_share() -> None:
    assert text_tokens("Hello, WORLD! 42x") == ["hello", "world", "42x"]
    assert oov_share("hello there", {"hello"}) == 0.5
    assert oov_share("!!!", {"hello"}) is None


def test_text_feature_profile_keeps_descriptors_vocabulary_and_a_float16_sample() -> None:
    feature = text_feature_profile("review", TEXTS, embed=fake_embed, embedding_sample=50, seed=1)
    assert feature.kind is FeatureKind.TEXT and feature.missing == 1
    text = feature.text
    assert text is not None and text.encoder == "all-MiniLM-L6-v2"
    assert text.embeddings.shape == (50, 8) and text.embeddings.dtype == np.float32
    assert np.array_equal(text.embeddings, text.embeddings.astype(np.float16).astype(np.float32))
    assert {"the", "parcel", "great"} <= set(text.vocabulary)
    length = text.descriptor(TextDescriptor.LENGTH)
    assert length is not None and length.values.size == 302 and feature.rows == 302
    empty = text.descriptor(TextDescriptor.EMPTY)
    assert empty is not None and empty.counts == {"true": 2, "false": 300}
    oov = text.descriptor(TextDescriptor.OOV_SHARE)
    # Measured on the held-out half: digits unseen in the vocabulary half count as out of vocabulary.
    assert oov is not None and 0 < oov.values.size <= 151 and oov.values.max() > 0
    again = text_feature_profile("review", TEXTS, embed=fake_embed, embedding_sample=50, seed=1)
    assert np.array_equal(again.text.embeddings, text.embeddings)  # type: ignore[union-attr]


def test_profile_with_text_round_trips_through_the_wire_form() -> None:
    profile = build_reference_profile({"review": TEXTS, "stars": [float(i % 5) for i in range(303)]},
                                      model_name="m", model_version=0, text=["review"], embed=fake_embed,
                                      embedding_sample=40)
    assert [f.kind for f in profile.features] == [FeatureKind.TEXT, FeatureKind.NUMERICAL]
    back = decode_profile(encode_profile(profile))
    text, again = profile.features[0].text, back.features[0].text
    assert text is not None and again is not None
    assert np.array_equal(text.embeddings, again.embeddings)
    assert again.vocabulary == text.vocabulary and again.encoder == text.encoder
    assert [d.name for d in again.descriptors] == [d.name for d in text.descriptors]
    assert encode_profile(back) == encode_profile(profile)


def test_descriptors_only_when_no_embedding_is_wanted() -> None:
    feature = text_feature_profile("review", TEXTS, embedding_sample=0)  # no encoder needed
    assert feature.text is not None and feature.text.embeddings.shape == (0, 0)
    profile = ReferenceProfile("m", 1, (feature,), 303)
    assert decode_profile(encode_profile(profile)).features[0].text.embeddings.shape == (0, 0)  # type: ignore[union-attr]


def test_invalid_text_profiles_are_refused() -> None:
    with pytest.raises(ProfileError, match="holds no text"):
        text_feature_profile("review", [None, None], embed=fake_embed)
    with pytest.raises(ProfileError, match="both categorical and text"):
        build_reference_profile({"r": TEXTS}, model_name="m", model_version=0, text=["r"], categorical=["r"])
    good = text_feature_profile("review", TEXTS, embed=fake_embed, embedding_sample=5)
    bad = good.text.__class__("e", np.full((2, 3), np.nan, dtype=np.float32), (), good.text.descriptors)  # type: ignore[union-attr]
    with pytest.raises(ProfileError, match="non-finite"):
        ReferenceProfile("m", 1, (good.__class__("review", FeatureKind.TEXT, text=bad),), 1)


def test_html_report_of_a_text_only_profile_points_to_the_json_report() -> None:
    from gyre_monitor.report import render_drift_html

    feature = text_feature_profile("review", TEXTS, embedding_sample=0)
    html = render_drift_html(ReferenceProfile("m", 1, (feature,), 303), [])
    assert "text features only" in html
