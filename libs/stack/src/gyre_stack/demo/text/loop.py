"""The state the text story's steps share, and its calls to serving: BYTES over gRPC and REST.

The registry, drift-window and promotion helpers of the tabular story take a
:class:`gyre_stack.demo.Loop`; :attr:`TextLoop.base` is one on the same endpoints, plan, clients and
summary, so those helpers serve both stories unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as oip
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2_grpc as oip_grpc
from gyre_stack.demo.checks import LoopError
from gyre_stack.demo.endpoints import Endpoints
from gyre_stack.demo.loop import Loop
from gyre_stack.demo.plan import Plan
from gyre_stack.demo.text.data import TextCorpus, corpus
from gyre_stack.demo.text.plan import TEXT_FEATURE
from gyre_stack.demo.topiclog import TopicLog

_LENGTH = struct.Struct("<I")


def raw_bytes(texts: Sequence[str]) -> bytes:
    """Texts as one BYTES tensor in raw form, as Triton and ``tritonclient`` send it: each element's
    UTF-8 bytes prefixed with their length (4-byte little-endian unsigned)."""
    parts = []
    for text in texts:
        data = text.encode()
        parts.append(_LENGTH.pack(len(data)) + data)
    return b"".join(parts)


def split_raw_bytes(raw: bytes) -> list[bytes]:
    """The elements of a raw BYTES tensor (inverse of :func:`raw_bytes`).

    Raises:
        LoopError: a length prefix runs past the end.
    """
    out, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise LoopError(f"a raw BYTES output ends inside a length prefix at byte {at}")
        (size,) = _LENGTH.unpack_from(raw, at)
        if at + 4 + size > len(raw):
            raise LoopError(f"a raw BYTES output element of {size} bytes runs past the end at byte {at}")
        out.append(raw[at + 4:at + 4 + size])
        at += 4 + size
    return out


@dataclass
class Answer:
    """One ModelInfer answer: version, prediction ids (one per row), predicted topics and probabilities."""

    version: int
    ids: list[str]
    labels: list[str]
    proba: np.ndarray


@dataclass
class TextLoop:
    """State shared by the text story's steps (:func:`gyre_stack.demo.text.story.run_text_loop`)."""

    endpoints: Endpoints
    plan: Plan
    say: Callable[[str], None]
    http: httpx.AsyncClient
    topics: TopicLog
    infer: oip_grpc.GRPCInferenceServiceStub
    gyre_cli: Sequence[str]
    data: TextCorpus = field(default_factory=corpus)
    #: Rows version 1 has answered so far (they fill the monitor's first window).
    served_v1_rows: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    base: Loop = field(init=False)

    def __post_init__(self) -> None:
        # The tabular Loop without its dataset: only its registry, alias and summary helpers are used.
        self.base = Loop(self.endpoints, self.plan, self.say, self.http, self.topics, self.infer, self.gyre_cli,
                         names=[TEXT_FEATURE], data=np.empty((0, 1)), target=np.empty(0), summary=self.summary)

    # ---- serving (Open Inference Protocol over gRPC, BYTES in)

    def infer_request(self, texts: Sequence[str], request_id: str = "", *, entity_id: str = "",
                      event_time: str = "") -> oip.ModelInferRequest:
        """A ModelInfer request of the plan's model: the texts as one BYTES input (raw, as tritonclient
        sends it), with the ``entity_id`` / ``event_time`` parameters when given."""
        request = oip.ModelInferRequest(model_name=self.plan.model, id=request_id)
        request.inputs.add(name=TEXT_FEATURE, datatype="BYTES", shape=[len(texts)])
        request.raw_input_contents.append(raw_bytes(texts))
        if entity_id:
            request.parameters["entity_id"].string_param = entity_id
        if event_time:
            request.parameters["event_time"].string_param = event_time
        return request

    async def infer_grpc(self, texts: Sequence[str], request_id: str = "", *, entity_id: str = "",
                         event_time: str = "") -> Answer:
        """One gRPC ModelInfer call.

        Raises:
            grpc.RpcError: the call failed (60 s timeout).
            LoopError: the response id is not ``request_id``, or its outputs are not a classifier's.
        """
        reply = await self.infer.ModelInfer(self.infer_request(texts, request_id, entity_id=entity_id,
                                                               event_time=event_time), timeout=60)
        if request_id and reply.id != request_id:
            raise LoopError(f"response id {reply.id!r} is not the request id {request_id!r}")
        ids = reply.parameters["prediction_ids"].string_param.split(",") if len(texts) > 1 else [reply.id]
        outputs = {o.name: (i, o) for i, o in enumerate(reply.outputs)}
        if "predict" not in outputs or "proba" not in outputs:
            raise LoopError(f"the answer has outputs {sorted(outputs)}, expected predict and proba")
        index, predict = outputs["predict"]
        if reply.raw_output_contents:
            labels = [b.decode() for b in split_raw_bytes(reply.raw_output_contents[index])]
            p_index, proba_out = outputs["proba"]
            proba = np.frombuffer(reply.raw_output_contents[p_index], dtype="<f4")
        else:
            labels = [b.decode() for b in predict.contents.bytes_contents]
            proba_out = outputs["proba"][1]
            proba = np.asarray(proba_out.contents.fp32_contents, dtype=np.float32)
        proba = proba.reshape([int(d) for d in proba_out.shape])
        if len(labels) != len(texts) or len(proba) != len(texts):
            raise LoopError(f"{len(texts)} texts answered with {len(labels)} labels and {len(proba)} probability rows")
        version = int(reply.model_version)
        if version == 1:
            self.served_v1_rows += len(texts)
        return Answer(version, ids, labels, proba)

    async def infer_chunks(self, texts: Sequence[str], chunk: int = 100) -> list[Answer]:
        """The texts in calls of at most ``chunk`` rows each (serving batches them anyway)."""
        return [await self.infer_grpc(texts[i:i + chunk]) for i in range(0, len(texts), chunk)]

    async def model_ready(self, version: int) -> bool:
        """Whether serving says ``version`` of the plan's model is ready (gRPC ModelReady)."""
        return await self.base.model_ready(version)
