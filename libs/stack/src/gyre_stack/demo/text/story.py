"""The text story from start to end: :func:`run_text_loop` plays steps a to g in order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
from gyre_stack.demo.plan import Plan
from gyre_stack.demo.steps.drift import check_debounce
from gyre_stack.demo.text.loop import TextLoop
from gyre_stack.demo.text.steps import corrections, dashboard, drift, features, retrain, serving, training
from gyre_stack.demo.topiclog import TopicLog

#: The steps in order, with the letter each prints.
STEPS = ("a features", "b training", "c serving", "d corrections", "e drift", "f retrain", "g dashboard")


async def run_text_loop(endpoints: Endpoints, plan: Plan, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the text story's steps a to g against ``endpoints``; a summary of what happened
    (``fingerprint_before``/``fingerprint_after``: the features' training set before and after the
    corrections; ``v1``, ``v2``: lineages; ``corrections``; ``alert``, ``drift_request``; ``promotion``;
    ``swap``: the client's calls; ``overview``: the dashboard's last answer).

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
            loop = TextLoop(endpoints, plan, say, http, topics, oip_grpc.GRPCInferenceServiceStub(channel), gyre_cli())
            await features.run(loop)
            await training.run(loop)
            await serving.run(loop)
            await corrections.run(loop)
            await drift.run(loop)
            await retrain.run(loop)
            check_debounce(loop.base)
            loop.summary["overview"] = await dashboard.run(loop)
            return loop.summary
    finally:
        await topics.stop()
