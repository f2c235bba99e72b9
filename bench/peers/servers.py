"""Start the servers a serving benchmark compares, each a real process pinned to one core.

* **Gyre serving**: ``python -m gyre_serving`` from ``.venv`` on a Tansu broker, with no registry
  (``GYRE_SERVING_REGISTRY_ADDRESS`` empty): the benchmark publishes the ``RegistryEvent``s the
  registry would (``VERSION_CREATED``, ``ALIAS_SET`` of ``production``) for a skops artifact in a
  local artifact store, exactly the path a real deployment takes.
* **MLServer** from ``.bench-envs/mlserver`` (:mod:`envs`), with a joblib file of the same fitted
  estimator and a ``model-settings.json``; "defaults" sets nothing but ports, "tuned" turns debug
  off and runs the model in the server process (``parallel_workers=0``).
* **bare**: :mod:`bare_grpc`, the grpc.aio ceiling.

Every process runs under ``taskset -c <cpu>``; its children (MLServer's worker) inherit the core.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from gyre_common.artifacts import LocalArtifactStore
from gyre_common.bus import Publisher
from gyre_common.settings import KafkaSettings
from gyre_common.topics import REGISTRY_EVENTS
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as pb
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from gyre_stack.ports import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@dataclass(frozen=True)
class BenchModel:
    """One fitted estimator, saved both ways: skops bytes for Gyre, a joblib file for MLServer."""

    name: str
    estimator: Any
    skops: bytes
    joblib_path: Path


def train_models(workdir: Path) -> dict[str, BenchModel]:
    """``iris``: a LogisticRegression (cheap call); ``forest``: a 100-tree random forest (a call
    whose cost dominates, for batching). Both on the 4 iris features, deterministic."""
    data = load_iris()
    estimators = {
        "iris": LogisticRegression(max_iter=1000).fit(data.data, data.target),
        "forest": RandomForestClassifier(n_estimators=100, random_state=0).fit(data.data, data.target),
    }
    models = {}
    for name, estimator in estimators.items():
        path = workdir / "models" / name / "model.joblib"
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(estimator, path)
        models[name] = BenchModel(name, estimator, sio.dumps(estimator), path)
    return models


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found.append(int(child))
                found.extend(_descendants(int(child)))
    except OSError:
        pass
    return found


def rss_mib(pid: int) -> float:
    """Resident set size of one process, MiB (``VmRSS`` in ``/proc/<pid>/status``; 0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Server:
    """A started server process and where it answers."""

    name: str
    process: subprocess.Popen[bytes]
    grpc_target: str
    http_target: str | None
    models: tuple[str, ...]
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def memory(self) -> dict[str, float]:
        """RSS in MiB: ``main`` (the server process) and ``total`` (with its child processes)."""
        pid = self.process.pid
        main = rss_mib(pid)
        return {"main": round(main, 1), "total": round(main + sum(rss_mib(c) for c in _descendants(pid)), 1)}

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            for child in _descendants(self.process.pid):
                try:
                    os.kill(child, signal.SIGKILL)
                except OSError:
                    pass
            self.process.kill()
            self.process.wait()


def _spawn(cmd: list[str], cpu: int | None, log_path: Path, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> subprocess.Popen[bytes]:
    pinned = ["taskset", "-c", str(cpu), *cmd] if cpu is not None else cmd
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(pinned, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})}, cwd=cwd)


def _wait(what: str, server: Server, ready: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{what} exited with {server.process.returncode}; see {server.log_path}")
        try:
            if ready():
                return
        except Exception:  # not answering yet
            pass
        time.sleep(0.3)
    server.stop()
    raise TimeoutError(f"{what} not ready within {timeout:.0f}s; see {server.log_path}")


def grpc_model_ready(target: str, model: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        return bool(pb_grpc.GRPCInferenceServiceStub(channel).ModelReady(
            pb.ModelReadyRequest(name=model), timeout=2).ready)


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


# -- the bare grpc.aio ceiling ------------------------------------------------------------------------

def start_bare(workdir: Path, cpu: int | None) -> Server:
    port = free_port()
    process = _spawn([sys.executable, str(HERE / "bare_grpc.py"), str(port)], cpu, workdir / "logs" / "bare.log")
    server = Server("bare grpc.aio", process, f"127.0.0.1:{port}", None, ("iris",), workdir / "logs" / "bare.log")

    def ready() -> bool:
        with grpc.insecure_channel(server.grpc_target) as channel:
            channel.unary_unary("/inference.GRPCInferenceService/ServerReady")(b"", timeout=2)
        return True

    _wait("bare grpc.aio server", server, ready)
    return server


# -- MLServer -----------------------------------------------------------------------------------------

def start_mlserver(workdir: Path, label: str, models: list[BenchModel], cpu: int | None, *, tuned: bool,
                   batching: dict[str, float] | None = None, python: Path) -> Server:
    """MLServer serving ``models`` (each under its own name).

    Args:
        tuned: debug off and no separate worker process (``parallel_workers=0``); else defaults.
        batching: ``max_batch_size``/``max_batch_time`` (s) for each model's adaptive batching.
        python: the ``.bench-envs/mlserver`` interpreter.
    """
    root = workdir / "mlserver" / label
    root.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    settings: dict[str, Any] = {"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port}
    if tuned:
        settings.update(debug=False, parallel_workers=0)
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    for model in models:
        folder = root / model.name
        folder.mkdir(exist_ok=True)
        target = folder / "model.joblib"
        target.write_bytes(model.joblib_path.read_bytes())
        model_settings: dict[str, Any] = {"name": model.name, "implementation": "mlserver_sklearn.SKLearnModel",
                                          "parameters": {"uri": "./model.joblib", "version": "1"}}
        if batching:
            model_settings.update(batching)
        (folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    log_path = workdir / "logs" / f"mlserver-{label}.log"
    process = _spawn([str(python.parent / "mlserver"), "start", str(root)], cpu, log_path, cwd=root)
    server = Server(f"MLServer {label}", process, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}",
                    tuple(m.name for m in models), log_path, {"settings": settings, "batching": batching})
    _wait(f"MLServer {label}", server,
          lambda: all(http_ok(f"http://{server.http_target}/v2/models/{m.name}/ready") for m in models))
    return server


# -- Gyre serving -------------------------------------------------------------------------------------

def _signature() -> common_pb2.ModelSignature:
    """The trainer's layout: one FP64 column per feature in, the INT64 label out (MLServer's
    default output too). A single ``[batch, 4]`` input is accepted for such a signature."""
    return common_pb2.ModelSignature(
        inputs=[common_pb2.TensorSpec(name=name, datatype="FP64", shape=[-1]) for name in FEATURES],
        outputs=[common_pb2.TensorSpec(name="predict", datatype="INT64", shape=[-1])],
    )


async def _announce_until_ready(kafka: KafkaSettings, model: BenchModel, uri: str, sha256: str, size: int,
                                grpc_target: str, process: subprocess.Popen[bytes], within_s: float) -> None:
    """Publish what the registry would until serving has the model (the follower starts at the end
    of the topic, so events sent before it positioned itself are not seen: re-send, it is idempotent)."""
    artifact = common_pb2.ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="skops")
    events = [
        events_pb2.RegistryEvent(kind=kind, model_name=model.name, version=1, alias=alias, artifact=artifact,
                                 signature=_signature(), actor="bench")
        for kind, alias in ((events_pb2.REGISTRY_EVENT_KIND_VERSION_CREATED, ""),
                            (events_pb2.REGISTRY_EVENT_KIND_ALIAS_SET, "production"))
    ]
    deadline = time.monotonic() + within_s
    async with Publisher(kafka, service="registry") as publisher:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"Gyre serving exited with {process.returncode}")
            for event in events:
                await publisher.publish(REGISTRY_EVENTS, event, key=model.name)
            for _ in range(10):
                try:
                    if await asyncio.to_thread(grpc_model_ready, grpc_target, model.name):
                        return
                except grpc.RpcError:
                    pass
                await asyncio.sleep(0.2)
    raise TimeoutError(f"Gyre serving did not load {model.name} within {within_s:.0f}s")


def start_gyre(workdir: Path, label: str, model: BenchModel, cpu: int | None, *, bootstrap_servers: str,
               env: dict[str, str] | None = None, command_prefix: list[str] | None = None) -> Server:
    """``python -m gyre_serving`` serving ``model`` as announced by registry events.

    Args:
        env: extra ``GYRE_SERVING_*`` settings (e.g. batching).
        command_prefix: wraps the interpreter (a profiler); default none.
    """
    store_root = workdir / "artifacts"
    ref = LocalArtifactStore(store_root).put(model.skops)
    http_port, grpc_port = free_port(), free_port()
    prefix = f"bench-{label}-{os.getpid()}."
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=prefix, default_partitions=1,
                          linger_ms=1)
    settings = {
        "GYRE_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "GYRE_KAFKA_TOPIC_PREFIX": prefix,
        "GYRE_KAFKA_DEFAULT_PARTITIONS": "1",
        "GYRE_ARTIFACTS_ROOT": str(store_root),
        "GYRE_SERVING_HTTP_PORT": str(http_port),
        "GYRE_SERVING_GRPC_PORT": str(grpc_port),
        "GYRE_SERVING_REGISTRY_ADDRESS": "",
        "GYRE_SERVING_MODELS": model.name,
        **(env or {}),
    }
    log_path = workdir / "logs" / f"gyre-{label}.log"
    cmd = [*(command_prefix or [sys.executable]), "-m", "gyre_serving"]
    process = _spawn(cmd, cpu, log_path, env=settings)
    server = Server(f"Gyre {label}", process, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}", (model.name,),
                    log_path, {"env": env or {}})
    try:
        _wait(f"Gyre {label} (listening)", server, lambda: http_ok(f"http://{server.http_target}/v2/health/live"))
        asyncio.run(_announce_until_ready(kafka, model, ref.uri, ref.sha256, ref.size, server.grpc_target,
                                          process, within_s=90))
    except BaseException:
        server.stop()
        raise
    return server


def check_same_answer(models: dict[str, BenchModel]) -> None:
    """Both formats hold the same estimator (the payload row predicts the same class)."""
    row = np.array([[5.1, 3.5, 1.4, 0.2]])
    for model in models.values():
        again = joblib.load(model.joblib_path)
        assert (again.predict(row) == model.estimator.predict(row)).all()
