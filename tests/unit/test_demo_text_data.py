"""The text demo's generated corpus (gyre_stack.demo.text.data): deterministic, labelled by topic, a few rows
mislabelled evenly across the topics, and French drift traffic that shares no sentence with it."""

from __future__ import annotations

from collections import Counter

from gyre_stack.demo.text import data
from gyre_stack.demo.text.loop import raw_bytes, split_raw_bytes


def test_the_corpus_is_deterministic_and_labelled_by_topic() -> None:
    first, again = data.corpus(), data.corpus.__wrapped__()
    assert first == again
    assert len(first) == data.ROWS and Counter(first.topics) == {t: data.ROWS // 3 for t in data.TOPICS}
    assert data.corpus.__wrapped__(seed=12) != first


def test_mislabelled_rows_are_spread_over_the_topics_and_carry_another_topic() -> None:
    corpus = data.corpus()
    assert len(corpus.mislabelled) == data.MISLABELLED
    assert Counter(corpus.topics[i] for i in corpus.mislabelled) == {t: data.MISLABELLED // 3 for t in data.TOPICS}
    wrong = {i for i, (label, topic) in enumerate(zip(corpus.labels, corpus.topics, strict=True)) if label != topic}
    assert wrong == set(corpus.mislabelled)


def test_french_traffic_is_new_and_longer() -> None:
    french = data.french_texts(60, seed=1)
    assert french == data.french_texts(60, seed=1) and not set(french) & set(data.corpus().texts)
    assert min(map(len, french)) > max(map(len, data.corpus().texts)) * 0.9


def test_raw_bytes_round_trip() -> None:
    texts = ["", "Le chef a goûté le ragoût.", "x" * 300]
    assert split_raw_bytes(raw_bytes(texts)) == [t.encode() for t in texts]
