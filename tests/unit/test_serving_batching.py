"""Adaptive batching gives each caller its own rows; traffic splits are sticky per request key."""

from __future__ import annotations

import asyncio

import numpy as np
from sklearn.linear_model import LinearRegression

from gyre_serving.batching import AdaptiveBatcher, BatchingPolicy
from gyre_serving.domain.model import LoadedModel, ModelSource
from gyre_serving.domain.tensors import Tensor
from gyre_serving.traffic import TrafficSplit, canary


def model() -> LoadedModel:
    x = np.random.default_rng(0).normal(size=(30, 2))
    estimator = LinearRegression().fit(x, x[:, 0] * 10 + x[:, 1])  # predict(row) = 10*a + b
    return LoadedModel.build(ModelSource("m", 1, "file:///x", "0" * 64), estimator)


async def test_concurrent_callers_get_their_own_rows_from_shared_batches() -> None:
    served = model()
    batcher = AdaptiveBatcher(BatchingPolicy(max_batch_rows=16, max_wait_s=0.01))

    async def call(i: int) -> tuple[int, list[float]]:
        rows = np.array([[i, j] for j in range(i % 3 + 1)], dtype=float)
        features = served.features([Tensor("input-0", "FP64", rows)])
        prediction = await batcher.predict(served, features)
        return i, prediction.outputs[0].data.reshape(-1).tolist()

    results = await asyncio.gather(*(call(i) for i in range(40)))
    for i, predicted in results:
        np.testing.assert_allclose(predicted, [10 * i + j for j in range(i % 3 + 1)], atol=1e-6)
    assert batcher.batches < 40  # requests really shared predict calls


async def test_a_bad_request_fails_alone_in_its_batch() -> None:
    served = model()
    batcher = AdaptiveBatcher(BatchingPolicy(max_batch_rows=64, max_wait_s=0.01))
    good = served.features([Tensor("input-0", "FP64", np.array([[1.0, 2.0]]))])
    bad = served.features([Tensor("input-0", "FP64", np.array([[np.nan, 2.0]]))])
    answers = await asyncio.gather(batcher.predict(served, good), batcher.predict(served, bad),
                                   return_exceptions=True)
    assert not isinstance(answers[0], BaseException) and isinstance(answers[1], Exception)


def test_canary_is_sticky_per_key_and_close_to_its_percentage() -> None:
    split = TrafficSplit(canary_percent=20)
    chosen = [canary(split, "m", f"key-{i}") for i in range(5000)]
    assert 0.17 < sum(chosen) / len(chosen) < 0.23
    assert chosen == [canary(split, "m", f"key-{i}") for i in range(5000)]
    assert not any(canary(TrafficSplit(), "m", f"key-{i}") for i in range(100))
    assert all(canary(TrafficSplit(canary_percent=100), "m", f"key-{i}") for i in range(100))
