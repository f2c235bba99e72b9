"""Gyre tracking + registry against ``mlflow server`` (PyPI, PostgreSQL backend), in one run.

Both sides get the same REST JSON calls, on the same machine, against databases in one embedded
PostgreSQL that this script starts on a free port (never the machine's 5432). Timed calls go over
one keep-alive ``http.client`` connection and stop when the whole body is in (parsing it comes
after the clock): httpx, used for seeding and set-up, costs ~0.8 ms of the load generator's own
time per call on this machine, as much as Gyre's whole answer to a small call, and counting that
for both sides compressed every ratio towards 1. The script prints that floor (a trivial GET to
each server, both ways) so it can be judged.

* MLflow 3.17.2 from ``.bench-envs/mlflow`` (installed by ``bench/peers/mlflow_env.py``), twice:
  with its defaults (several uvicorn workers) and with ``--workers 1``; Gyre is compared with the
  faster of the two for each measurement;
* Gyre: the tracking and registry services as processes (``python -m gyre_tracking`` /
  ``gyre_registry``) with a Tansu broker for registry.events; registry calls go to tracking's
  port, which proxies them to the registry, as an MLflow client's would.

Measured (targets from issue #5; ratios = MLflow time / Gyre time, or Gyre rate / MLflow rate):

| measurement | target |
|---|---|
| one ``runs/log-batch`` of 1000 metrics (median) | >= 10x |
| sequential ``runs/log-metric`` calls per second, one client | >= 10x |
| ``runs/search`` ``metrics.m0 > 0.5`` by ``metrics.m1 DESC``, max_results 1000, median | >= 10x |
| (over 1,000 and 10,000 runs of 10 params + 10 metrics each) | |
| Gyre alone, 100,000 runs: the same filter with max_results 100 | < 100 ms |
| registry: ``model-versions/create`` + ``registered-models/alias`` (median of the pair) | >= 5x |
| resident memory of the tracking service at rest, beside MLflow's server (all its processes) | reported |

Runs are seeded through the same REST API on both sides (``runs/create`` + one ``runs/log-batch``
per run, 16 requests in flight); the data are the same pseudo-random values (fixed seed).

Usage: ``.venv/bin/python bench/mlflow_compare.py [--quick] [--pin] [--large-runs N]``.
``--quick`` seeds 1,000 runs only (no 10,000 / 100,000). ``--pin`` runs the servers on core 0
(``taskset -c 0``) and this load generator on core 1: right on a quiet machine, misleading on a
shared one where other work is pinned to core 0 too (then every server waits for the scheduler,
which is what gets measured), hence off by default. Exits non-zero only when it could
not run; prints PASS/FAIL per target and writes ``bench/results/mlflow_compare.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from gyre_stack.broker import start_broker
from gyre_stack.ports import free_port
from gyre_stack.postgres import Postgres

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "peers"))
import mlflow_env  # noqa: E402  (bench/peers is not a package)

API = "/api/2.0/mlflow"
SEED = 20250
N_PARAMS = 10
N_METRICS = 10
SEARCH_FILTER = "metrics.m0 > 0.5"
SEARCH_ORDER = ["metrics.m1 DESC"]


# -- processes ------------------------------------------------------------------------------------

def _rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, KiB (0 if gone)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            with open(f"/proc/{current}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


@dataclass
class Server:
    """A server process and the HTTP address it answers on."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def wait_ready(self, path: str, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}); log: {self.log}\n"
                                   + self.log.read_text(errors="replace")[-3000:])
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s; log: {self.log}")

    def rss_mib(self) -> float:
        return _rss_kib(self.process.pid) / 1024

    def stop(self) -> None:
        """SIGTERM to the server's whole process group (MLflow's uvicorn workers and job runner too),
        SIGKILL to what is left after 20 s."""
        for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                self.process.poll()
                try:
                    os.killpg(self.process.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)


def _spawn(name: str, command: list[str], env: dict[str, str], url: str, logs: Path, pin: bool) -> Server:
    log = logs / f"{name}.log"
    prefix = ["taskset", "-c", "0"] if pin and shutil.which("taskset") else []
    with open(log, "wb") as out:
        process = subprocess.Popen(prefix + command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
    return Server(name, process, url, log)


def start_mlflow(python: Path, db_url: str, artifacts: Path, logs: Path, *, workers: int | None,
                 pin: bool) -> Server:
    port = free_port()
    command = [str(python.parent / "mlflow"), "server", "--backend-store-uri", db_url,
               "--default-artifact-root", artifacts.as_uri(), "--host", "127.0.0.1", "--port", str(port)]
    if workers is not None:
        command += ["--workers", str(workers)]
    else:
        # Uvicorn kills a worker that misses a 5 s health check; on a busy machine with MLflow's
        # workers pinned to one core they miss it while importing. A longer check changes nothing else.
        command += ["--uvicorn-opts", "--timeout-worker-healthcheck 120"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GYRE_"))}
    server = _spawn(f"mlflow-w{workers or 'default'}", command, env, f"http://127.0.0.1:{port}", logs, pin)
    server.wait_ready("/health")
    return server


def start_gyre(db_url: str, bootstrap_servers: str, artifacts: Path, logs: Path, pin: bool) -> tuple[Server, Server]:
    registry_port, tracking_port = free_port(), free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GYRE_"))}
    common = {
        "GYRE_DATABASE_URL": db_url, "GYRE_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "GYRE_KAFKA_TOPIC_PREFIX": "bench.", "GYRE_ARTIFACTS_ROOT": str(artifacts),
        "GYRE_TELEMETRY_LOG_LEVEL": "WARNING",
    }
    registry = _spawn("gyre-registry", [sys.executable, "-m", "gyre_registry"], {
        **base, **common, "GYRE_REGISTRY_HTTP_PORT": str(registry_port), "GYRE_REGISTRY_GRPC_PORT": str(free_port()),
    }, f"http://127.0.0.1:{registry_port}", logs, pin)
    tracking = _spawn("gyre-tracking", [sys.executable, "-m", "gyre_tracking"], {
        **base, **common, "GYRE_TRACKING_HTTP_PORT": str(tracking_port), "GYRE_TRACKING_GRPC_PORT": str(free_port()),
        "GYRE_TRACKING_CONSUME_EVENTS": "false", "GYRE_TRACKING_REGISTRY_URL": registry.url,
    }, f"http://127.0.0.1:{tracking_port}", logs, pin)
    registry.wait_ready("/readyz")
    tracking.wait_ready("/readyz")
    return tracking, registry


# -- the workload ---------------------------------------------------------------------------------

def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.status_code} "
                           f"{response.text[:300]}")
    return response.json() if response.content else {}


class _NoDelayConnection(http.client.HTTPConnection):
    """http.client sends a request's headers and body in two writes: without TCP_NODELAY the body
    waits for the server's delayed ACK of the headers (~10 ms a call here)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class TimedClient:
    """The timed calls' client: one keep-alive HTTP/1.1 connection (``http.client``), JSON in,
    ``(status, body bytes)`` out; the caller parses after stopping its clock."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.connection = _NoDelayConnection(parts.hostname or "127.0.0.1", parts.port, timeout=300)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             params: dict[str, str] | None = None) -> tuple[int, bytes]:
        if params:
            path += "?" + urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        try:
            self.connection.request(method, path, body=data, headers=headers)
            answer = self.connection.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed the idle keep-alive connection (uvicorn does after 5 s) before
            # reading this request: reconnect and send it again.
            self.connection.close()
            self.connection.request(method, path, body=data, headers=headers)
            answer = self.connection.getresponse()
        return answer.status, answer.read()

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        return self.call("POST", API + path, body)

    def close(self) -> None:
        self.connection.close()


def _parse(path: str, answer: tuple[int, bytes]) -> dict[str, Any]:
    status, data = answer
    if status != 200:
        raise RuntimeError(f"{path}: {status} {data[:300]!r}")
    return json.loads(data) if data else {}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _run_payload(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    ts = _now_ms()
    params = [{"key": f"p{i}", "value": f"{rng.random():.6f}"} for i in range(N_PARAMS)]
    metrics = [{"key": f"m{i}", "value": rng.random(), "timestamp": ts, "step": 0} for i in range(N_METRICS)]
    return params, metrics


async def seed_runs(url: str, experiment_id: str, count: int, concurrency: int = 16) -> float:
    """Create ``count`` runs of 10 params + 10 metrics through REST; seconds taken."""
    rng = random.Random(SEED)
    payloads = [_run_payload(rng) for _ in range(count)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url + API, timeout=120, limits=limits) as client:
        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                params, metrics = payloads[i]
                run = _check(await client.post("/runs/create", json={
                    "experiment_id": experiment_id, "start_time": _now_ms(), "run_name": f"seed-{i}"}))
                run_id = run["run"]["info"]["run_id"]
                _check(await client.post("/runs/log-batch", json={"run_id": run_id, "params": params,
                                                                   "metrics": metrics}))
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def create_experiment(client: httpx.Client, name: str) -> str:
    return str(_check(client.post(f"{API}/experiments/create", json={"name": name}))["experiment_id"])


def get_experiment_id(client: httpx.Client, name: str) -> str:
    return str(_check(client.get(f"{API}/experiments/get-by-name",
                                 params={"experiment_name": name}))["experiment"]["experiment_id"])


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def time_log_batch(client: httpx.Client, timed: TimedClient, experiment_id: str, repeats: int) -> float:
    """Median ms of one log-batch of 1000 metrics (10 keys x 100 steps) on a fresh run."""
    samples = []
    for r in range(repeats + 1):
        run_id = _check(client.post(f"{API}/runs/create", json={"experiment_id": experiment_id,
                                                                "start_time": _now_ms()}))["run"]["info"]["run_id"]
        ts = _now_ms()
        metrics = [{"key": f"batch{k}", "value": float(s * k), "timestamp": ts + s, "step": s}
                   for k in range(10) for s in range(100)]
        started = time.perf_counter()
        answer = timed.post("/runs/log-batch", {"run_id": run_id, "metrics": metrics})
        elapsed = time.perf_counter() - started
        _parse("runs/log-batch", answer)
        if r:  # the first is a warm-up
            samples.append(elapsed)
    return _median_ms(samples)


def rate_log_metric(client: httpx.Client, timed: TimedClient, experiment_id: str, seconds: float) -> float:
    """Sequential log-metric calls per second from one client for ``seconds``."""
    run_id = _check(client.post(f"{API}/runs/create", json={"experiment_id": experiment_id,
                                                            "start_time": _now_ms()}))["run"]["info"]["run_id"]
    for step in range(5):  # warm-up
        _parse("runs/log-metric", timed.post("/runs/log-metric", {"run_id": run_id, "key": "warm", "value": 1.0,
                                                                  "timestamp": _now_ms(), "step": step}))
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        status, data = timed.post("/runs/log-metric", {"run_id": run_id, "key": "loss", "value": 1.0 / (calls + 1),
                                                       "timestamp": _now_ms(), "step": calls})
        if status != 200:
            _parse("runs/log-metric", (status, data))
        calls += 1
    return calls / (time.perf_counter() - started)


def time_search(timed: TimedClient, experiment_id: str, max_results: int, repeats: int) -> tuple[float, int]:
    """Median ms of the raw runs/search call (until its whole body is in), and how many runs it returned."""
    body = {"experiment_ids": [experiment_id], "filter": SEARCH_FILTER, "order_by": SEARCH_ORDER,
            "max_results": max_results}
    returned = len(_parse("runs/search", timed.post("/runs/search", body)).get("runs", []))  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        answer = timed.post("/runs/search", body)
        samples.append(time.perf_counter() - started)
        _parse("runs/search", answer)
    return _median_ms(samples), returned


def time_register(client: httpx.Client, timed: TimedClient, name: str, experiment_id: str, repeats: int) -> float:
    """Median ms of model-versions/create + registered-models/alias (the pair), versions of one run's
    artifacts (MLflow checks that a version's source lies under its run's artifact location)."""
    run = _check(client.post(f"{API}/runs/create", json={"experiment_id": experiment_id,
                                                         "start_time": _now_ms()}))["run"]["info"]
    _check(client.post(f"{API}/registered-models/create", json={"name": name}))
    samples = []
    for i in range(repeats + 1):
        started = time.perf_counter()
        created = timed.post("/model-versions/create", {
            "name": name, "source": f"{run['artifact_uri']}/model{i}", "run_id": run["run_id"]})
        status, data = created
        if status != 200:
            _parse("model-versions/create", created)
        # The version number is read from the body (MLflow's client does the same).
        number = json.loads(data)["model_version"]["version"]
        aliased = timed.post("/registered-models/alias", {"name": name, "alias": "champion", "version": str(number)})
        elapsed = time.perf_counter() - started
        _parse("registered-models/alias", aliased)
        if i:
            samples.append(elapsed)
    return _median_ms(samples)


def time_floor(timed: TimedClient, path: str, repeats: int = 200) -> float:
    """Median ms of a trivial GET (the server's HTTP stack and the load generator, nothing else)."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        status, _ = timed.call("GET", path)
        samples.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status}")
    return _median_ms(samples)


def time_floor_httpx(url: str, path: str, repeats: int = 200) -> float:
    """:func:`time_floor` through an httpx client (the set-up client), for comparison."""
    samples = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(repeats):
            started = time.perf_counter()
            client.get(path).raise_for_status()
            samples.append(time.perf_counter() - started)
    return _median_ms(samples)


def seed_experiments(url: str, sizes: list[int], name: str) -> dict[str, float]:
    """One experiment ``search-<size>`` of ``size`` seeded runs per size; seeding rates (runs/s)."""
    rates = {}
    with httpx.Client(base_url=url, timeout=300) as client:
        for size in sizes:
            experiment = create_experiment(client, f"search-{size}")
            took = asyncio.run(seed_runs(url, experiment, size))
            rates[f"seed_{size}_runs_per_s"] = size / took
            print(f"  {name}: seeded {size} runs in {took:.1f}s ({size / took:.0f} runs/s)", flush=True)
    return rates


@dataclass
class Result:
    """One server's figures."""

    name: str
    rss_rest_mib: float = 0.0
    rss_after_mib: float = 0.0
    log_batch_ms: float = 0.0
    log_metric_per_s: float = 0.0
    search_ms: dict[int, float] = field(default_factory=dict)
    search_returned: dict[int, int] = field(default_factory=dict)
    register_ms: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def measure(name: str, url: str, sizes: list[int], args: argparse.Namespace, tag: str,
            seed: bool, health_path: str) -> Result:
    """Seed (when asked) and measure one server."""
    result = Result(name)
    if seed:
        result.extra.update(seed_experiments(url, sizes, name))
    timed = TimedClient(url)
    try:
        with httpx.Client(base_url=url, timeout=300) as client:
            result.extra["floor_ms"] = time_floor(timed, health_path)
            result.extra["floor_httpx_ms"] = time_floor_httpx(url, health_path)
            work = create_experiment(client, f"work-{tag}")
            result.log_batch_ms = time_log_batch(client, timed, work, args.repeats)
            result.log_metric_per_s = rate_log_metric(client, timed, work, args.rate_seconds)
            for size in sizes:
                ms, returned = time_search(timed, get_experiment_id(client, f"search-{size}"), 1000, args.repeats)
                result.search_ms[size], result.search_returned[size] = ms, returned
            result.register_ms = time_register(client, timed, f"bench-model-{tag}", work, args.register_repeats)
    finally:
        timed.close()
    print(f"  {name}: log_batch {result.log_batch_ms:.1f} ms, log_metric {result.log_metric_per_s:.0f}/s, "
          f"search {', '.join(f'{s}: {ms:.1f} ms' for s, ms in result.search_ms.items())}, "
          f"register {result.register_ms:.1f} ms; GET {health_path} {result.extra['floor_ms']:.2f} ms "
          f"({result.extra['floor_httpx_ms']:.2f} ms through httpx)", flush=True)
    return result


@contextmanager
def stack(workdir: Path) -> Iterator[tuple[Postgres, Any]]:
    postgres = Postgres(workdir / "pg" / "data", free_port())
    postgres.start()
    broker = None
    try:
        broker = start_broker(free_port(), workdir / "tansu.log")
        yield postgres, broker
    finally:
        if broker is not None:
            broker.stop()
        postgres.destroy()


def _pin_self(pin: bool) -> None:
    if pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})


def report(results: list[Result], gyre: Result, large: dict[str, float], sizes: list[int]) -> bool:
    """Print the table and PASS/FAIL lines; True when every target passed."""
    peers = [r for r in results if r is not gyre]

    def best(metric: Callable[[Result], float], lower_is_better: bool = True) -> Result:
        return min(peers, key=metric) if lower_is_better else max(peers, key=metric)

    rows: list[tuple[str, str, str, str, float, float]] = []

    def add(label: str, metric: Callable[[Result], float], unit: str, target: float, lower: bool = True) -> None:
        peer = best(metric, lower)
        ratio = (metric(peer) / metric(gyre)) if lower else (metric(gyre) / metric(peer))
        rows.append((label, f"{metric(peer):.1f} {unit} ({peer.name})", f"{metric(gyre):.1f} {unit}",
                     f"{ratio:.1f}x", ratio, target))

    add("log-batch, 1000 metrics", lambda r: r.log_batch_ms, "ms", 10)
    add("log-metric, sequential", lambda r: r.log_metric_per_s, "calls/s", 10, lower=False)
    for size in sizes:
        def search_ms(r: Result, s: int = size) -> float:
            return r.search_ms[s]
        add(f"search_runs over {size:,} runs", search_ms, "ms", 10)
    add("create version + set alias", lambda r: r.register_ms, "ms", 5)
    print("\n| measurement | MLflow 3.17.2 (faster config) | Gyre | ratio | target | result |")
    print("|---|---|---|---|---|---|")
    ok = True
    for label, peer, ours, ratio_text, ratio, target in rows:
        passed = ratio >= target
        ok &= passed
        print(f"| {label} | {peer} | {ours} | {ratio_text} | >= {target:.0f}x | {'PASS' if passed else 'FAIL'} |")
    if "search_ms" in large:
        passed = large["search_ms"] < 100
        ok &= passed
        print(f"| Gyre alone, search over {int(large['runs']):,} runs, max_results=100 | — | "
              f"{large['search_ms']:.1f} ms | — | < 100 ms | {'PASS' if passed else 'FAIL'} |")
    print("\n| server | RSS at rest (MiB) | RSS after the runs (MiB) | trivial GET (ms) | the same through httpx |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r.name} | {r.rss_rest_mib:.0f} | {r.rss_after_mib:.0f} | {r.extra.get('floor_ms', 0):.2f} | "
              f"{r.extra.get('floor_httpx_ms', 0):.2f} |")
    for size in sizes:
        counts = {r.name: r.search_returned[size] for r in results}
        same = len(set(counts.values())) == 1
        ok &= same
        print(f"search over {size:,} runs returned {counts} -> {'same' if same else 'DIFFERENT: FAIL'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 runs only, fewer repeats")
    parser.add_argument("--pin", action="store_true",
                        help="servers on core 0 (taskset -c 0), this load generator on core 1")
    parser.add_argument("--large-runs", type=int, default=100_000, help="runs for the Gyre-alone search (0: skip)")
    args = parser.parse_args()
    args.repeats = 3 if args.quick else 7
    args.register_repeats = 10 if args.quick else 30
    args.rate_seconds = 2.0 if args.quick else 5.0
    sizes = [1000] if args.quick else [1000, 10_000]
    large_runs = 0 if args.quick else args.large_runs

    python = mlflow_env.ensure()
    _pin_self(args.pin)
    workdir = Path(tempfile.mkdtemp(prefix="gyre-bench-mlflow-"))
    logs = workdir / "logs"
    logs.mkdir()
    results: list[Result] = []
    large: dict[str, float] = {}
    print(f"mlflow vs gyre: work dir {workdir}, pin={args.pin}, sizes={sizes}, large={large_runs}", flush=True)
    try:
        with stack(workdir) as (postgres, broker):
            postgres.create_database("mlflow")
            postgres.create_database("gyre")
            mlflow_db = postgres.url("mlflow").replace("postgresql://", "postgresql+psycopg2://")
            # Seeding is not measured: MLflow gets both cores for it, then is restarted pinned.
            seeder = start_mlflow(python, mlflow_db, workdir / "mlflow-artifacts", logs, workers=None, pin=False)
            try:
                seed_experiments(seeder.url, sizes, "mlflow")
            finally:
                seeder.stop()
            for workers in (None, 1):
                server = start_mlflow(python, mlflow_db, workdir / "mlflow-artifacts", logs, workers=workers,
                                      pin=args.pin)
                try:
                    time.sleep(2)  # let the workers finish importing before "at rest"
                    rest = server.rss_mib()
                    result = measure(server.name, server.url, sizes, args, server.name, seed=False,
                                     health_path="/health")
                    result.rss_rest_mib, result.rss_after_mib = rest, server.rss_mib()
                    results.append(result)
                finally:
                    server.stop()
            tracking, registry = start_gyre(postgres.url("gyre"), broker.bootstrap_servers, workdir / "gyre-artifacts",
                                            logs, args.pin)
            try:
                time.sleep(2)
                rest = tracking.rss_mib()
                gyre = measure("gyre", tracking.url, sizes, args, "gyre", True, health_path="/healthz")
                gyre.rss_rest_mib, gyre.rss_after_mib = rest, tracking.rss_mib()
                gyre.extra["registry_rss_mib"] = registry.rss_mib()
                results.append(gyre)
                if large_runs:
                    with httpx.Client(base_url=tracking.url, timeout=300) as client:
                        experiment = create_experiment(client, f"search-{large_runs}")
                        took = asyncio.run(seed_runs(tracking.url, experiment, large_runs))
                        print(f"  gyre: seeded {large_runs} runs in {took:.0f}s", flush=True)
                        timed = TimedClient(tracking.url)
                        try:
                            ms, returned = time_search(timed, experiment, 100, args.repeats)
                        finally:
                            timed.close()
                    large = {"runs": large_runs, "search_ms": ms, "returned": returned}
            finally:
                tracking.stop()
                registry.stop()
    except Exception as exc:  # the script could not run: say why and exit non-zero
        print(f"mlflow_compare could not run: {exc}", file=sys.stderr)
        return 2
    ok = report(results, gyre, large, sizes)
    out = ROOT / "bench" / "results" / "mlflow_compare.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": [r.__dict__ for r in results], "large": large, "all_passed": ok},
                              indent=2, default=str))
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'all targets PASS' if ok else 'some targets FAIL'}; results in {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
