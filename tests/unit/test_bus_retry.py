"""The retry policy's back-off, the in-memory dedupe set and publish-side validation, without I/O."""

from __future__ import annotations

import pytest

from gyre_common.bus import Publisher, RetryPolicy, SeenEvents
from gyre_common.settings import KafkaSettings
from gyre_contracts.gyre.events.v1 import events_pb2 as ev


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(max_retries=5, backoff_ms=100, max_backoff_ms=1000)
    assert [policy.delay_s(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.attempts == 6
    assert RetryPolicy(backoff_ms=100).delay_s(1000) == 10.0
    with pytest.raises(ValueError):
        policy.delay_s(0)
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)


def test_seen_events_is_a_bounded_lru() -> None:
    seen = SeenEvents(maxsize=2)
    assert seen.check_and_add("a") and seen.check_and_add("b")
    assert not seen.check_and_add("a")  # refreshes "a"
    assert seen.check_and_add("c")  # evicts "b", the least recently seen
    assert "a" in seen and "b" not in seen and len(seen) == 2
    seen.discard("a")
    assert seen.check_and_add("a")
    with pytest.raises(ValueError):
        SeenEvents(0)


async def test_publish_validates_before_touching_the_broker() -> None:
    publisher = Publisher(KafkaSettings(), service="t")  # never started: validation comes first
    with pytest.raises(ValueError, match="unknown topic 'features'"):
        await publisher.publish("features", ev.FeatureEvent())
    with pytest.raises(ValueError, match=r"carries gyre\.events\.v1\.InferenceEvent"):
        await publisher.publish("inference.events", ev.FeatureEvent())
    with pytest.raises(RuntimeError, match="not started"):
        await publisher.publish("features.events", ev.FeatureEvent())
