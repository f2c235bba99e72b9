"""The ceiling: a bare ``grpc.aio`` server whose ``ModelInfer`` returns a fixed reply.

No protobuf parsing, no model: the request bytes are ignored and the same pre-serialised
``ModelInferResponse`` (one INT64 ``predict`` in raw contents, like the real servers') is returned.
What is left is grpc.aio's own cost per call, which no Python OIP server on grpc.aio can beat.

    .venv/bin/python bench/peers/bare_grpc.py 50051
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc
import numpy as np

from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as pb


def fixed_reply(model: str = "iris") -> bytes:
    reply = pb.ModelInferResponse(model_name=model, model_version="1", id="bare")
    reply.outputs.add(name="predict", datatype="INT64", shape=[1])
    reply.raw_output_contents.append(np.zeros(1, dtype="<i8").tobytes())
    return reply.SerializeToString()


async def serve(port: int) -> None:
    reply = fixed_reply()

    async def model_infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return reply

    async def server_ready(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return pb.ServerReadyResponse(ready=True).SerializeToString()

    # No (de)serialisers: bytes in, bytes out.
    handler = grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer),
        "ServerReady": grpc.unary_unary_rpc_method_handler(server_ready),
    })
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
