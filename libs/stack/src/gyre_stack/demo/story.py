"""The story from start to end: :func:`run_loop` plays steps a to g in order, :class:`Clock` tells them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import httpx

from gyre_common.topics import (
    FEEDBACK_EVENTS,
    INFERENCE_EVENTS,
    MONITOR_ALERTS,
    REGISTRY_EVENTS,
    TRAINING_EVENTS,
    TRAINING_REQUESTS,
)
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2_grpc as oip_grpc
from gyre_stack.demo.endpoints import Endpoints, gyre_cli
from gyre_stack.demo.loop import Loop
from gyre_stack.demo.plan import Plan
from gyre_stack.demo.topiclog import TopicLog

L = TypeVar("L")


def print_flushed(message: str) -> None:
    """Print ``message`` at once, so a pipe (``make demo | tee``) shows each step as it ends."""
    print(message, flush=True)


class Clock:
    """Prints steps with the seconds since the start."""

    def __init__(self, out: Callable[[str], None] = print_flushed) -> None:
        self.start = time.monotonic()
        self.out = out

    def __call__(self, message: str) -> None:
        self.out(f"[{time.monotonic() - self.start:6.1f}s] {message}")


async def run_loop(endpoints: Endpoints, plan: Plan, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run steps a to g against ``endpoints``; a summary of what happened (``promotion``: how v2 reached
    production, ``alert``, ``drift_request``, ``v1``, ``overview``: the dashboard's last answer).

    Raises:
        LoopError: at the first step that does not happen as expected.
    """
    async def story(loop: Loop) -> dict[str, Any]:
        await loop.features()
        await loop.train()
        await loop.serving()
        await loop.feedback()
        await loop.monitor()
        await loop.retrain()
        loop.check_debounce()
        loop.summary["overview"] = await loop.dashboard()
        return loop.summary
    return await play_story(endpoints, plan, say, Loop, story)


async def play_story(endpoints: Endpoints, plan: Plan, say: Callable[[str], None],
                     make_loop: Callable[[Endpoints, Plan, Callable[[str], None], httpx.AsyncClient, TopicLog,
                                          oip_grpc.GRPCInferenceServiceStub, Sequence[str]], L],
                     story: Callable[[L], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Follow the story's topics and open its HTTP client and serving channel, build the steps' shared
    state with ``make_loop`` and play ``story`` on it; what ``story`` returns (its summary).

    Raises:
        LoopError: at the first step that does not happen as expected.
    """
    topics = TopicLog(endpoints.bootstrap_servers, endpoints.topic_prefix, {
        TRAINING_EVENTS: ev.TrainingEvent, REGISTRY_EVENTS: ev.RegistryEvent, INFERENCE_EVENTS: ev.InferenceEvent,
        FEEDBACK_EVENTS: ev.FeedbackEvent, MONITOR_ALERTS: ev.MonitorAlert, TRAINING_REQUESTS: ev.TrainingRequest})
    await topics.start()
    try:
        async with httpx.AsyncClient(timeout=30) as http, \
                grpc.aio.insecure_channel(endpoints["serving"].grpc) as channel:
            loop = make_loop(endpoints, plan, say, http, topics, oip_grpc.GRPCInferenceServiceStub(channel),
                             gyre_cli())
            return await story(loop)
    finally:
        await topics.stop()
