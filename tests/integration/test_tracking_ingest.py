"""tracking.events ingest on real Tansu + PostgreSQL: runs created on first sight, duplicates
(same ce_id, or the same observations under a new id) applied once, bad events dead-lettered."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from aiokafka import AIOKafkaProducer
from google.protobuf.timestamp_pb2 import Timestamp
from support.kafka import fast_kafka, read_topic
from support.services import fast_settings, running
from support.waiting import wait_until

from gyre_common.bus import Publisher
from gyre_common.runner import ServiceRunner
from gyre_common.settings import KafkaSettings
from gyre_common.topics import TRACKING_EVENTS, dead_letter_topic, full_name
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2 as pb
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2_grpc as pb_grpc
from gyre_tracking.bootstrap import bootstrap
from gyre_tracking.consumers import TrackingEventsAdapter
from gyre_tracking.service import SPEC
from gyre_tracking.settings import TrackingSettings

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def ts(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(T0 + timedelta(seconds=seconds))
    return stamp


@pytest.fixture
def kafka(bootstrap_servers: str, unique: str) -> KafkaSettings:
    return fast_kafka(bootstrap_servers, f"t{unique}.")


@pytest.fixture
async def service(kafka: KafkaSettings, database_url: str) -> AsyncIterator[ServiceRunner]:
    settings = fast_settings(TrackingSettings, default_artifact_root="file:///srv/gyre/tracking")
    async with running(SPEC, bootstrap, settings, kafka=kafka, database_url=database_url) as runner:
        yield runner


def trial_event(**changes: object) -> ev.TrackingEvent:
    event = ev.TrackingEvent(
        run_id="r" * 32, experiment_name="gyre/ingest", run_name="trial-0", emitted_at=ts(30),
        metrics=[ev.Metric(key="loss", value=0.8, step=0, timestamp=ts(10)),
                 ev.Metric(key="loss", value=0.4, step=1, timestamp=ts(20)),
                 ev.Metric(key="lr", value=0.1)],  # no timestamp: the event's emitted_at
        params=[ev.Param(key="max_depth", value="5")],
        tags=[ev.Tag(key="gyre.job_id", value="job-1")],
    )
    for name, value in changes.items():
        field = getattr(event, name)
        if hasattr(field, "extend"):
            del field[:]
            field.extend(value)  # type: ignore[call-overload]
        elif hasattr(field, "CopyFrom"):
            field.CopyFrom(value)
        else:
            setattr(event, name, value)
    return event


async def test_ingest_is_idempotent_and_dead_letters_what_cannot_apply(
        service: ServiceRunner, kafka: KafkaSettings) -> None:
    run_id = "r" * 32
    async with Publisher(kafka, service="test") as publisher:
        await publisher.publish(TRACKING_EVENTS, trial_event(), key=run_id, event_id="evt-1")
        await publisher.publish(TRACKING_EVENTS, trial_event(), key=run_id, event_id="evt-1")  # redelivered
        await publisher.publish(TRACKING_EVENTS, trial_event(), key=run_id, event_id="evt-2")  # re-sent, new id
        await publisher.publish(TRACKING_EVENTS, trial_event(params=[ev.Param(key="max_depth", value="9")]),
                                key=run_id, event_id="evt-3")  # param conflict
        await publisher.publish(TRACKING_EVENTS, trial_event(metrics=[ev.Metric(key="../etc", value=1.0)]),
                                key=run_id, event_id="evt-4")  # invalid key
        await publisher.publish(TRACKING_EVENTS, ev.TrackingEvent(
            run_id=run_id, status=ev.RUN_STATUS_FINISHED, end_time=ts(40), emitted_at=ts(41),
            metrics=[ev.Metric(key="holdout_auc", value=0.91, timestamp=ts(39))]), key=run_id, event_id="evt-5")
    # An external producer's JSON event without CloudEvents headers, for a run in the Default experiment.
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        payload = {"runId": "external-run", "emittedAt": "2025-03-01T12:01:00Z",
                   "metrics": [{"key": "score", "value": 3.5, "step": "2"}], "status": "RUN_STATUS_RUNNING"}
        await producer.send_and_wait(full_name(TRACKING_EVENTS, kafka.topic_prefix), json.dumps(payload).encode(),
                                     key=b"external-run")
    finally:
        await producer.stop()

    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = pb_grpc.TrackingServiceStub(channel)

        async def finished() -> bool:
            try:
                run = (await stub.GetRun(pb.GetRunRequest(run_id=run_id))).run
            except grpc.aio.AioRpcError:
                return False
            return run.info.status == ev.RUN_STATUS_FINISHED

        async def external_arrived() -> bool:
            try:
                await stub.GetRun(pb.GetRunRequest(run_id="external-run"))
            except grpc.aio.AioRpcError:
                return False
            return True

        await wait_until(finished, what="the run to finish through events")
        await wait_until(external_arrived, what="the JSON event's run")

        run = (await stub.GetRun(pb.GetRunRequest(run_id=run_id))).run
        experiment = (await stub.GetExperiment(pb.GetExperimentRequest(name="gyre/ingest"))).experiment
        assert run.info.experiment_id == experiment.experiment_id and run.info.run_name == "trial-0"
        # Created on first sight; it started no later than its first measured point.
        assert run.info.start_time == ts(10) and run.info.end_time == ts(40)
        assert {p.key: p.value for p in run.data.params} == {"max_depth": "5"}  # the conflicting event left no trace
        assert {t.key: t.value for t in run.data.tags} == {"gyre.job_id": "job-1", "mlflow.runName": "trial-0"}
        assert {m.key: m.value for m in run.data.metrics} == {"loss": 0.4, "lr": 0.1, "holdout_auc": 0.91}
        history = await stub.GetMetricHistory(pb.GetMetricHistoryRequest(run_id=run_id, key="loss"))
        assert [(m.step, m.value, m.timestamp) for m in history.metrics] == [(0, 0.8, ts(10)), (1, 0.4, ts(20))]
        lr = await stub.GetMetricHistory(pb.GetMetricHistoryRequest(run_id=run_id, key="lr"))
        assert [(m.value, m.timestamp) for m in lr.metrics] == [(0.1, ts(30))]  # stored once, at emitted_at

        external = (await stub.GetRun(pb.GetRunRequest(run_id="external-run"))).run
        assert external.info.experiment_id == "0" and external.info.status == ev.RUN_STATUS_RUNNING
        assert [(m.key, m.value, m.step) for m in external.data.metrics] == [("score", 3.5, 2)]

    dead = await read_topic(kafka, dead_letter_topic("tracking", kafka.topic_prefix), 2, exact=True)
    reasons = {dict(r.headers)["ce_id"].decode(): dict(r.headers)["gyre_dlq_reason"].decode() for r in dead}
    assert reasons == {"evt-3": "param_conflict", "evt-4": "invalid_argument"}
    errors = [dict(r.headers)["gyre_dlq_error"].decode() for r in dead]
    assert any("'max_depth' is '5', attempted '9'" in e for e in errors)
    assert any("'../etc'" in e for e in errors)
    assert ev.TrackingEvent.FromString(dead[0].value).run_id == run_id

    assert service.context is not None
    # The adapter is the batch handler of the ingesting Consumer (the bus keeps it privately).
    handlers = (getattr(task, "_batch_handler", None) for _, task in service.context.tasks)
    ingester = next(h for h in handlers if isinstance(h, TrackingEventsAdapter))
    assert ingester.duplicates == 1 and ingester.rejected == 2 and ingester.applied == 4
