"""Drive a server with NVIDIA's tritonclient, unchanged, and print what it saw as JSON (tests only).

Runs in the tritonclient environment (``tests/support/tritonclient_env.py``), never in Gyre's:
tritonclient needs protobuf 6 and its ``inference`` protos clash with gyre_contracts'. It imports
nothing from Gyre.

Usage: ``python triton_client.py < plan.json``; the plan is
``{"grpc": "host:port", "http": "host:port", "calls": [call, ...]}`` and each call is
``{"protocol": "grpc"|"http", "op": <op>, ...arguments}`` with ``op`` one of ``server_live``,
``server_ready``, ``server_metadata``, ``model_ready``, ``model_metadata`` (``model``,
``version``) and ``infer`` (``model``, ``version``, ``inputs``: ``[{name, datatype, shape, data}]``
with ``data`` flat (BYTES as str), ``outputs``: names, ``request_id``, ``parameters``, ``binary``:
use the binary tensor extension over HTTP, tritonclient's default). The answer (stdout) is a list
with, per call, ``{"ok": result}`` or ``{"error": {"status": ..., "message": ...}}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype


def _array(spec: dict[str, Any]) -> np.ndarray[Any, Any]:
    if spec["datatype"] == "BYTES":
        return np.array([str(v).encode() for v in spec["data"]], dtype=np.object_).reshape(spec["shape"])
    return np.array(spec["data"], dtype=triton_to_np_dtype(spec["datatype"])).reshape(spec["shape"])


def _jsonable(array: np.ndarray[Any, Any]) -> list[Any]:
    flat = array.reshape(-1)
    if flat.dtype == np.object_:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
    return list(flat.tolist())


def _infer(client: Any, module: Any, call: dict[str, Any]) -> dict[str, Any]:
    binary = call.get("binary", True)
    inputs = []
    for spec in call["inputs"]:
        tensor = module.InferInput(spec["name"], list(spec["shape"]), spec["datatype"])
        if module is httpclient:
            tensor.set_data_from_numpy(_array(spec), binary_data=binary)
        else:
            tensor.set_data_from_numpy(_array(spec))
        inputs.append(tensor)
    outputs = None
    if call.get("outputs"):
        outputs = [module.InferRequestedOutput(name, binary_data=binary) if module is httpclient
                   else module.InferRequestedOutput(name) for name in call["outputs"]]
    result = client.infer(call["model"], inputs, model_version=call.get("version", ""), outputs=outputs,
                          request_id=call.get("request_id", ""), parameters=call.get("parameters"))
    response = result.get_response(as_json=True) if module is grpcclient else result.get_response()
    described = {output["name"]: output for output in response["outputs"]}
    parameters = response.get("parameters", {})
    if module is grpcclient:  # {"key": {"string_param": "..."}} -> {"key": "..."}
        parameters = {k: next(iter(v.values())) for k, v in parameters.items()}
    return {
        "id": response.get("id", ""),
        "model_name": response.get("model_name"),
        "model_version": response.get("model_version"),
        "parameters": parameters,
        "outputs": {name: {"datatype": output["datatype"], "shape": [int(d) for d in output["shape"]],
                           "data": _jsonable(result.as_numpy(name))} for name, output in described.items()},
    }


def run(plan: dict[str, Any]) -> list[dict[str, Any]]:
    clients = {"grpc": (grpcclient.InferenceServerClient(url=plan["grpc"]), grpcclient),
               "http": (httpclient.InferenceServerClient(url=plan["http"], network_timeout=30.0), httpclient)}
    answers = []
    for call in plan["calls"]:
        client, module = clients[call["protocol"]]
        op = call["op"]
        try:
            if op == "server_live":
                value: Any = client.is_server_live()
            elif op == "server_ready":
                value = client.is_server_ready()
            elif op == "server_metadata":
                value = (client.get_server_metadata(as_json=True) if module is grpcclient
                         else client.get_server_metadata())
            elif op == "model_ready":
                value = client.is_model_ready(call["model"], call.get("version", ""))
            elif op == "model_metadata":
                value = (client.get_model_metadata(call["model"], call.get("version", ""), as_json=True)
                         if module is grpcclient else client.get_model_metadata(call["model"], call.get("version", "")))
            elif op == "infer":
                value = _infer(client, module, call)
            else:
                raise ValueError(f"unknown op {op!r}")
            answers.append({"ok": value})
        except InferenceServerException as exc:
            answers.append({"error": {"status": str(exc.status()), "message": exc.message()}})
    for client, _ in clients.values():
        client.close()
    return answers


if __name__ == "__main__":
    json.dump(run(json.load(sys.stdin)), sys.stdout)
