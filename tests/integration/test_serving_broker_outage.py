"""The broker goes away during traffic and comes back: every inference event still arrives.

The test runs its own Tansu (in-memory) on a free port. Requests go on while it is stopped; their
events go to serving's disk spool. Tansu is started again on the same port with its topics
re-created, and every prediction answered after the stop is found on ``inference.events``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import grpc
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from support.kafka import read_all
from support.waiting import wait_until

from gyre_common.artifacts import ArtifactSettings, LocalArtifactStore
from gyre_common.bus import Publisher, ensure_topics
from gyre_common.runner import ServiceRunner
from gyre_common.settings import KafkaSettings, TelemetrySettings
from gyre_common.topics import INFERENCE_EVENTS, REGISTRY_EVENTS
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as pb
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from gyre_serving.bootstrap import bootstrap
from gyre_serving.service import SPEC
from gyre_serving.settings import ServingSettings
from gyre_stack.broker import start_broker
from gyre_stack.ports import free_port

pytestmark = pytest.mark.integration


async def test_every_inference_event_arrives_after_a_broker_outage(tmp_path: Path) -> None:
    port = free_port()
    broker = start_broker(port, tmp_path / "tansu.log")
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix="outage.", linger_ms=1,
                          default_partitions=2, request_timeout_ms=1500, retry_backoff_ms=50)
    x = np.random.default_rng(0).normal(size=(200, 3))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    ref = LocalArtifactStore(tmp_path / "artifacts").put(sio.dumps(model))
    settings = ServingSettings(http_port=0, grpc_port=0, readiness_interval_s=0.1, shutdown_grace_s=3,
                               registry_address="", models=("m",), spool_dir=str(tmp_path / "spool"),
                               event_batch_rows=50)
    runner = ServiceRunner(SPEC, partial(bootstrap, artifacts=ArtifactSettings(root=str(tmp_path / "artifacts"))),
                           settings=settings, kafka=kafka, telemetry_settings=TelemetrySettings())
    await runner.start()
    try:
        assert runner.context is not None
        readiness = runner.context.readiness
        event = events_pb2.RegistryEvent(
            kind=events_pb2.REGISTRY_EVENT_KIND_ALIAS_SET, model_name="m", version=1, alias="production",
            artifact=common_pb2.ArtifactRef(uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size, format="skops"))
        async with Publisher(kafka, service="registry") as publisher:
            async def announced() -> bool:
                await publisher.publish(REGISTRY_EVENTS, event, key="m")
                return readiness.is_ready
            await wait_until(announced, within_s=30, interval_s=0.3, what="model served")

        async with grpc.aio.insecure_channel(f"127.0.0.1:{runner.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)

            async def infer(i: int) -> str:
                request = pb.ModelInferRequest(model_name="m", id=f"r{i}")
                request.inputs.add(name="input-0", datatype="FP64", shape=[1, 3])
                request.raw_input_contents.append(x[i % 200].astype("<f8").tobytes())
                reply = await stub.ModelInfer(request, timeout=5)
                return reply.id

            before = [await infer(i) for i in range(20)]
            await wait_until(lambda: read_ids(kafka, set(before)), within_s=20, what="events before the outage")

            broker.stop()
            # Predictions go on while the broker is away; their events must not be lost.
            during = [await infer(i) for i in range(20, 220)]
            emitter_spooled = await wait_until(lambda: spooled(tmp_path / "spool"), within_s=20,
                                               what="events spooled to disk")
            assert emitter_spooled
            during += [await infer(i) for i in range(220, 260)]

            broker = start_broker(port, tmp_path / "tansu2.log")  # same port; Tansu lost its topics
            await ensure_topics(kafka, [INFERENCE_EVENTS, REGISTRY_EVENTS])
            after = [await infer(i) for i in range(260, 280)]
            wanted = set(during) | set(after)
            found = await wait_until(lambda: read_ids(kafka, wanted), within_s=60, interval_s=0.5,
                                     what="every event of the outage")
            assert wanted <= found
    finally:
        await runner.stop()
        broker.stop()


async def read_ids(kafka: KafkaSettings, wanted: set[str]) -> set[str] | None:
    """The prediction ids on inference.events when all of ``wanted`` are there, else None."""
    seen = set()
    for envelope in await read_all(kafka, INFERENCE_EVENTS, within_s=2):
        assert isinstance(envelope.message, events_pb2.InferenceEvent)
        seen.add(envelope.message.prediction_id)
    return seen if wanted <= seen else None


def spooled(spool_dir: Path) -> bool:
    return any(segment.stat().st_size > 0 for segment in spool_dir.glob("*/*.seg"))
