"""Faults during the closed loop, measured: every service killed, the broker paused, the database stopped.

A private Tansu and a private PostgreSQL (this test pauses and stops them, so it never uses the
session fixtures of tests/conftest.py) carry every service as a real process (tests/support/stack.py).
Model ``chaos`` is trained and served by the first steps of ``gyre_stack.demo``; then, while background
traffic keeps flowing (gRPC ModelInfer calls, JSON feature events from a plain aiokafka producer with
``acks="all"``, star ratings posted to feedback), faults come ONE AT A TIME:

1. each service is SIGKILLed and started again on the ports it reported before;
2. the broker is frozen with SIGSTOP for OUTAGE_S and resumed with SIGCONT;
3. PostgreSQL is stopped (fast mode) for OUTAGE_S and started again on the same port and data.

Every item of traffic is labelled with the phase it was sent in. A phase ends once the fault is
over and the stack is ready again; then the items of that phase must all arrive (features store,
feedback's and monitor's inference tables, feedback's ratings), each exactly once. The table of
what was sent, what arrived, which calls failed and how long recovery took is printed (and copied
into docs/reliability.md). At the end the whole loop of ``gyre_stack.demo`` runs once more on a fresh
model: drift -> one retraining request -> version 2 served.

Run it alone with ``make test-chaos`` (about 2 minutes on 2 cores); docs/reliability.md has a measured run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from support.stack import DRIFT_SHARE, MAX_EVALS, WINDOW_ROWS, Stack

from gyre_common.service import discover_services
from gyre_common.settings import KafkaSettings
from gyre_common.topics import FEATURES_EVENTS, INFERENCE_EVENTS, REGISTRY_EVENTS, TRAINING_EVENTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as oip
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2_grpc as oip_grpc
from gyre_stack import demo
from gyre_stack.broker import Broker, start_broker_on_free_port
from gyre_stack.postgres import Postgres, start_postgres_on_free_port
from gyre_stack.prepare import create_topics

pytestmark = pytest.mark.chaos

#: How long the broker stays frozen and the database stopped: longer than the services' session
#: timeout (3 s) and readiness interval (1 s), so every consumer group and check sees the outage.
OUTAGE_S = 10.0
#: Longest wait for a phase's items to arrive after the stack is ready again.
DRAIN_DEADLINE_S = 90.0
#: Successful inference calls (and acknowledged feature events) wanted before a fault and after it.
WORK_AROUND_FAULT = 20
#: Pace of the background traffic: one call, one feature event per this many seconds (not a wait).
PACE_S = 0.03
#: Every this-many successful predictions get a star rating posted to feedback.
RATE_EVERY = 3
MODEL, VIEW, EVENTS_VIEW = "chaos", "chaos_cancer", "chaos_events"
DATABASE = "gyre_chaos"


# --------------------------------------------------------------------------------------------------
# A private broker and database


@dataclass
class Infra:
    broker: Broker
    postgres: Postgres
    database_url: str


@pytest.fixture
def infra(tmp_path: Path) -> Iterator[Infra]:
    broker = start_broker_on_free_port(tmp_path / "tansu.log")
    # Not under pytest's temp root (0700): as root, PostgreSQL runs as a system user that must enter it.
    folder = Path(tempfile.mkdtemp(prefix="gyre-chaos-postgres-"))
    folder.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    postgres: Postgres | None = None
    try:
        postgres = start_postgres_on_free_port(folder / "data")
        postgres.create_database(DATABASE)
        yield Infra(broker, postgres, postgres.url(DATABASE))
    finally:
        if broker.process.poll() is None:
            os.kill(broker.process.pid, signal.SIGCONT)  # a failed test may leave it frozen
        broker.stop()
        if postgres is not None:
            postgres.destroy()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def stack(infra: Infra, tmp_path: Path) -> Iterator[Stack]:
    # Every window of the run is kept, so the monitor's rows can be counted against what was served.
    started = Stack(infra.broker.bootstrap_servers, f"chaos{uuid.uuid4().hex[:8]}.", infra.database_url,
                    tmp_path / "artifacts", overrides={"monitor": {"KEEP_WINDOWS": "100000"},
                                         # a killed trainer's job is picked up again once its lease lapses
                                         "trainer": {"JOB_LEASE_S": "6"}})
    try:
        yield started
    finally:
        started.stop()


# --------------------------------------------------------------------------------------------------
# Traffic, labelled by phase


CRASH_WINDOW_S = 1.0
"""Serving answers a call before its inference event is durable: the event waits in an in-memory
queue (drained every few milliseconds into the producer, or spooled to disk while the broker is
away). A SIGKILL loses what that queue held, i.e. events of calls answered in the last moments
before the kill; a SIGTERM drains it. The test allows exactly that: a missing event must belong to a
call answered within this many seconds before serving's SIGKILL (docs/reliability.md)."""

@dataclass
class Phase:
    """What one phase sent, what arrived, and how long the stack took to recover."""

    name: str
    features_sent: int = 0
    features_acked: int = 0
    features_failed: int = 0
    infer_ok: int = 0
    infer_failed: int = 0
    feedback_ok: int = 0
    feedback_failed: int = 0
    feedback_errors_5xx: int = 0
    """Refusals with a 5xx other than 503: a client could not tell an outage from a bug."""
    errors: list[str] = field(default_factory=list)
    #: seconds from the start of the fault to every service answering /readyz 200 again
    recovered_s: float | None = None
    #: seconds from recovery to every item of the phase having arrived (None: it never did)
    drained_s: float | None = None
    #: what arrived, filled by Ledger.arrived
    arrived: dict[str, int] = field(default_factory=dict)
    #: prediction ids of successful calls missing from a store, by store (filled by Ledger.arrived)
    missing: dict[str, set[str]] = field(default_factory=dict)
    #: prediction ids answered within CRASH_WINDOW_S before serving was SIGKILLed in this phase
    crash_window: set[str] = field(default_factory=set)

    def excused(self, store: str) -> set[str]:
        """Predictions missing from ``store`` whose events serving held in memory when it was killed."""
        return self.missing.get(store, set()) & self.crash_window

    @property
    def slug(self) -> str:
        """The name as it goes into ids (prediction and feedback ids allow no spaces)."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    def error(self, text: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(text)


class Traffic:
    """Background inference calls, feature events and feedback posts; every item keyed by its phase."""

    def __init__(self, stack: Stack, loop: Any) -> None:
        self.stack, self.loop = stack, loop
        self.phase = Phase("baseline")
        self.phases = [self.phase]
        self.events: dict[tuple[str, datetime], Phase] = {}  # acknowledged feature events
        self.unacked: set[tuple[str, datetime]] = set()      # sent, no acknowledgement (failed or pending)
        self.predictions: dict[str, Phase] = {}             # prediction ids of successful calls
        self.answered_at: dict[str, float] = {}             # ... and when their answer came (monotonic)
        self.feedback: dict[str, Phase] = {}                # accepted feedback ids
        self.pending_feedback: asyncio.Queue[tuple[str, Phase]] = asyncio.Queue()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Future[Any]] = set()
        self._n = 0

    def next_phase(self, name: str) -> Phase:
        self.phase = Phase(name)
        self.phases.append(self.phase)
        return self.phase

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.stack.bootstrap_servers, acks="all",
                                          enable_idempotence=False)
        await self._producer.start()
        # Reconnect quickly once a killed serving listens again (gRPC's default backoff reaches 120 s).
        self._channel = grpc.aio.insecure_channel(self.stack.endpoints["serving"].grpc, options=[
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500)])
        self._stub = oip_grpc.GRPCInferenceServiceStub(self._channel)
        self._http = httpx.AsyncClient(timeout=10)
        self._tasks = [asyncio.create_task(run()) for run in (self._infer, self._features, self._rate)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        if self._sends:
            await asyncio.wait(self._sends, timeout=60)
        await self._producer.stop()
        await self._channel.close()
        await self._http.aclose()

    async def _infer(self) -> None:
        rows = self.loop.data
        while not self._stop.is_set():
            phase, i = self.phase, self._n
            self._n += 1
            prediction_id = f"c-{phase.slug}-{i}"
            request = self.loop.infer_request(rows[i % len(rows):i % len(rows) + 1], prediction_id)
            try:
                reply = await self._stub.ModelInfer(request, timeout=5)
                assert reply.id == prediction_id, reply.id
                phase.infer_ok += 1
                self.predictions[prediction_id] = phase
                self.answered_at[prediction_id] = time.monotonic()
                if phase.infer_ok % RATE_EVERY == 0:
                    self.pending_feedback.put_nowait((prediction_id, phase))
            except grpc.RpcError as exc:
                phase.infer_failed += 1
                phase.error(f"infer {exc.code()}: {exc.details()}")  # type: ignore[attr-defined]
            await asyncio.sleep(PACE_S)

    async def _features(self) -> None:
        topic = self.stack.endpoints.topic(FEATURES_EVENTS)
        n = 0
        while not self._stop.is_set():
            phase = self.phase
            entity, moment = f"s-{phase.slug}-{n}", demo.T0 + timedelta(seconds=n)
            n += 1
            event = {"featureView": EVENTS_VIEW, "entityId": entity, "eventTime": demo.rfc3339(moment),
                     "values": {"x": {"doubleValue": float(n)}}, "source": "chaos"}
            key = (entity, moment)
            self.unacked.add(key)
            phase.features_sent += 1
            try:
                sent = await self._producer.send(topic, json.dumps(event).encode(), key=entity.encode(),
                                                  headers=[("content-type", b"application/json")])
            except Exception as exc:  # the producer refused at once (buffer full, closed)
                phase.features_failed += 1
                phase.error(f"feature send {exc!r}")
                continue
            self._sends.add(sent)
            sent.add_done_callback(lambda f, key=key, phase=phase: self._acked(f, key, phase))
            await asyncio.sleep(PACE_S)

    def _acked(self, sent: asyncio.Future[Any], key: tuple[str, datetime], phase: Phase) -> None:
        self._sends.discard(sent)
        if sent.cancelled() or sent.exception() is not None:
            phase.features_failed += 1
            phase.error(f"feature ack {sent.exception()!r}" if not sent.cancelled() else "feature send cancelled")
            return
        phase.features_acked += 1
        self.unacked.discard(key)
        self.events[key] = phase

    async def _rate(self) -> None:
        url = f"{self.stack.endpoints['feedback'].http}/api/v1/feedback"
        while not (self._stop.is_set() and self.pending_feedback.empty()):
            try:
                prediction_id, _ = await asyncio.wait_for(self.pending_feedback.get(), timeout=0.5)
            except TimeoutError:
                continue
            phase = self.phase  # feedback belongs to the phase it is posted in
            feedback_id = f"fb-{prediction_id}"
            try:
                response = await self._http.post(url, json={"prediction_id": prediction_id, "stars": 5,
                                                            "author": "chaos", "feedback_id": feedback_id})
                ok = 200 <= response.status_code < 300
                detail = f"{response.status_code} {response.text[:200]}"
                if response.status_code >= 500 and response.status_code != 503:
                    phase.feedback_errors_5xx += 1
            except httpx.HTTPError as exc:
                ok, detail = False, repr(exc)
            if ok:
                phase.feedback_ok += 1
                self.feedback[feedback_id] = phase
            else:
                phase.feedback_failed += 1
                phase.error(f"feedback {detail}")


# --------------------------------------------------------------------------------------------------
# What arrived, read from each service's own tables (read-only)


class Ledger:
    """Read-only queries on the services' schemas: what the stack stored of the traffic."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(self.database_url)
        try:
            return list(await connection.fetch(query, *args))
        finally:
            await connection.close()

    async def features(self, entities: list[str]) -> list[tuple[str, datetime]]:
        rows = await self._fetch("SELECT entity_id, event_time FROM features.offline_events "
                                 "WHERE feature_view = $1 AND entity_id = ANY($2::text[])", EVENTS_VIEW, entities)
        return [(r["entity_id"], r["event_time"]) for r in rows]

    async def feedback_predictions(self, ids: list[str]) -> list[str]:
        rows = await self._fetch("SELECT prediction_id FROM feedback.predictions WHERE prediction_id = ANY($1::text[])",
                                 ids)
        return [r["prediction_id"] for r in rows]

    async def monitor_predictions(self, ids: list[str]) -> list[str]:
        rows = await self._fetch("SELECT prediction_id FROM monitor.window_rows WHERE model_name = $1 "
                                 "AND prediction_id = ANY($2::text[])", MODEL, ids)
        return [r["prediction_id"] for r in rows]

    async def feedback(self, ids: list[str]) -> list[str]:
        rows = await self._fetch("SELECT feedback_id FROM feedback.feedback WHERE feedback_id = ANY($1::text[])", ids)
        return [r["feedback_id"] for r in rows]

    async def arrived(self, traffic: Traffic, phase: Phase) -> dict[str, int]:
        """Counts of the phase's items found in the stores (each store counted on its own)."""
        events = [k for k, p in traffic.events.items() if p is phase]
        predictions = [k for k, p in traffic.predictions.items() if p is phase]
        feedback = [k for k, p in traffic.feedback.items() if p is phase]
        stored = set(await self.features([e for e, _ in events]))
        in_feedback = set(await self.feedback_predictions(predictions))
        in_monitor = set(await self.monitor_predictions(predictions))
        phase.missing = {"feedback_predictions": set(predictions) - in_feedback,
                         "monitor_predictions": set(predictions) - in_monitor}
        return {"features": len(stored & set(events)),
                "feedback_predictions": len(in_feedback),
                "monitor_predictions": len(in_monitor),
                "feedback": len(set(await self.feedback(feedback)))}

    async def monitor_counts(self) -> tuple[int, int]:
        """(rows the monitor's windows and open cursor counted, distinct prediction rows it holds) for MODEL."""
        counted = await self._fetch(
            "SELECT (SELECT coalesce(sum(row_count), 0) FROM monitor.windows WHERE model_name = $1) "
            "+ (SELECT coalesce(sum(row_count), 0) FROM monitor.window_cursors WHERE model_name = $1) AS n", MODEL)
        held = await self._fetch("SELECT count(*) AS n FROM monitor.window_rows WHERE model_name = $1", MODEL)
        return int(counted[0]["n"]), int(held[0]["n"])


def expected(traffic: Traffic, phase: Phase) -> dict[str, int]:
    """What must arrive: everything acknowledged, less only the inference events a SIGKILLed serving
    still held in memory (calls answered within CRASH_WINDOW_S of the kill; see CRASH_WINDOW_S)."""
    return {"features": phase.features_acked,
            "feedback_predictions": phase.infer_ok - len(phase.excused("feedback_predictions")),
            "monitor_predictions": phase.infer_ok - len(phase.excused("monitor_predictions")),
            "feedback": phase.feedback_ok}


# --------------------------------------------------------------------------------------------------
# Faults


async def wait_for(condition: Any, within_s: float, what: str) -> None:
    """Poll the async ``condition`` until true (a condition, never a fixed sleep)."""
    deadline = time.monotonic() + within_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


async def work_done(traffic: Traffic, phase: Phase, what: str) -> None:
    """Some traffic has succeeded in this phase since ``start`` (inference calls and acknowledged events)."""
    calls, events = phase.infer_ok, phase.features_acked

    async def enough() -> bool:
        return phase.infer_ok >= calls + WORK_AROUND_FAULT and phase.features_acked >= events + WORK_AROUND_FAULT
    await wait_for(enough, 120, f"{WORK_AROUND_FAULT} calls and feature events {what} ({phase.name})")


async def serving_answers(stack: Stack) -> None:
    """Serving has the model loaded again (a restarted serving loads it from the registry)."""
    async with grpc.aio.insecure_channel(stack.endpoints["serving"].grpc) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)

        async def ready() -> bool:
            try:
                return bool((await stub.ModelReady(oip.ModelReadyRequest(name=MODEL), timeout=2)).ready)
            except grpc.RpcError:
                return False
        await wait_for(ready, 120, "serving to load the model again")


async def kill_and_restart(stack: Stack, name: str, traffic: Traffic) -> None:
    if name == "serving":
        killed = time.monotonic()
        phase = traffic.phase
        stack.kill(name)
        phase.crash_window = {prediction for prediction, answered in list(traffic.answered_at.items())
                              if traffic.predictions[prediction] is phase and killed - answered <= CRASH_WINDOW_S}
    else:
        stack.kill(name)
    await asyncio.to_thread(stack.restart, name)
    if name == "serving":
        await serving_answers(stack)


async def kill_trainer_mid_job(stack: Stack, ledger: Ledger, outcome: dict[str, Any], traffic: Traffic) -> None:
    """Ask for a training of MODEL, kill the trainer after its first trial, restart it, wait for the job's end."""
    request_id = f"chaos-train-{uuid.uuid4().hex[:8]}"
    command = [*demo.gyre_cli(), "--trainer", stack.endpoints["trainer"].grpc, "train", "--model", MODEL,
               "--feature-view", VIEW, "--label", "target", "--start", demo.rfc3339(demo.T0),
               "--end", demo.rfc3339(demo.T0 + timedelta(days=1)), "--max-evals", "20", "--request-id", request_id]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, f"gyre train: {err.decode()} {out.decode()}"

    async def job() -> list[asyncpg.Record]:
        return await ledger._fetch("SELECT status, trials_completed FROM trainer.jobs WHERE request_id = $1",
                                   request_id)

    async def training() -> bool:
        rows = await job()
        return bool(rows) and rows[0]["status"] == "running" and rows[0]["trials_completed"] >= 1
    await wait_for(training, 120, f"job of {request_id} to complete a trial")
    await kill_and_restart(stack, "trainer", traffic)

    async def ended() -> bool:
        rows = await job()
        outcome.update(request_id=request_id, jobs=len(rows), status=rows[0]["status"] if rows else None)
        return bool(rows) and rows[0]["status"] in ("succeeded", "failed")
    await wait_for(ended, 180, f"job of {request_id} to end after the trainer's restart")


async def pause_broker(broker: Broker) -> None:
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(OUTAGE_S)  # the outage itself: a deliberate duration, not a wait
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)


async def stop_postgres(postgres: Postgres) -> None:
    await asyncio.to_thread(postgres.stop)
    assert not await asyncio.to_thread(postgres.running)
    try:
        await asyncio.sleep(OUTAGE_S)  # the outage itself: a deliberate duration, not a wait
    finally:
        await asyncio.to_thread(postgres.start)


async def drain(ledger: Ledger, traffic: Traffic, phase: Phase) -> None:
    """Wait until every item of ``phase`` arrived; record how long that took (None if never)."""
    start = time.monotonic()
    # Acknowledgements still in flight are part of the phase: wait for them first.
    await wait_for(lambda: _no_pending(phase), DRAIN_DEADLINE_S, "pending feature acknowledgements")

    async def arrived() -> bool:
        phase.arrived = await ledger.arrived(traffic, phase)
        return phase.arrived == expected(traffic, phase)
    try:
        await wait_for(arrived, DRAIN_DEADLINE_S, f"the items of phase {phase.name}")
        phase.drained_s = time.monotonic() - start
    except AssertionError:
        phase.drained_s = None


async def _no_pending(phase: Phase) -> bool:
    return phase.features_acked + phase.features_failed >= phase.features_sent


def table(phases: list[Phase]) -> str:
    head = ("| phase | features acked / sent (failed) | stored | inference ok (failed) | in feedback | in monitor "
            "| feedback accepted (failed) | stored | ready again (s) | drained (s) |")
    lines = [head, "|" + "---|" * 10]
    for p in phases:
        a = p.arrived
        lines.append(
            f"| {p.name} | {p.features_acked} / {p.features_sent} ({p.features_failed}) | {a.get('features', '-')} "
            f"| {p.infer_ok} ({p.infer_failed}) | {a.get('feedback_predictions', '-')} "
            f"| {a.get('monitor_predictions', '-')} | {p.feedback_ok} ({p.feedback_failed}) | {a.get('feedback', '-')} "
            f"| {'-' if p.recovered_s is None else f'{p.recovered_s:.1f}'} "
            f"| {'never' if p.drained_s is None else f'{p.drained_s:.1f}'} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The test


async def serve_model(stack: Stack, clock: Any) -> Any:
    """Steps a-c of gyre_stack.demo for model MODEL (features, training, served v1); the demo's Loop."""
    endpoints = stack.endpoints
    plan = demo.Plan(model=MODEL, feature_view=VIEW, window_rows=WINDOW_ROWS, drifted=(), max_evals=MAX_EVALS,
                     deadline_s=90.0)
    topics = demo.TopicLog(endpoints.bootstrap_servers, endpoints.topic_prefix, {
        TRAINING_EVENTS: ev.TrainingEvent, REGISTRY_EVENTS: ev.RegistryEvent,
        INFERENCE_EVENTS: ev.InferenceEvent})
    await topics.start()
    try:
        async with httpx.AsyncClient(timeout=30) as http, grpc.aio.insecure_channel(endpoints["serving"].grpc) as ch:
            loop = demo.Loop(endpoints, plan, clock, http, topics, oip_grpc.GRPCInferenceServiceStub(ch),
                             demo.gyre_cli())
            await loop.features()
            await loop.train()
            await loop.serving()
            view = {"name": EVENTS_VIEW, "entity": "sensor", "ttl_seconds": 0, "description": "chaos test events",
                    "features": [{"name": "x", "type": "float"}]}
            response = await http.post(f"{endpoints['features'].http}/api/v1/feature-views", json=view)
            assert response.status_code in (200, 201), response.text
    finally:
        await topics.stop()
    return loop


async def test_faults(infra: Infra, stack: Stack) -> None:
    kafka = KafkaSettings(bootstrap_servers=infra.broker.bootstrap_servers, topic_prefix=stack.prefix,
                          default_partitions=2)
    await create_topics(kafka, discover_services())
    clock = demo.Clock()
    ledger = Ledger(infra.database_url)
    traffic: Traffic | None = None
    try:
        stack.start()
        await stack.wait_ready()
        clock(f"all {len(demo.SERVICES)} services ready")
        loop = await serve_model(stack, clock)
        traffic = Traffic(stack, loop)
        await traffic.start()
        await work_done(traffic, traffic.phase, "at baseline")

        trained: dict[str, Any] = {}
        faults: list[tuple[str, Any]] = [
            (f"kill {name}",
             lambda name=name: kill_trainer_mid_job(stack, ledger, trained, traffic) if name == "trainer"
             else kill_and_restart(stack, name, traffic)) for name in demo.SERVICES]
        faults += [(f"broker paused {OUTAGE_S:.0f} s", lambda: pause_broker(infra.broker)),
                   (f"postgres stopped {OUTAGE_S:.0f} s", lambda: stop_postgres(infra.postgres))]
        for name, inject in faults:
            ended = traffic.phase
            phase = traffic.next_phase(name)
            await drain(ledger, traffic, ended)
            clock(f"phase {ended.name}: drained in {ended.drained_s}s; {ended.arrived} of {expected(traffic, ended)}"
                  + (f"; {len(ended.crash_window)} calls answered within {CRASH_WINDOW_S:.0f} s before the kill, "
                     f"{len(ended.excused('monitor_predictions'))} of their events lost" if ended.crash_window else ""))
            await work_done(traffic, phase, "before the fault")
            start = time.monotonic()
            await inject()
            await stack.wait_ready()
            phase.recovered_s = time.monotonic() - start
            clock(f"{name}: ready again after {phase.recovered_s:.1f}s")
            await work_done(traffic, phase, "after the fault")
        await traffic.stop()
        await drain(ledger, traffic, traffic.phase)
        clock("traffic stopped; every phase:\n" + table(traffic.phases))
    except BaseException:
        print(stack.tails())
        if traffic is not None:
            print(table(traffic.phases))
        raise

    # What arrived, phase by phase: nothing lost, nothing twice (each store keys its rows by the
    # natural id, so "twice" shows as a count the services themselves derived, checked below).
    lost = {p.name: {k: (p.arrived.get(k), v) for k, v in expected(traffic, p).items() if p.arrived.get(k) != v}
            for p in traffic.phases}
    lost = {name: diff for name, diff in lost.items() if diff}
    counted, held = await ledger.monitor_counts()
    jobs = await ledger._fetch("SELECT request_id, count(*) AS n FROM trainer.jobs GROUP BY request_id "
                               "HAVING count(*) > 1")
    # Serving never blocks on the broker or the database, and no other service's crash reaches its
    # callers: only killing serving itself may fail calls.
    failed_calls = {p.name: (p.infer_failed, p.errors) for p in traffic.phases
                    if p.infer_failed and p.name != "kill serving"}
    failed_sends = {p.name: (p.features_failed, p.errors) for p in traffic.phases if p.features_failed}
    # Feedback answers for itself: only its own crash and the database's absence may refuse a rating.
    refused = {p.name: (p.feedback_failed, p.errors) for p in traffic.phases
               if p.feedback_failed and p.name not in ("kill feedback", f"postgres stopped {OUTAGE_S:.0f} s")}
    print(table(traffic.phases))
    print(f"training interrupted by the trainer's crash: {trained}")
    for p in traffic.phases:
        if p.errors:
            print(f"{p.name}: first errors {p.errors}")

    # The loop still closes on a fresh model: drift -> one retraining request -> v2 served.
    plan = demo.Plan(model="cancer", feature_view="breast_cancer", window_rows=WINDOW_ROWS,
                     drifted=demo.drifted_features(DRIFT_SHARE, demo.feature_names()), max_evals=MAX_EVALS,
                     deadline_s=90.0)
    try:
        summary = await demo.run_loop(stack.endpoints, plan, clock)
    except BaseException:
        print(stack.tails())
        raise
    clock(f"after every fault the loop closed again: v2 promoted by {summary['promotion']}")

    assert not jobs, f"training requests applied twice: {jobs}"
    assert trained.get("status") == "succeeded" and trained.get("jobs") == 1, \
        f"the training interrupted by the trainer's crash: {trained}"
    assert counted == held, f"the monitor counted {counted} rows for {held} distinct predictions"
    assert not failed_sends, f"feature events not acknowledged: {failed_sends}"
    assert not failed_calls, f"inference calls failed while another component was away: {failed_calls}"
    assert not refused, f"feedback refused while feedback and its database were up: {refused}"
    # A refusal during an outage says "retry later" (503), never a server error.
    not_503 = {p.name: p.feedback_errors_5xx for p in traffic.phases if p.feedback_errors_5xx}
    assert not not_503, f"feedback answered 5xx other than 503: {not_503}"
    assert not lost, f"items lost or applied twice, per phase (arrived, expected): {lost}"
    assert all(p.drained_s is not None for p in traffic.phases)

