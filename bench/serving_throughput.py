"""Gyre serving against MLServer 1.7.1 and a bare grpc.aio server, in one run, on the same machine.

Every server is a real process pinned to core 0 (``taskset -c 0``); the load generator
(``bench/peers/loadgen.py``, the same for every server) runs pinned to core 1, and so does the
Tansu broker Gyre publishes its inference events to. The model is the same fitted estimator for
both (skops for Gyre through registry events and the artifact store, joblib for MLServer); the
payload is the same (``input-0`` FP64 ``[1, 4]``, raw contents over gRPC, a JSON list over REST).
MLServer comes from its own venv, ``.bench-envs/mlserver``, created on first use.

Cases, each measured ``--rounds`` times (median reported), the cases interleaved round by round so a
change in machine load hits every server alike:

* gRPC ModelInfer at concurrency 32 (throughput) and 8 (p99 latency); REST infer at concurrency 8;
  a LogisticRegression (``iris``), on Gyre (defaults, and with adaptive batching), MLServer
  defaults, tuned (debug off, ``parallel_workers=0``) and tuned with adaptive batching (the same
  64 rows / 2 ms as Gyre's), and the bare grpc.aio ceiling; "MLServer's fastest" is the best of
  its three;
* adaptive batching on a 100-tree random forest (``forest``), gRPC at concurrency 32, batching off
  and on, for Gyre and MLServer (tuned) with the same policy (64 rows, 2 ms).

Prints a table and the ratios against the issue's targets (PASS/FAIL); writes every run to
``bench/results/serving_throughput-<time>.json``.

    .venv/bin/python bench/serving_throughput.py            # 3 x 10 s per case (~12 min)
    .venv/bin/python bench/serving_throughput.py --quick    # 1 x 3 s per case
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from peers import servers
from peers.envs import ensure_env

from gyre_stack.broker import start_broker
from gyre_stack.ports import free_port

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SERVER_CPU, LOAD_CPU = 0, 1
BATCHING = {"max_batch_rows": 64, "max_wait_ms": 2}
"""Gyre's adaptive-batching policy (``GYRE_SERVING_BATCHING``); MLServer gets the same limits."""
MLSERVER_CONFIGS = ("mlserver-default", "mlserver-tuned", "mlserver-batching")
"""MLServer's configurations in the LogisticRegression cases; "its fastest" is the best of them."""
MLSERVER_BATCHING = {"max_batch_size": BATCHING["max_batch_rows"], "max_batch_time": BATCHING["max_wait_ms"] / 1000}


@dataclass(frozen=True)
class Case:
    """One measurement: a server, a protocol and a concurrency."""

    key: str
    server: str
    protocol: str
    concurrency: int
    model: str


def _gyre_batching_env(model: str) -> dict[str, str]:
    return {"GYRE_SERVING_BATCHING": json.dumps({model: BATCHING})}


def _loadgen(case: Case, target: str, warmup: float, duration: float) -> dict[str, Any]:
    cmd = ["taskset", "-c", str(LOAD_CPU), sys.executable, str(HERE / "peers" / "loadgen.py"), case.protocol, target,
           "--model", case.model, "-c", str(case.concurrency), "-w", str(warmup), "-d", str(duration), "--uvloop"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=warmup + duration + 120)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed for {case.key}: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    result.pop("sample_reply", None)
    return result


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def _measure_group(starters: dict[str, Callable[[], servers.Server]], cases: list[Case], rounds: int,
                   warmup: float, duration: float, results: dict[str, Any]) -> None:
    started: dict[str, servers.Server] = {}
    try:
        for name, start in starters.items():
            print(f"  starting {name}", flush=True)
            started[name] = start()
        for round_no in range(1, rounds + 1):
            for case in cases:
                server = started[case.server]
                target = server.grpc_target if case.protocol == "grpc" else server.http_target
                assert target is not None
                run = _loadgen(case, target, warmup, duration)
                run["round"] = round_no
                run["loadavg"] = _loadavg()
                results["runs"].setdefault(case.key, []).append(run)
                print(f"  round {round_no} {case.key:34s} {run['throughput']:8.0f} req/s  p99 {run['p99_ms']:6.1f} ms"
                      f"  errors {run['errors']}", flush=True)
                if round_no == 1 and case.server not in results["memory_mib"]:
                    # After its first measured run: warmed up, with its model loaded.
                    results["memory_mib"][case.server] = server.memory()
    finally:
        for server in started.values():
            server.stop()


def _summary(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {key: {"throughput": _median(runs, "throughput"), "p50_ms": _median(runs, "p50_ms"),
                  "p99_ms": _median(runs, "p99_ms"), "errors": sum(r["errors"] for r in runs)}
            for key, runs in results["runs"].items()}


def _targets(s: dict[str, dict[str, float]]) -> list[tuple[str, float, str, bool]]:
    """(what, measured ratio, target, met) for each target of the issue."""
    def thr(key: str) -> float:
        return s[key]["throughput"] if key in s else float("nan")

    def p99(key: str) -> float:
        return s[key]["p99_ms"] if key in s else float("nan")

    checks: list[tuple[str, float, str, bool]] = []
    for gyre, label in (("gyre", "Gyre"), ("gyre-batching", "Gyre+batching")):
        g = f"grpc-c32/{gyre}"
        if g not in s:
            continue
        best = max(thr(f"grpc-c32/{name}") for name in MLSERVER_CONFIGS)
        for what, ratio, goal in (
            (f"{label} gRPC c32 / MLServer defaults", thr(g) / thr("grpc-c32/mlserver-default"), 3.0),
            (f"{label} gRPC c32 / MLServer fastest", thr(g) / best, 2.0),
            (f"{label} gRPC c32 / bare grpc.aio", thr(g) / thr("grpc-c32/bare"), 0.6),
        ):
            checks.append((what, ratio, f">= {goal}", ratio >= goal))
    if "grpc-c8/gyre" in s:
        # Against the MLServer configuration with the lower p99: the stricter reading.
        best_p99 = min(p99(f"grpc-c8/{name}") for name in MLSERVER_CONFIGS)
        ratio = p99("grpc-c8/gyre") / best_p99
        checks.append(("Gyre p99 gRPC c8 / MLServer's lower p99", ratio, "<= 0.5", ratio <= 0.5))
    if "rest-c8/gyre" in s:
        best = max(thr(f"rest-c8/{name}") for name in MLSERVER_CONFIGS)
        ratio = thr("rest-c8/gyre") / best
        checks.append(("Gyre REST c8 / MLServer's faster REST", ratio, ">= 3.0", ratio >= 3.0))
    if "forest-c32/gyre-on" in s:
        ratio = thr("forest-c32/gyre-on") / thr("forest-c32/gyre-off")
        checks.append(("Gyre forest batching on / off (c32)", ratio, ">= 2.0", ratio >= 2.0))
        mls = thr("forest-c32/mlserver-on") / thr("forest-c32/mlserver-off")
        checks.append(("MLServer forest batching on / off (c32), for reference", mls, "-", True))
    return checks


def _print(results: dict[str, Any]) -> None:
    s = results["summary"]
    print(f"\nmedian of {results['rounds']} x {results['duration_s']:.0f} s; server on core {SERVER_CPU}, "
          f"load generator on core {LOAD_CPU}; load average {results['loadavg_start']} -> {results['loadavg_end']}")
    print(f"| {'case':34s} | {'req/s':>8s} | {'p50 ms':>7s} | {'p99 ms':>7s} | {'errors':>6s} |")
    print(f"|{'-' * 36}|{'-' * 9}:|{'-' * 8}:|{'-' * 8}:|{'-' * 7}:|")
    for key, row in s.items():
        print(f"| {key:34s} | {row['throughput']:8.0f} | {row['p50_ms']:7.2f} | {row['p99_ms']:7.2f} | "
              f"{row['errors']:6.0f} |")
    print("\nmemory (RSS MiB after warm-up; total includes child processes):")
    for name, mem in results["memory_mib"].items():
        print(f"  {name:22s} main {mem['main']:7.1f}  total {mem['total']:7.1f}")
    print("\ntargets:")
    for what, ratio, goal, met in results["targets"]:
        verdict = "" if goal == "-" else ("PASS" if met else "FAIL")
        print(f"  {what:58s} {ratio:6.2f}  {goal:8s} {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s per case")
    parser.add_argument("--rounds", type=int, help="measured runs per case (default 3; 1 with --quick)")
    parser.add_argument("--duration", type=float, help="measured seconds per run (default 10; 3 with --quick)")
    parser.add_argument("--skip-forest", action="store_true", help="skip the batching cases")
    parser.add_argument("--skip-iris", action="store_true", help="skip the LogisticRegression cases")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    duration = args.duration or (3.0 if args.quick else 10.0)
    warmup = 1.0 if args.quick else 2.0
    if len(os.sched_getaffinity(0)) < 2:
        print("needs two cores (server and load generator on one each)")
        return 1

    mlserver_python = ensure_env("mlserver")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = RESULTS / f"serving-work-{stamp}"
    models = servers.train_models(workdir)
    servers.check_same_answer(models)
    results: dict[str, Any] = {"started_at": stamp, "rounds": rounds, "duration_s": duration, "warmup_s": warmup,
                               "batching": BATCHING, "loadavg_start": _loadavg(), "runs": {}, "memory_mib": {}}
    broker = start_broker(free_port(), workdir / "logs" / "tansu.log")
    # The broker takes Gyre's inference events: keep it off the server's core.
    subprocess.run(["taskset", "-p", "-c", str(LOAD_CPU), str(broker.process.pid)], check=True, capture_output=True)
    bootstrap = broker.bootstrap_servers
    iris, forest = models["iris"], models["forest"]
    try:
        if not args.skip_iris:
            print("LogisticRegression (iris):", flush=True)
            starters: dict[str, Callable[[], servers.Server]] = {
                "gyre": lambda: servers.start_gyre(workdir, "iris", iris, SERVER_CPU, bootstrap_servers=bootstrap),
                "gyre-batching": lambda: servers.start_gyre(workdir, "iris-batching", iris, SERVER_CPU,
                                                            bootstrap_servers=bootstrap,
                                                            env=_gyre_batching_env(iris.name)),
                "mlserver-default": lambda: servers.start_mlserver(workdir, "default", [iris], SERVER_CPU, tuned=False,
                                                                   python=mlserver_python),
                "mlserver-tuned": lambda: servers.start_mlserver(workdir, "tuned", [iris], SERVER_CPU, tuned=True,
                                                                 python=mlserver_python),
                # MLServer's adaptive batching too: "its fastest configuration" must include it.
                "mlserver-batching": lambda: servers.start_mlserver(workdir, "tuned-batching", [iris], SERVER_CPU,
                                                                    tuned=True, batching=MLSERVER_BATCHING,
                                                                    python=mlserver_python),
                "bare": lambda: servers.start_bare(workdir, SERVER_CPU),
            }
            cases = [Case(f"grpc-c32/{name}", name, "grpc", 32, "iris") for name in starters]
            cases += [Case(f"grpc-c8/{name}", name, "grpc", 8, "iris") for name in starters if name != "bare"]
            cases += [Case(f"rest-c8/{name}", name, "rest", 8, "iris") for name in starters if name != "bare"]
            _measure_group(starters, cases, rounds, warmup, duration, results)
        if not args.skip_forest:
            print("100-tree random forest (forest), adaptive batching:", flush=True)
            starters = {
                "gyre-off": lambda: servers.start_gyre(workdir, "forest-off", forest, SERVER_CPU,
                                                       bootstrap_servers=bootstrap),
                "gyre-on": lambda: servers.start_gyre(workdir, "forest-on", forest, SERVER_CPU,
                                                      bootstrap_servers=bootstrap, env=_gyre_batching_env(forest.name)),
                "mlserver-off": lambda: servers.start_mlserver(workdir, "forest-off", [forest], SERVER_CPU, tuned=True,
                                                               python=mlserver_python),
                "mlserver-on": lambda: servers.start_mlserver(workdir, "forest-on", [forest], SERVER_CPU, tuned=True,
                                                              batching=MLSERVER_BATCHING, python=mlserver_python),
            }
            cases = [Case(f"forest-c32/{name}", name, "grpc", 32, "forest") for name in starters]
            _measure_group(starters, cases, rounds, warmup, duration, results)
    finally:
        broker.stop()
    results["loadavg_end"] = _loadavg()
    results["summary"] = _summary(results)
    results["targets"] = _targets(results["summary"])
    _print(results)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"serving_throughput-{stamp}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"took {time.monotonic() - started:.0f}s")
    sys.exit(code)
