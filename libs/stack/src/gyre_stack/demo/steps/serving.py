"""c. Infer: version 1 answers Open Inference Protocol calls over gRPC and REST, each traced to its event."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import numpy as np

from gyre_common.topics import INFERENCE_EVENTS
from gyre_stack.demo.checks import LoopError, poll
from gyre_stack.demo.data import FEEDBACK_ROWS

if TYPE_CHECKING:
    from gyre_stack.demo.loop import Loop


async def run(loop: Loop) -> None:
    """ModelReady, one call over gRPC, one over REST and a batch of FEEDBACK_ROWS rows; the ids come back as
    prediction ids (``<id>:<i>`` in a batch) and their InferenceEvents appear on inference.events."""
    plan = loop.plan
    await poll(lambda: loop.model_ready(1), within_s=plan.deadline_s, what="ModelReady v1 over gRPC")
    loop.say("c. serving: ModelReady(v1) over gRPC")
    grpc_id = f"demo-grpc-{uuid.uuid4().hex[:8]}"
    version, ids, _ = await loop.infer_grpc(loop.data[:1], grpc_id)
    if version != 1 or ids != [grpc_id]:
        raise LoopError(f"gRPC ModelInfer answered version {version}, prediction ids {ids}")
    rest_id = f"demo-rest-{uuid.uuid4().hex[:8]}"
    inputs = [{"name": n, "shape": [1], "datatype": "FP64", "data": [float(loop.data[1, j])]}
              for j, n in enumerate(loop.names)]
    body = {"id": rest_id, "inputs": inputs}
    response = await loop.http.post(f"{loop.endpoints['serving'].http}/v2/models/{plan.model}/infer", json=body)
    if response.status_code != 200:
        raise LoopError(f"REST infer answered {response.status_code}: {response.text}")
    answer = response.json()
    if answer["id"] != rest_id or str(answer["model_version"]) != "1":
        raise LoopError(f"REST infer answered id {answer['id']!r}, version {answer['model_version']!r}")
    loop.served_v1_rows += 1
    batch_id = f"demo-batch-{uuid.uuid4().hex[:8]}"
    rows = np.arange(2, 2 + FEEDBACK_ROWS)
    _, batch_ids, labels = await loop.infer_grpc(loop.data[rows], batch_id)
    if batch_ids != [f"{batch_id}:{i}" for i in range(FEEDBACK_ROWS)]:
        raise LoopError(f"batch prediction ids are {batch_ids}")
    loop.summary["feedback_rows"] = (batch_ids, labels, [int(loop.target[i]) for i in rows])
    loop.say(f"c. serving: ModelInfer over gRPC (id {grpc_id}) and REST (id {rest_id}) by version 1, "
             f"and a batch of {FEEDBACK_ROWS} rows ({batch_id}:0..{FEEDBACK_ROWS - 1})")
    wanted = {grpc_id, rest_id, *batch_ids}
    await loop.topics.wait(INFERENCE_EVENTS, lambda m: m.prediction_id in wanted and m.model_version == 1,
                           count=len(wanted), within_s=plan.deadline_s, what="the InferenceEvents of those ids")
    loop.say(f"c. inference.events: {len(wanted)} InferenceEvents with exactly those prediction ids")
