"""Adaptive batching: concurrent requests for one model version share one ``predict`` call.

The first request to arrive opens a batch and waits at most ``max_wait_s``; requests arriving
meanwhile join it. The batch runs as soon as it holds ``max_batch_rows`` rows or the wait is over.
Each request keeps the row range it contributed and gets back exactly those rows of every output,
so an answer always goes to its own caller. If the model rejects the combined batch (one request's
values are bad), every request of it is run alone, so only the bad one fails, with its own error.

Batches are per loaded model object: a version swapped in starts its own batches, and requests that
resolved the old version still run on it.

Blocking models (:attr:`Runtime.blocking`: torch text models, tens of milliseconds a call) run in a
worker thread, one batch at a time, so the event loop keeps taking requests meanwhile; requests
that arrive while a batch runs queue up and form the next batch (up to ``max_batch_rows``) as soon
as the model is free: the busier the model, the larger its batches. Only the first request after an
idle spell waits ``max_wait_s`` for company.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gyre_serving import metrics
from gyre_serving.domain.runtime import Prediction, Runtime
from gyre_serving.domain.signature import FeatureBatch
from gyre_serving.domain.tensors import Tensor


@dataclass(frozen=True, slots=True)
class BatchingPolicy:
    """Adaptive batching of one model.

    Attributes:
        max_batch_rows: most rows in one combined ``predict`` call (a request larger than this
            runs alone).
        max_wait_s: longest a request waits for others to join its batch, in seconds.
    """

    max_batch_rows: int
    max_wait_s: float


@dataclass
class _Pending:
    model: Runtime
    items: list[tuple[FeatureBatch, asyncio.Future[Prediction]]] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Lane:
    """The queue of a blocking model: requests waiting for the worker thread, oldest first."""

    model: Runtime
    items: deque[tuple[FeatureBatch, asyncio.Future[Prediction]]] = field(default_factory=deque)
    rows: int = 0
    full: asyncio.Event | None = None
    task: asyncio.Task[None] | None = None


class AdaptiveBatcher:
    """Combines concurrent requests per model version (see the module docstring).

    Args:
        policy: batch size and wait.
        model_name: metrics label.
        executor: where blocking models predict (one worker: batches run one after another);
            None runs them in asyncio's default executor.
    """

    def __init__(self, policy: BatchingPolicy, model_name: str = "", executor: Executor | None = None) -> None:
        self.policy = policy
        self._counter = metrics.BATCHES.labels(model_name or "_any")
        self._open: dict[int, _Pending] = {}
        self._lanes: dict[int, _Lane] = {}
        self._executor = executor
        self.batches = 0
        """Combined ``predict`` calls made (tests and metrics)."""

    async def predict(self, model: Runtime, features: FeatureBatch) -> Prediction:
        """``model.predict(features)``, possibly together with other requests' rows.

        Raises:
            InvalidRequestError, PredictionError: as :meth:`Runtime.predict`, for this request's rows.
        """
        if model.blocking:
            return await self._queue(model, features)
        if features.rows == 0 or features.rows >= self.policy.max_batch_rows:
            return model.predict(features)
        key = id(model)
        pending = self._open.get(key)
        if pending is not None and pending.rows + features.rows > self.policy.max_batch_rows:
            self._flush(key)
            pending = None
        if pending is None:
            pending = self._open[key] = _Pending(model)
            pending.timer = asyncio.get_running_loop().call_later(self.policy.max_wait_s, self._flush, key)
        future: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        pending.items.append((features, future))
        pending.rows += features.rows
        if pending.rows >= self.policy.max_batch_rows:
            self._flush(key)
        return await future

    def _flush(self, key: int) -> None:
        pending = self._open.pop(key, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        self.batches += 1
        self._counter.inc()
        items = pending.items
        if len(items) == 1:
            _settle(items[0][1], pending.model, items[0][0])
            return
        try:
            combined = pending.model.predict(_concatenate([features for features, _ in items]))
        except Exception:
            # One request's rows may be what the model refused: give each request its own answer.
            for features, future in items:
                _settle(future, pending.model, features)
            return
        start = 0
        for features, future in items:
            stop = start + features.rows
            if not future.done():
                future.set_result(_slice(combined, start, stop))
            start = stop


    async def _queue(self, model: Runtime, features: FeatureBatch) -> Prediction:
        key = id(model)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(model)
        future: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        lane.items.append((features, future))
        lane.rows += features.rows
        if lane.task is None:
            lane.task = asyncio.get_running_loop().create_task(self._drain(key, lane))
        elif lane.full is not None and lane.rows >= self.policy.max_batch_rows:
            lane.full.set()
        return await future

    async def _drain(self, key: int, lane: _Lane) -> None:
        """Run the lane's queued requests, a batch at a time, until none are left."""
        limit = self.policy.max_batch_rows
        try:
            if lane.rows < limit and self.policy.max_wait_s > 0:
                lane.full = asyncio.Event()
                try:
                    await asyncio.wait_for(lane.full.wait(), self.policy.max_wait_s)
                except TimeoutError:
                    pass
                lane.full = None
            while lane.items:
                taken: list[tuple[FeatureBatch, asyncio.Future[Prediction]]] = []
                rows = 0
                # Whole requests only, oldest first; a request larger than the limit runs alone.
                while lane.items and (not taken or rows + lane.items[0][0].rows <= limit):
                    features, future = lane.items.popleft()
                    lane.rows -= features.rows
                    if not future.done():  # a caller that went away (cancelled) costs nothing
                        taken.append((features, future))
                        rows += features.rows
                if taken:
                    await self._run_blocking(lane.model, taken)
        finally:
            lane.task = None
            if not lane.items and self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _run_blocking(self, model: Runtime, items: list[tuple[FeatureBatch, asyncio.Future[Prediction]]],
                            ) -> None:
        loop = asyncio.get_running_loop()
        self.batches += 1
        self._counter.inc()
        try:
            combined = await loop.run_in_executor(self._executor, model.predict,
                                                  _concatenate([features for features, _ in items])
                                                  if len(items) > 1 else items[0][0])
        except Exception as exc:
            if len(items) == 1:
                if not items[0][1].done():
                    items[0][1].set_exception(exc)
                return
            # One request's rows may be what the model refused: give each request its own answer.
            for features, future in items:
                try:
                    alone = await loop.run_in_executor(self._executor, model.predict, features)
                except Exception as single:
                    if not future.done():
                        future.set_exception(single)
                else:
                    if not future.done():
                        future.set_result(alone)
            return
        start = 0
        for features, future in items:
            stop = start + features.rows
            if not future.done():
                future.set_result(combined if len(items) == 1 else _slice(combined, start, stop))
            start = stop


def _settle(future: asyncio.Future[Prediction], model: Runtime, features: FeatureBatch) -> None:
    if future.done():  # the caller went away (cancelled)
        return
    try:
        future.set_result(model.predict(features))
    except Exception as exc:
        future.set_exception(exc)


def _concatenate(batches: list[FeatureBatch]) -> FeatureBatch:
    first = batches[0]
    rows = sum(batch.rows for batch in batches)
    if all(batch.matrix is not None for batch in batches):
        matrix = np.concatenate([batch.matrix for batch in batches if batch.matrix is not None])
        return FeatureBatch(first.names, tuple(matrix[:, j] for j in range(matrix.shape[1])), rows, matrix)
    columns = tuple(np.concatenate([batch.columns[j] for batch in batches]) for j in range(len(first.columns)))
    return FeatureBatch(first.names, columns, rows)


def _slice(prediction: Prediction, start: int, stop: int) -> Prediction:
    outputs = tuple(Tensor(t.name, t.datatype, t.data[start:stop]) for t in prediction.outputs)
    events: tuple[tuple[str, np.ndarray[Any, Any]], ...] = tuple(
        (name, column[start:stop]) for name, column in prediction.event_columns)
    return Prediction(outputs, events)
