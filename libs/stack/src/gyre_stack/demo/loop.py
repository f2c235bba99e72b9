"""The state the steps share, and the calls several steps make (serving's OIP, the registry's versions).

Each step lives in its own module under :mod:`gyre_stack.demo.steps`; :class:`Loop` runs one with
a method of the step's name, so a test can play the first steps alone (the chaos test does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as oip
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2_grpc as oip_grpc
from gyre_stack.demo import data as dataset
from gyre_stack.demo.checks import LoopError, get_json, poll
from gyre_stack.demo.endpoints import Endpoints
from gyre_stack.demo.plan import Plan
from gyre_stack.demo.steps import dashboard as step_dashboard
from gyre_stack.demo.steps import drift as step_drift
from gyre_stack.demo.steps import features as step_features
from gyre_stack.demo.steps import feedback as step_feedback
from gyre_stack.demo.steps import serving as step_serving
from gyre_stack.demo.steps import swap as step_swap
from gyre_stack.demo.steps import training as step_training
from gyre_stack.demo.topiclog import TopicLog


@dataclass
class Loop:
    """State shared by the steps; :func:`gyre_stack.demo.story.run_loop` runs them in order."""

    endpoints: Endpoints
    plan: Plan
    say: Callable[[str], None]
    http: httpx.AsyncClient
    topics: TopicLog
    infer: oip_grpc.GRPCInferenceServiceStub
    gyre_cli: Sequence[str]
    names: list[str] = field(default_factory=dataset.feature_names)
    data: np.ndarray = field(default_factory=dataset.features)
    target: np.ndarray = field(default_factory=dataset.targets)
    #: Rows version 1 has answered so far (they fill the monitor's first window).
    served_v1_rows: int = 0
    summary: dict[str, Any] = field(default_factory=dict)

    # ---- the steps, in the order of the story

    async def features(self) -> None:
        """a. A feature view, the dataset as JSON feature events, checked in the offline and online stores."""
        await step_features.run(self)

    async def train(self) -> None:
        """b. ``gyre train``: trials in tracking, version 1 with lineage in the registry, production -> 1."""
        await step_training.run(self)

    async def serving(self) -> None:
        """c. Version 1 answers OIP calls over gRPC and REST; their inference events are on the topic."""
        await step_serving.run(self)

    async def feedback(self) -> None:
        """d. Corrected labels for the batch predictions; version 1's quality counts them."""
        await step_feedback.run(self)

    async def monitor(self) -> None:
        """e. Unshifted traffic raises nothing; shifted traffic one alert naming exactly those features."""
        await step_drift.run(self)

    def check_debounce(self) -> None:
        """e. One alert and one DRIFT request, however many drifted windows were evaluated."""
        step_drift.check_debounce(self)

    async def retrain(self) -> None:
        """f. The trainer answers the DRIFT request with version 2; serving swaps it in under load."""
        await step_swap.run(self)

    async def dashboard(self) -> dict[str, Any]:
        """g. The dashboard's overview shows all of it; returns that overview."""
        return await step_dashboard.run(self)

    # ---- serving (Open Inference Protocol over gRPC)

    def infer_request(self, rows: np.ndarray, request_id: str = "") -> oip.ModelInferRequest:
        """A ModelInfer request of the plan's model: one FP64 input per feature, one element per row."""
        request = oip.ModelInferRequest(model_name=self.plan.model, id=request_id)
        for j, name in enumerate(self.names):
            tensor = request.inputs.add(name=name, datatype="FP64", shape=[len(rows)])
            tensor.contents.fp64_contents.extend(float(v) for v in rows[:, j])
        return request

    async def infer_grpc(self, rows: np.ndarray, request_id: str = "") -> tuple[int, list[str], list[int]]:
        """Version, prediction ids and predicted labels of one gRPC ModelInfer call.

        Raises:
            grpc.RpcError: the call failed (30 s timeout).
            LoopError: the response id is not ``request_id``.
        """
        reply = await self.infer.ModelInfer(self.infer_request(rows, request_id), timeout=30)
        if request_id and reply.id != request_id:
            raise LoopError(f"response id {reply.id!r} is not the request id {request_id!r}")
        ids = reply.parameters["prediction_ids"].string_param.split(",") if len(rows) > 1 else [reply.id]
        labels = next(list(o.contents.int64_contents) for o in reply.outputs if o.name == "predict")
        if int(reply.model_version) == 1:
            self.served_v1_rows += len(rows)
        return int(reply.model_version), ids, labels

    async def model_ready(self, version: int) -> bool:
        """Whether serving says ``version`` of the plan's model is ready (gRPC ModelReady)."""
        reply = await self.infer.ModelReady(oip.ModelReadyRequest(name=self.plan.model, version=str(version)),
                                            timeout=5)
        return bool(reply.ready)

    def sample(self, count: int, seed: int) -> np.ndarray:
        """``count`` dataset rows in a seeded order (the whole dataset, repeated if needed)."""
        return dataset.sample(self.data, count, seed)

    # ---- the registry (REST)

    async def registered_version(self, version: int) -> dict[str, Any]:
        """Version ``version`` of the plan's model as the registry shows it, once it exists."""
        url = f"{self.endpoints['registry'].http}/api/v1/registered-models/{self.plan.model}/versions/{version}"

        async def check() -> dict[str, Any] | None:
            body = await get_json(self.http, url)
            return body.get("modelVersion", body) if body else None
        return await poll(check, within_s=self.plan.deadline_s, what=f"registry version {version}")

    async def alias_version(self, alias: str) -> int | None:
        """The version ``alias`` points at, or None when it is not set."""
        url = f"{self.endpoints['registry'].http}/api/v1/registered-models/{self.plan.model}/aliases/{alias}"
        body = await get_json(self.http, url)
        if body is None:
            return None
        return int(body.get("modelVersion", body).get("version", 0))

    async def wait_alias(self, alias: str, version: int) -> None:
        """Wait until ``alias`` points at ``version``; the LoopError quotes the model and its audit trail."""
        async def check() -> bool:
            return await self.alias_version(alias) == version
        try:
            await poll(check, within_s=self.plan.deadline_s, what=f"registry alias {alias} -> {version}")
        except LoopError as exc:
            base = f"{self.endpoints['registry'].http}/api/v1"
            model = await get_json(self.http, f"{base}/registered-models/{self.plan.model}")
            audit = await get_json(self.http, f"{base}/audit-entries", model_name=self.plan.model)
            raise LoopError(f"{exc}; the registry says: {model}; audit: {audit}") from None
