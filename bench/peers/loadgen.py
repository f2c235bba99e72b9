"""Closed-loop load generator for Open Inference Protocol servers, the same for every server.

N workers each send one request, wait for its answer and send the next (closed loop), for a warm-up
and then a fixed duration; only answers whose request started and finished inside the measured
window count, and each one's latency is recorded. The request bytes are built once:

* gRPC: ``inference.GRPCInferenceService/ModelInfer`` on one ``grpc.aio`` channel, sending the
  serialised ``ModelInferRequest`` as bytes and keeping the reply as bytes (no protobuf work in
  the generator's loop);
* REST: ``POST /v2/models/<model>/infer`` over raw asyncio streams, one keep-alive HTTP/1.1
  connection per worker (a pre-built request; the answer is read by ``Content-Length``).

The payload is one row of four FP64 features, ``input-0`` of shape ``[1, 4]``, raw little-endian
in gRPC (``raw_input_contents``) and a flat ``data`` list in JSON: what both Gyre and MLServer accept.

Run as a process (pinned with ``taskset`` by the benchmark); prints one JSON object::

    .venv/bin/python bench/peers/loadgen.py grpc 127.0.0.1:8081 --model iris -c 32 -d 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import grpc
import numpy as np

from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as pb

ROW = (5.1, 3.5, 1.4, 0.2)
"""The features sent: the first iris row (cm)."""
INPUT_NAME = "input-0"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


def grpc_payload(model: str, rows: int = 1) -> bytes:
    """The serialised ``ModelInferRequest``: ``input-0`` FP64 ``[rows, 4]`` in raw contents."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=INPUT_NAME, datatype="FP64", shape=[rows, len(ROW)])
    request.raw_input_contents.append(np.tile(np.asarray(ROW, dtype="<f8"), (rows, 1)).tobytes())
    return request.SerializeToString()


def rest_payload(model: str, rows: int = 1) -> tuple[str, bytes]:
    """The REST path and JSON body carrying the same values as :func:`grpc_payload`."""
    body = {"inputs": [{"name": INPUT_NAME, "shape": [rows, len(ROW)], "datatype": "FP64",
                        "data": list(ROW) * rows}]}
    return f"/v2/models/{model}/infer", json.dumps(body, separators=(",", ":")).encode()


@dataclass
class Result:
    """One measured run. Latencies in milliseconds; throughput in answered requests per second."""

    protocol: str
    concurrency: int
    duration_s: float
    requests: int = 0
    errors: int = 0
    throughput: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    first_error: str = ""
    sample_reply: str = field(default="", repr=False)


Call = Callable[[], Awaitable[bytes]]


async def _closed_loop(calls: list[Call], warmup_s: float, duration_s: float, result: Result) -> None:
    """Run one worker per entry of ``calls`` until warm-up + duration are over; fill ``result``."""
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup_s
    end = start + duration_s
    latencies: list[float] = []
    errors = 0
    first_error = ""
    clock = time.perf_counter
    offset = clock() - loop.time()  # the loop's clock and perf_counter may differ by a constant

    async def worker(call: Call) -> None:
        nonlocal errors, first_error
        measured_start, measured_end = start + offset, end + offset
        while True:
            began = clock()
            if began >= measured_end:
                return
            try:
                reply = await call()
            except Exception as exc:  # counted, not fatal: a server under load may refuse some
                if measured_start <= began:
                    errors += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
                continue
            done = clock()
            if not result.sample_reply:
                result.sample_reply = reply[:200].hex()
            if began >= measured_start and done <= measured_end:
                latencies.append(done - began)

    await asyncio.gather(*(worker(call) for call in calls))
    result.requests = len(latencies)
    result.errors = errors
    result.first_error = first_error
    result.throughput = len(latencies) / duration_s
    if latencies:
        ordered = sorted(latencies)
        result.p50_ms = ordered[int(0.50 * (len(ordered) - 1))] * 1000
        result.p90_ms = ordered[int(0.90 * (len(ordered) - 1))] * 1000
        result.p99_ms = ordered[int(0.99 * (len(ordered) - 1))] * 1000
        result.mean_ms = statistics.fmean(ordered) * 1000


async def run_grpc(target: str, model: str, concurrency: int, warmup_s: float, duration_s: float,
                   rows: int = 1) -> Result:
    """Closed-loop ModelInfer calls on one channel; raises when the first call fails."""
    payload = grpc_payload(model, rows)
    result = Result("grpc", concurrency, duration_s)
    async with grpc.aio.insecure_channel(target) as channel:
        # No serializer: bytes in, bytes out.
        infer = channel.unary_unary(MODEL_INFER)
        reply = await infer(payload, timeout=30)
        pb.ModelInferResponse.FromString(reply)  # a sanity check that it answers the protocol

        def call() -> Awaitable[bytes]:
            return infer(payload, timeout=30)  # type: ignore[no-any-return]

        await _closed_loop([call] * concurrency, warmup_s, duration_s, result)
    return result


class _HttpConnection:
    """One keep-alive HTTP/1.1 connection posting the same pre-built request over and over."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port, self.request = host, port, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self) -> bytes:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(self.request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = -1
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                lowered = name.strip().lower()
                if lowered == b"content-length":
                    length = int(value)
                elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            body = await (self._chunked() if chunked else self.reader.readexactly(max(length, 0)))
        except BaseException:
            self.close()
            raise
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
        return body

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await self.reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(chunk[:-2])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run_rest(target: str, model: str, concurrency: int, warmup_s: float, duration_s: float,
                   rows: int = 1) -> Result:
    """Closed-loop REST infer calls, one keep-alive connection per worker."""
    host, _, port = target.rpartition(":")
    path, body = rest_payload(model, rows)
    request = (f"POST {path} HTTP/1.1\r\nHost: {target}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    connections = [_HttpConnection(host, int(port), request) for _ in range(concurrency)]
    result = Result("rest", concurrency, duration_s)
    try:
        json.loads(await connections[0].call())  # a sanity check that it answers JSON
        await _closed_loop([c.call for c in connections], warmup_s, duration_s, result)
    finally:
        for connection in connections:
            connection.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("protocol", choices=("grpc", "rest"))
    parser.add_argument("target", help="host:port")
    parser.add_argument("--model", default="iris")
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("-w", "--warmup", type=float, default=2.0, help="seconds not measured first")
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--uvloop", action="store_true", help="run the generator on uvloop")
    args = parser.parse_args()
    run = run_grpc if args.protocol == "grpc" else run_rest
    coroutine = run(args.target, args.model, args.concurrency, args.warmup, args.duration, args.rows)
    if args.uvloop:
        import uvloop

        result = uvloop.run(coroutine)
    else:
        result = asyncio.run(coroutine)
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
