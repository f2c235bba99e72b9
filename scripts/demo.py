"""The closed loop of Gyre, step by step, against running services (``make demo``).

The same story runs in two places:

* ``make demo`` (``python scripts/demo.py``) plays it against the stack that ``make up`` started,
  finding every service where its settings say (defaults, or the ``GYRE_*`` variables of this
  shell, as the stack reads them) and printing each step with its timing;
* ``tests/e2e/test_closed_loop.py`` starts a private stack (Tansu, PostgreSQL, every service as a
  subprocess on free ports) and runs :func:`run_loop` with assertions on every hop.

The story (docs/demo.md tells it in prose): a producer with nothing but aiokafka publishes the
breast-cancer dataset as JSON feature events; ``gyre train`` asks for a model; the trainer's
trials land in tracking and the best model in the registry, which promotes it to ``production``;
serving loads it and answers Open Inference Protocol calls over gRPC and REST; feedback is given
on some predictions; unshifted traffic raises nothing, traffic with a few features shifted by
5 standard deviations makes the monitor name exactly those features and ask (once) for
retraining; the trainer answers with version 2, which serving swaps in while a client keeps
calling; the dashboard shows all of it.

Every wait polls a condition until a deadline; a step that does not happen in time fails with
what was expected and what was seen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from google.protobuf.message import Message
from sklearn.datasets import load_breast_cancer

from gyre_common.settings import KafkaSettings, ServiceSettings, load_settings
from gyre_common.topics import (
    FEATURES_EVENTS,
    FEEDBACK_EVENTS,
    INFERENCE_EVENTS,
    MONITOR_ALERTS,
    REGISTRY_EVENTS,
    TRAINING_EVENTS,
    TRAINING_REQUESTS,
    full_name,
)
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as oip
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2_grpc as oip_grpc

T = TypeVar("T")

#: Services the loop needs, in the order they are checked; the dashboard comes last.
SERVICES = ("tracking", "features", "trainer", "registry", "serving", "feedback", "monitor", "dashboard")

#: First event time of the dataset (UTC); row i is stamped T0 + i minutes, so 569 rows span ~9.5 h.
T0 = datetime(2025, 1, 1, tzinfo=UTC)

#: Standard deviations added to the drifted features.
SHIFT_STD = 5.0

_ENDED = (ev.TRAINING_STATUS_SUCCEEDED, ev.TRAINING_STATUS_FAILED)

#: Rows of the feedback batch; its corrected labels are the dataset's true targets.
FEEDBACK_ROWS = 10


class LoopError(AssertionError):
    """A step of the loop did not happen as expected; the message says what was expected and seen."""


# --------------------------------------------------------------------------------------------------
# Where things are


@dataclass(frozen=True)
class Service:
    """One running service: base URL of its HTTP API and host:port of its gRPC API."""

    name: str
    http: str
    grpc: str


@dataclass(frozen=True)
class Endpoints:
    """Every address the loop talks to."""

    bootstrap_servers: str
    topic_prefix: str
    services: dict[str, Service]

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def topic(self, base: str) -> str:
        return full_name(base, self.topic_prefix)

    @classmethod
    def from_env(cls) -> Endpoints:
        """The addresses `make up` uses: each service's settings from this environment (defaults
        otherwise), on loopback; the broker and prefix from ``GYRE_KAFKA_*``."""
        from gyre_common.service import discover_services

        specs = {spec.name: spec for spec in discover_services()}
        missing = [name for name in SERVICES if name not in specs]
        if missing:
            raise LoopError(f"services not installed: {', '.join(missing)} (run `make install`)")
        services = {}
        for name in SERVICES:
            settings: ServiceSettings = load_settings(specs[name].settings)
            services[name] = Service(name, f"http://127.0.0.1:{settings.http_port}",
                                     f"127.0.0.1:{settings.grpc_port}")
        kafka = load_settings(KafkaSettings)
        return cls(kafka.bootstrap_servers, kafka.topic_prefix, services)


@dataclass(frozen=True)
class Plan:
    """What the loop does: names, window of the training data, sizes of the traffic.

    Attributes:
        model: registered model name (unique per run, so runs never share state).
        feature_view: feature view the rows go to.
        window_rows: predictions per monitor window (the monitor's ``window_size``).
        drifted: features shifted by ``SHIFT_STD`` standard deviations in the drifted traffic.
        max_evals: trials of the first training (the retraining uses the trainer's default, so
            give the same number to get the same search on the same data).
        drift_windows: windows of drifted traffic sent (more than one shows the debounce).
        deadline_s: longest wait for any one step.
        experiment_prefix: the trainer's tracking experiment prefix (its ``experiment_prefix`` setting).
    """

    model: str
    feature_view: str
    window_rows: int
    drifted: tuple[str, ...]
    max_evals: int
    drift_windows: int = 2
    deadline_s: float = 120.0
    experiment_prefix: str = "gyre/"


def feature_names() -> list[str]:
    """The dataset's 30 feature names as Gyre names (lowercase, underscores)."""
    return [re.sub(r"[^a-z0-9]+", "_", str(n).lower()).strip("_") for n in load_breast_cancer().feature_names]


def drifted_features(drift_share: float, names: Sequence[str]) -> tuple[str, ...]:
    """The fewest features whose shift makes a window drift at ``drift_share`` (evenly spread)."""
    count = max(1, math.ceil(drift_share * len(names) - 1e-9))
    step = len(names) / count
    return tuple(names[int(i * step)] for i in range(count))


# --------------------------------------------------------------------------------------------------
# Small helpers


class Clock:
    """Prints steps with the time since the start."""

    def __init__(self, out: Callable[[str], None] = print) -> None:
        self.start = time.monotonic()
        self.out = out

    def __call__(self, message: str) -> None:
        self.out(f"[{time.monotonic() - self.start:6.1f}s] {message}")


async def poll(check: Callable[[], Awaitable[T | None]], *, within_s: float, what: str,
               every_s: float = 0.2) -> T:
    """``await check()`` until it returns something other than None (or False); LoopError after ``within_s``."""
    deadline = time.monotonic() + within_s
    last: Any = None
    while True:
        try:
            result = await check()
        except (httpx.HTTPError, grpc.RpcError, KeyError, ValueError) as exc:
            result, last = None, exc
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise LoopError(f"timed out after {within_s:.0f}s waiting for {what}" + (f" (last error: {last!r})"
                                                                                      if last else ""))
        await asyncio.sleep(every_s)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def get_json(client: httpx.AsyncClient, url: str, **params: Any) -> Any:
    """GET ``url``; the JSON body, or None for 404; other errors raise."""
    response = await client.get(url, params=params or None)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.json()


class TopicLog:
    """Every record of some topics, read from the beginning by a plain aiokafka consumer (no group).

    Values are decoded as the topic's protobuf message; records of other producers' formats that do
    not decode are kept as None (JSON requests would be, but the loop only publishes through services).
    """

    def __init__(self, bootstrap_servers: str, prefix: str, topics: dict[str, type[Message]]) -> None:
        """``topics``: base topic name (``training.events``) -> its message class."""
        self.prefix = prefix
        self.types = topics
        self.records: dict[str, list[Message]] = {base: [] for base in topics}
        self._consumer = AIOKafkaConsumer(*(full_name(base, prefix) for base in topics),
                                          bootstrap_servers=bootstrap_servers, group_id=None,
                                          enable_auto_commit=False, auto_offset_reset="earliest")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for record in self._consumer:
            base = record.topic[len(self.prefix):]
            try:
                message = self.types[base].FromString(record.value or b"")
            except Exception:  # a foreign record (e.g. JSON from another producer) is skipped, not fatal
                continue
            self.records[base].append(message)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    def of(self, topic: str, match: Callable[[Any], bool] = lambda _m: True) -> list[Any]:
        return [m for m in self.records[topic] if match(m)]

    async def wait(self, topic: str, match: Callable[[Any], bool], *, count: int = 1, within_s: float,
                   what: str) -> list[Any]:
        async def check() -> list[Any] | None:
            found = self.of(topic, match)
            return found if len(found) >= count else None
        return await poll(check, within_s=within_s, what=f"{what} on {topic}")


# --------------------------------------------------------------------------------------------------
# The loop


@dataclass
class Loop:
    """State shared by the steps; :func:`run_loop` runs them in order."""

    endpoints: Endpoints
    plan: Plan
    say: Callable[[str], None]
    http: httpx.AsyncClient
    topics: TopicLog
    infer: oip_grpc.GRPCInferenceServiceStub
    gyre_cli: Sequence[str]
    names: list[str] = field(default_factory=feature_names)
    data: np.ndarray = field(default_factory=lambda: load_breast_cancer().data)
    target: np.ndarray = field(default_factory=lambda: load_breast_cancer().target)
    served_v1_rows: int = 0
    summary: dict[str, Any] = field(default_factory=dict)

    # ---- a. features

    async def features(self) -> None:
        plan, base = self.plan, self.endpoints["features"].http + "/api/v1"
        view = {"name": plan.feature_view, "entity": "patient", "ttl_seconds": 0,
                "description": "scikit-learn's breast cancer dataset (e2e demo)",
                "features": [*({"name": n, "type": "float"} for n in self.names), {"name": "target", "type": "int"}]}
        response = await self.http.post(f"{base}/feature-views", json=view)
        if response.status_code not in (200, 201):
            raise LoopError(f"registering the feature view failed: {response.status_code} {response.text}")
        self.say(f"a. feature view {plan.feature_view!r} registered (30 float features + int label 'target')")

        # A producer in any language: JSON bytes, a content-type header, the entity id as key.
        producer = AIOKafkaProducer(bootstrap_servers=self.endpoints.bootstrap_servers, acks="all",
                                    enable_idempotence=False)
        await producer.start()
        try:
            sends = []
            for i, (row, label) in enumerate(zip(self.data, self.target, strict=True)):
                event = {"featureView": plan.feature_view, "entityId": f"patient-{i}",
                         "eventTime": rfc3339(T0 + timedelta(minutes=i)),
                         "values": {**{n: {"doubleValue": float(v)} for n, v in zip(self.names, row, strict=True)},
                                    "target": {"int64Value": str(int(label))}},
                         "source": "sklearn-breast-cancer"}
                sends.append(await producer.send(self.endpoints.topic(FEATURES_EVENTS), json.dumps(event).encode(),
                                                 key=f"patient-{i}".encode(),
                                                 headers=[("content-type", b"application/json")]))
            await asyncio.gather(*sends)
        finally:
            await producer.stop()
        self.say(f"a. {len(self.data)} JSON feature events published by a plain aiokafka producer")

        rows = len(self.data)

        async def stored() -> dict[str, Any] | None:
            profile = await get_json(self.http, f"{base}/feature-views/{plan.feature_view}/profile")
            return profile if profile and profile["rows"] == rows else None
        await poll(stored, within_s=plan.deadline_s, what=f"{rows} rows in the offline store")

        picks = [0, 17, rows - 1]
        online = (await self.http.post(f"{base}/online-features", json={
            "feature_view": plan.feature_view, "entity_ids": [f"patient-{i}" for i in picks]})).json()
        for i, got in zip(picks, online["rows"], strict=True):
            expected = [float(v) for v in self.data[i]]
            if [got["values"][n] for n in self.names] != expected or got["values"]["target"] != int(self.target[i]):
                raise LoopError(f"online features of patient-{i} differ from the dataset: {got}")
        training = await self.http.post(f"{base}/training-sets", json={
            "feature_view": plan.feature_view, "label": "target",
            "window_start": rfc3339(T0), "window_end": rfc3339(T0 + timedelta(days=1))})
        training.raise_for_status()
        if training.json()["row_count"] != rows:
            raise LoopError(f"training set has {training.json()['row_count']} rows, expected {rows}")
        self.say(f"a. stored: offline {rows} rows, online values of {len(picks)} patients exact, "
                 f"training set of {rows} rows")

    # ---- b. training

    async def train(self) -> None:
        plan = self.plan
        request_id = f"demo-{uuid.uuid4()}"
        start, end = T0, T0 + timedelta(days=1)
        command = [*self.gyre_cli, "--trainer", self.endpoints["trainer"].grpc, "train",
                   "--model", plan.model, "--feature-view", plan.feature_view, "--label", "target",
                   "--start", rfc3339(start), "--end", rfc3339(end), "--max-evals", str(plan.max_evals),
                   "--promote-to", "production", "--request-id", request_id]
        process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.PIPE)
        out, err = await process.communicate()
        if process.returncode != 0:
            raise LoopError(f"`gyre train` exited {process.returncode}: {err.decode()} {out.decode()}")
        job = json.loads(out)["job"]
        self.say(f"b. `gyre train --max-evals {plan.max_evals} --promote-to production` queued job {job['job_id']} "
                 f"(request {request_id})")

        def mine(m: ev.TrainingEvent) -> bool:
            return m.request_id == request_id
        await self.topics.wait(TRAINING_EVENTS, lambda m: mine(m) and m.status == ev.TRAINING_STATUS_STARTED,
                               within_s=plan.deadline_s, what="TrainingEvent STARTED")
        self.say("b. training.events: STARTED")
        done = await self.topics.wait(
            TRAINING_EVENTS, lambda m: mine(m) and m.status in _ENDED,
            within_s=plan.deadline_s * 2, what="TrainingEvent SUCCEEDED")
        if done[0].status != ev.TRAINING_STATUS_SUCCEEDED:
            raise LoopError(f"training failed: {done[0].error}")
        trials = self.topics.of(TRAINING_EVENTS, lambda m: mine(m) and m.status == ev.TRAINING_STATUS_TRIAL_COMPLETED)
        if len({t.trial_number for t in trials}) < plan.max_evals:
            raise LoopError(f"{len(trials)} TRIAL_COMPLETED events, expected {plan.max_evals}")
        version = done[0].model_version
        if version != 1:
            raise LoopError(f"the first training registered version {version}, expected 1")
        self.say(f"b. training.events: {len(trials)} TRIAL_COMPLETED, SUCCEEDED -> version {version} "
                 f"(holdout {dict(sorted(done[0].metrics.items()))})")

        await self._check_runs(plan.max_evals)
        registered = await self._version(1)
        lineage = registered["lineage"]
        expected = {"trainingRequestId": request_id, "featureViews": [plan.feature_view],
                    "windowStart": rfc3339(start), "windowEnd": rfc3339(end), "label": "target"}
        for key, value in expected.items():
            got = lineage.get(key)
            if key.startswith("window"):
                got = got and rfc3339(datetime.fromisoformat(got.replace("Z", "+00:00")))
            if got != value:
                raise LoopError(f"v1 lineage {key} is {got!r}, expected {value!r}: {lineage}")
        for key in ("datasetFingerprint", "runId", "metrics", "referenceProfile"):
            if not lineage.get(key):
                raise LoopError(f"v1 lineage lacks {key}: {lineage}")
        await self._wait_alias("production", 1)
        await self.topics.wait(REGISTRY_EVENTS, lambda m: m.model_name == plan.model and m.version == 1
                               and m.kind == ev.REGISTRY_EVENT_KIND_VERSION_CREATED,
                               within_s=plan.deadline_s, what="RegistryEvent VERSION_CREATED v1")
        await self.topics.wait(REGISTRY_EVENTS, lambda m: m.model_name == plan.model and m.version == 1
                               and m.kind == ev.REGISTRY_EVENT_KIND_ALIAS_SET and m.alias == "production",
                               within_s=plan.deadline_s, what="RegistryEvent ALIAS_SET production -> 1")
        self.summary["v1"] = {"request_id": request_id, "lineage": lineage}
        self.say(f"b. registry: v1 with lineage (run {lineage['runId']}, fingerprint "
                 f"{lineage['datasetFingerprint'][:12]}..., reference profile), production -> 1; "
                 "VERSION_CREATED + ALIAS_SET on registry.events")

    async def _check_runs(self, at_least: int) -> None:
        base = self.endpoints["tracking"].http + "/api/v1"
        name = f"{self.plan.experiment_prefix}{self.plan.model}"
        experiment = await get_json(self.http, f"{base}/experiments/by-name/{name}")
        if experiment is None:
            raise LoopError(f"tracking has no experiment {name!r}")
        experiment_id = experiment["experiment"]["experiment_id"]
        response = await self.http.post(f"{base}/runs/search", json={"experiment_ids": [experiment_id],
                                                                      "page_size": 1000})
        response.raise_for_status()
        runs = response.json().get("runs", [])
        trials = [r for r in runs if r.get("data", {}).get("params") and r.get("data", {}).get("metrics")]
        if len(trials) < at_least:
            raise LoopError(f"tracking has {len(trials)} runs with params and metrics in experiment "
                            f"{experiment_id}, expected at least {at_least}")
        self.say(f"b. tracking: {len(runs)} runs in experiment {name}, "
                 f"{len(trials)} with params and metrics")

    async def _version(self, version: int) -> dict[str, Any]:
        url = f"{self.endpoints['registry'].http}/api/v1/registered-models/{self.plan.model}/versions/{version}"

        async def check() -> dict[str, Any] | None:
            body = await get_json(self.http, url)
            return body.get("modelVersion", body) if body else None
        return await poll(check, within_s=self.plan.deadline_s, what=f"registry version {version}")

    async def _alias(self, alias: str) -> int | None:
        url = f"{self.endpoints['registry'].http}/api/v1/registered-models/{self.plan.model}/aliases/{alias}"
        body = await get_json(self.http, url)
        if body is None:
            return None
        return int(body.get("modelVersion", body).get("version", 0))

    async def _wait_alias(self, alias: str, version: int) -> None:
        async def check() -> bool:
            return await self._alias(alias) == version
        try:
            await poll(check, within_s=self.plan.deadline_s, what=f"registry alias {alias} -> {version}")
        except LoopError as exc:
            base = f"{self.endpoints['registry'].http}/api/v1"
            model = await get_json(self.http, f"{base}/registered-models/{self.plan.model}")
            audit = await get_json(self.http, f"{base}/audit-entries", model_name=self.plan.model)
            raise LoopError(f"{exc}; the registry says: {model}; audit: {audit}") from None

    # ---- c. serving

    def _request(self, rows: np.ndarray, request_id: str = "") -> oip.ModelInferRequest:
        request = oip.ModelInferRequest(model_name=self.plan.model, id=request_id)
        for j, name in enumerate(self.names):
            tensor = request.inputs.add(name=name, datatype="FP64", shape=[len(rows)])
            tensor.contents.fp64_contents.extend(float(v) for v in rows[:, j])
        return request

    async def infer_grpc(self, rows: np.ndarray, request_id: str = "") -> tuple[int, list[str], list[int]]:
        """Version, prediction ids and predicted labels of one gRPC ModelInfer call."""
        reply = await self.infer.ModelInfer(self._request(rows, request_id), timeout=30)
        if request_id and reply.id != request_id:
            raise LoopError(f"response id {reply.id!r} is not the request id {request_id!r}")
        ids = reply.parameters["prediction_ids"].string_param.split(",") if len(rows) > 1 else [reply.id]
        labels = next(list(o.contents.int64_contents) for o in reply.outputs if o.name == "predict")
        if int(reply.model_version) == 1:
            self.served_v1_rows += len(rows)
        return int(reply.model_version), ids, labels

    async def serving(self) -> None:
        plan = self.plan
        await poll(lambda: self._ready(1), within_s=plan.deadline_s, what="ModelReady v1 over gRPC")
        self.say("c. serving: ModelReady(v1) over gRPC")
        grpc_id = f"demo-grpc-{uuid.uuid4().hex[:8]}"
        version, ids, _ = await self.infer_grpc(self.data[:1], grpc_id)
        if version != 1 or ids != [grpc_id]:
            raise LoopError(f"gRPC ModelInfer answered version {version}, prediction ids {ids}")
        rest_id = f"demo-rest-{uuid.uuid4().hex[:8]}"
        inputs = [{"name": n, "shape": [1], "datatype": "FP64", "data": [float(self.data[1, j])]}
                  for j, n in enumerate(self.names)]
        body = {"id": rest_id, "inputs": inputs}
        response = await self.http.post(f"{self.endpoints['serving'].http}/v2/models/{plan.model}/infer", json=body)
        if response.status_code != 200:
            raise LoopError(f"REST infer answered {response.status_code}: {response.text}")
        answer = response.json()
        if answer["id"] != rest_id or str(answer["model_version"]) != "1":
            raise LoopError(f"REST infer answered id {answer['id']!r}, version {answer['model_version']!r}")
        self.served_v1_rows += 1
        batch_id = f"demo-batch-{uuid.uuid4().hex[:8]}"
        rows = np.arange(2, 2 + FEEDBACK_ROWS)
        _, batch_ids, labels = await self.infer_grpc(self.data[rows], batch_id)
        if batch_ids != [f"{batch_id}:{i}" for i in range(FEEDBACK_ROWS)]:
            raise LoopError(f"batch prediction ids are {batch_ids}")
        self.summary["feedback_rows"] = (batch_ids, labels, [int(self.target[i]) for i in rows])
        self.say(f"c. serving: ModelInfer over gRPC (id {grpc_id}) and REST (id {rest_id}) by version 1, "
                 f"and a batch of {FEEDBACK_ROWS} rows ({batch_id}:0..{FEEDBACK_ROWS - 1})")
        wanted = {grpc_id, rest_id, *batch_ids}
        await self.topics.wait(INFERENCE_EVENTS, lambda m: m.prediction_id in wanted and m.model_version == 1,
                               count=len(wanted), within_s=plan.deadline_s, what="the InferenceEvents of those ids")
        self.say(f"c. inference.events: {len(wanted)} InferenceEvents with exactly those prediction ids")

    async def _ready(self, version: int) -> bool:
        reply = await self.infer.ModelReady(oip.ModelReadyRequest(name=self.plan.model, version=str(version)),
                                            timeout=5)
        return bool(reply.ready)

    # ---- d. feedback

    async def feedback(self) -> None:
        plan = self.plan
        ids, predicted, truth = self.summary["feedback_rows"]
        base = self.endpoints["feedback"].http + "/api/v1"
        for prediction_id, label in zip(ids, truth, strict=True):
            response = await self.http.post(f"{base}/feedback", json={
                "prediction_id": prediction_id, "corrected_label": label, "author": "demo",
                "feedback_id": f"fb-{prediction_id}"})
            if response.status_code not in (200, 201):
                raise LoopError(f"feedback on {prediction_id} answered {response.status_code}: {response.text}")
        accuracy = sum(int(p == t) for p, t in zip(predicted, truth, strict=True)) / len(ids)
        self.say(f"d. feedback: {len(ids)} corrected labels posted")

        async def quality() -> dict[str, Any] | None:
            body = await get_json(self.http, f"{base}/models/{plan.model}/quality", version=1)
            rows = [v for v in (body or {}).get("versions", []) if int(v["model_version"]) == 1]
            return rows[0] if rows and int(rows[0]["labelled_count"]) == len(ids) else None
        row = await poll(quality, within_s=plan.deadline_s, what=f"{len(ids)} labelled feedbacks on version 1")
        if not math.isclose(row["accuracy"], accuracy):
            raise LoopError(f"feedback accuracy of v1 is {row['accuracy']}, expected {accuracy}")
        wanted = set(ids)
        await self.topics.wait(FEEDBACK_EVENTS, lambda m: m.prediction_id in wanted, count=len(ids),
                               within_s=plan.deadline_s, what="the FeedbackEvents")
        self.say(f"d. feedback: quality of v1 = {row['predictions']} predictions, {row['labelled_count']} labelled, "
                 f"accuracy {row['accuracy']:.2f}; {len(ids)} FeedbackEvents on feedback.events")

    # ---- e. monitor

    async def _windows(self, version: int) -> list[dict[str, Any]]:
        body = await get_json(self.http, f"{self.endpoints['monitor'].http}/api/v1/models/{self.plan.model}"
                                         "/drift/windows", version=version)
        return list((body or {}).get("windows", []))

    async def _wait_windows(self, version: int, count: int) -> list[dict[str, Any]]:
        async def check() -> list[dict[str, Any]] | None:
            windows = await self._windows(version)
            return windows if len(windows) >= count else None
        return await poll(check, within_s=self.plan.deadline_s, what=f"{count} evaluated drift windows of v{version}")

    def drift_requests(self) -> list[ev.TrainingRequest]:
        return self.topics.of(TRAINING_REQUESTS, lambda m: m.model_name == self.plan.model
                              and m.reason == ev.TRAINING_REASON_DRIFT)

    def alerts(self) -> list[ev.MonitorAlert]:
        return self.topics.of(MONITOR_ALERTS, lambda m: m.model_name == self.plan.model)

    def _sample(self, count: int, seed: int) -> np.ndarray:
        """``count`` dataset rows in a seeded order (the whole dataset, repeated if needed)."""
        order = np.random.default_rng(seed).permutation(len(self.data))
        return self.data[np.resize(order, count)]

    async def monitor(self) -> None:
        plan, size = self.plan, self.plan.window_rows
        # Fill the open window (which already holds steps c and d's predictions) with unshifted rows.
        fill = size - self.served_v1_rows % size
        await self.infer_grpc(self._sample(fill, seed=1))
        windows = await self._wait_windows(1, 1)
        first = windows[0]
        if first.get("dataset_drift") or self.alerts() or self.drift_requests():
            raise LoopError(f"unshifted traffic raised drift: window {first}, alerts {self.alerts()}")
        alerts = await get_json(self.http, f"{self.endpoints['monitor'].http}/api/v1/alerts", model=plan.model)
        if alerts and alerts.get("alerts"):
            raise LoopError(f"unshifted traffic raised alerts: {alerts}")
        self.say(f"e. monitor: window 1 ({size} unshifted predictions) -> drift share "
                 f"{float(first.get('drift_share', 0.0)):.2f}, no alert, no retraining request")

        std = self.data.std(axis=0, ddof=1)
        columns = [self.names.index(n) for n in plan.drifted]
        for w in range(plan.drift_windows):
            rows = self._sample(size, seed=2 + w).copy()
            rows[:, columns] += SHIFT_STD * std[columns]
            await self.infer_grpc(rows)
        self.say(f"e. sent {plan.drift_windows} windows of traffic with {len(columns)} features shifted by "
                 f"{SHIFT_STD:g} std: {', '.join(plan.drifted)}")
        alert = (await self.topics.wait(MONITOR_ALERTS, lambda m: m.model_name == plan.model, within_s=plan.deadline_s,
                                        what="a MonitorAlert"))[0]
        named = {d.feature for d in alert.feature_drifts if d.drifted}
        if named != set(plan.drifted) or not alert.dataset_drift:
            raise LoopError(f"the alert names {sorted(named)} as drifted, expected exactly {sorted(plan.drifted)}")
        request = (await self.topics.wait(TRAINING_REQUESTS, lambda m: m.model_name == plan.model
                                          and m.reason == ev.TRAINING_REASON_DRIFT, within_s=plan.deadline_s,
                                          what="a TrainingRequest with reason DRIFT"))[0]
        await self._wait_windows(1, 1 + plan.drift_windows)
        self.say(f"e. monitor.alerts: alert {alert.alert_id} names exactly {sorted(named)} (drift share "
                 f"{alert.drift_share:.2f}); training.requests: request {request.request_id} (DRIFT, evidence "
                 f"{request.evidence.get('drifted_features', '')})")
        self.summary["alert"], self.summary["drift_request"] = alert, request

    def check_debounce(self) -> None:
        """Exactly one DRIFT request and one alert, however many drifted windows were evaluated."""
        requests, alerts = self.drift_requests(), self.alerts()
        if len({r.request_id for r in requests}) != 1 or len({a.alert_id for a in alerts}) != 1:
            raise LoopError(f"expected one alert and one DRIFT request after {self.plan.drift_windows} drifted "
                            f"windows, got {len(alerts)} alerts and requests {[r.request_id for r in requests]}")

    # ---- f. retraining and the swap

    async def retrain(self) -> None:
        plan = self.plan
        request: ev.TrainingRequest = self.summary["drift_request"]
        stop = asyncio.Event()
        versions: list[int] = []
        failures: list[str] = []

        async def client() -> None:
            # A well-behaved client: one row at a time, back to back; it must never see an error.
            rows = self._sample(4096, seed=99)
            i = 0
            while not stop.is_set():
                try:
                    version, _, _ = await self.infer_grpc(rows[i % len(rows):i % len(rows) + 1])
                    versions.append(version)
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code()}: {exc.details()}")  # type: ignore[attr-defined]
                i += 1
                await asyncio.sleep(0.02)

        task = asyncio.create_task(client())
        try:
            done = await self.topics.wait(
                TRAINING_EVENTS, lambda m: m.request_id == request.request_id
                and m.status in _ENDED,
                within_s=plan.deadline_s * 2, what=f"the end of the retraining job of request {request.request_id}")
            if done[0].status != ev.TRAINING_STATUS_SUCCEEDED:
                raise LoopError(f"retraining failed: {done[0].error}")
            v2 = await self._version(2)
            if v2["lineage"].get("trainingRequestId") != request.request_id:
                raise LoopError(f"v2 lineage trainingRequestId is {v2['lineage'].get('trainingRequestId')!r}, "
                                f"expected the DRIFT request {request.request_id!r}")
            self.say(f"f. trainer: version 2 from request {request.request_id} "
                     f"(holdout {dict(sorted(done[0].metrics.items()))})")
            await self._promotion(v2)
            await poll(lambda: self._ready(2), within_s=plan.deadline_s, what="serving to load version 2")
            served = len(versions)

            async def enough_v2() -> bool:
                return len(versions) >= served + 20 and versions[-1] == 2
            await poll(enough_v2, within_s=plan.deadline_s, what="the client loop to be answered by version 2")
        finally:
            stop.set()
            await task
        if failures:
            raise LoopError(f"{len(failures)} of {len(versions) + len(failures)} calls failed during the swap: "
                            f"{failures[:3]}")
        switch = versions.index(2) if 2 in versions else len(versions)
        if set(versions[:switch]) - {1} or set(versions[switch:]) != {2}:
            raise LoopError(f"responses did not move once from version 1 to 2: {versions}")
        self.say(f"f. serving swapped to version 2 under load: {len(versions)} calls, 0 failed, "
                 f"{switch} answered by v1 then {len(versions) - switch} by v2")

    async def _promotion(self, v2: dict[str, Any]) -> None:
        """production -> 2 by the registry's policy when it can compare; else by SetAlias, said aloud."""
        v1 = await self._version(1)
        e1, e2 = v1.get("evaluation") or {}, v2.get("evaluation") or {}
        metric = e2.get("primaryMetric", "")
        comparable = bool(metric) and e1.get("holdoutId") and e1.get("holdoutId") == e2.get("holdoutId") \
            and metric == e1.get("primaryMetric")
        if comparable:
            better = v2["lineage"]["metrics"][metric] >= v1["lineage"]["metrics"][metric] \
                if not e2.get("lowerIsBetter") else v2["lineage"]["metrics"][metric] <= v1["lineage"]["metrics"][metric]
            if better:
                await self._wait_alias("production", 2)
                self.summary["promotion"] = "policy"
                self.say(f"f. registry policy promoted v2 to production (same holdout, {metric} "
                         f"{v2['lineage']['metrics'][metric]:.4f} >= {v1['lineage']['metrics'][metric]:.4f})")
                return
        if await self._alias("production") == 2:
            self.summary["promotion"] = "policy"
            self.say("f. registry policy promoted v2 to production")
            return
        reason = ("the versions were measured on different holdouts or metrics" if not comparable
                  else f"v2 is worse on {metric}")
        url = f"{self.endpoints['registry'].http}/api/v1/registered-models/{self.plan.model}/aliases/production"
        comment = f"demo: promote the retrained model ({reason})"
        response = await self.http.put(url, json={"version": 2, "comment": comment}, headers={"x-gyre-actor": "demo"})
        if response.status_code != 200:
            raise LoopError(f"SetAlias production -> 2 answered {response.status_code}: {response.text}")
        self.summary["promotion"] = f"SetAlias ({reason})"
        self.say(f"f. the policy kept v1 ({reason}); production set to v2 through the registry's SetAlias")

    # ---- g. dashboard

    async def dashboard(self) -> dict[str, Any]:
        plan = self.plan
        request: ev.TrainingRequest = self.summary["drift_request"]
        url = f"{self.endpoints['dashboard'].http}/api/v1/overview"

        async def complete() -> dict[str, Any] | None:
            body: dict[str, Any] = (await self.http.get(url)).json()
            models = {m["name"]: m for m in body["models"]["items"]}
            jobs = [j for j in body["training_jobs"]["items"] if j.get("request_id") == request.request_id]
            ready = all(s["health"] == "ready" for s in body["services"])
            model = models.get(plan.model)
            if not (ready and model and model["aliases"].get("production") == 2 and jobs
                    and jobs[0]["status"] == "SUCCEEDED"):
                return None
            return body
        body = await poll(complete, within_s=plan.deadline_s, every_s=0.5,
                          what="the dashboard to show every service ready, production -> 2 and the retraining job")
        model = next(m for m in body["models"]["items"] if m["name"] == plan.model)
        if {int(v["version"]) for v in model["versions"]} < {1, 2}:
            raise LoopError(f"the dashboard lists versions {model['versions']}")
        drift = [d for d in body["drift"]["items"] if d["model_name"] == plan.model]
        monitor_latest = await get_json(self.http, f"{self.endpoints['monitor'].http}/api/v1/models/{plan.model}/drift")
        if not drift or len(drift[0]["features"]) != len(self.names) or monitor_latest is None \
                or set(drift[0]["drifted_features"]) != set(monitor_latest["drifted_features"]):
            raise LoopError(f"the dashboard's drift {drift} is not the monitor's latest window {monitor_latest}")
        quality = [q for q in body["quality"]["items"] if q["model_name"] == plan.model]
        v1_quality = [v for v in quality[0]["versions"] if v["model_version"] == 1] if quality else []
        if not v1_quality or v1_quality[0]["labelled_count"] != FEEDBACK_ROWS:
            raise LoopError(f"the dashboard's feedback quality is {quality}")
        job = next(j for j in body["training_jobs"]["items"] if j.get("request_id") == request.request_id)
        if job["reason"] != "DRIFT" or job["requested_by"] != "monitor" or job["model_version"] != 2:
            raise LoopError(f"the dashboard's retraining job is {job}")
        alerts = [a for a in body["alerts"]["items"] if a["model_name"] == plan.model]
        if not alerts or set(alerts[0]["drifted_features"]) != set(plan.drifted):
            raise LoopError(f"the dashboard's alerts are {alerts}")
        self.say(f"g. dashboard: {len(body['services'])} services ready; {plan.model} versions "
                 f"{sorted(int(v['version']) for v in model['versions'])}, aliases {model['aliases']}; "
                 "drift per feature "
                 f"({len(drift[0]['features'])} features, latest window drifted: {drift[0]['drifted_features']}); "
                 f"v1 accuracy {v1_quality[0]['accuracy']:.2f} on {FEEDBACK_ROWS} labels; retraining request "
                 f"{job['request_id']} ({job['reason']} by {job['requested_by']}) -> v{job['model_version']}")
        return body


def gyre_cli() -> list[str]:
    """The ``gyre`` console script next to this interpreter (or the module, when not installed as a script)."""
    script = Path(sys.executable).with_name("gyre")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gyre_cli.main"]


async def run_loop(endpoints: Endpoints, plan: Plan, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run steps a to g against ``endpoints``; a summary of what happened. Raises LoopError at the first
    step that does not happen as expected."""
    topics = TopicLog(endpoints.bootstrap_servers, endpoints.topic_prefix, {
        TRAINING_EVENTS: ev.TrainingEvent, REGISTRY_EVENTS: ev.RegistryEvent, INFERENCE_EVENTS: ev.InferenceEvent,
        FEEDBACK_EVENTS: ev.FeedbackEvent, MONITOR_ALERTS: ev.MonitorAlert, TRAINING_REQUESTS: ev.TrainingRequest})
    await topics.start()
    try:
        async with httpx.AsyncClient(timeout=30) as http, \
                grpc.aio.insecure_channel(endpoints["serving"].grpc) as channel:
            loop = Loop(endpoints, plan, say, http, topics, oip_grpc.GRPCInferenceServiceStub(channel), gyre_cli())
            await loop.features()
            await loop.train()
            await loop.serving()
            await loop.feedback()
            await loop.monitor()
            await loop.retrain()
            loop.check_debounce()
            loop.summary["overview"] = await loop.dashboard()
            return loop.summary
    finally:
        await topics.stop()


# --------------------------------------------------------------------------------------------------
# make demo


async def check_stack(endpoints: Endpoints, names: Iterable[str] = SERVICES) -> list[str]:
    """Services whose ``/readyz`` does not answer 200, each with why."""
    problems = []
    async with httpx.AsyncClient(timeout=3) as http:
        for name in names:
            url = f"{endpoints[name].http}/readyz"
            try:
                response = await http.get(url)
            except httpx.HTTPError as exc:
                problems.append(f"{name}: no answer at {url} ({type(exc).__name__})")
                continue
            if response.status_code != 200:
                problems.append(f"{name}: not ready at {url} ({response.status_code} {response.text[:200]})")
    return problems


def demo_plan(names: Sequence[str]) -> Plan:
    """A plan fitted to the running stack's monitor and trainer settings (read from this environment)."""
    from gyre_monitor.settings import MonitorSettings
    from gyre_trainer.settings import TrainerSettings

    monitor, trainer = load_settings(MonitorSettings), load_settings(TrainerSettings)
    suffix = uuid.uuid4().hex[:6]
    return Plan(model=f"cancer_{suffix}", feature_view=f"breast_cancer_{suffix}", window_rows=monitor.window_size,
                drifted=drifted_features(monitor.drift_share, names), max_evals=trainer.default_max_evals,
                experiment_prefix=trainer.experiment_prefix)


def main(argv: Sequence[str] | None = None) -> int:
    """``make demo``: 0 when the whole loop ran, 1 when a step failed, 2 when the stack is not up."""
    parser = argparse.ArgumentParser(description="Run Gyre's closed loop against the stack of `make up`.")
    parser.add_argument("--deadline", type=float, default=180.0, help="longest wait of one step, in seconds")
    args = parser.parse_args(argv)
    clock = Clock()
    try:
        endpoints = Endpoints.from_env()
    except LoopError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    problems = asyncio.run(check_stack(endpoints))
    if problems:
        print("demo: the stack is not up (start it with `make up`; `make status` shows what runs):\n  "
              + "\n  ".join(problems), file=sys.stderr)
        return 2
    plan = demo_plan(feature_names())
    plan = Plan(**{**plan.__dict__, "deadline_s": args.deadline})
    clock(f"stack is up (broker {endpoints.bootstrap_servers}, topics {endpoints.topic_prefix}*); model {plan.model}, "
          f"monitor windows of {plan.window_rows} predictions, {plan.max_evals} trials per training")
    try:
        summary = asyncio.run(run_loop(endpoints, plan, clock))
    except LoopError as exc:
        clock(f"FAILED: {exc}")
        return 1
    clock(f"done: the loop closed (promotion of v2 by {summary['promotion']}); "
          f"open {endpoints['dashboard'].http}/ to see it")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
