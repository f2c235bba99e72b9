"""Open Inference Protocol V2 over REST (JSON): decode, call the :class:`DataPlane`, encode.

Errors are ``{"error": "<message>"}`` with 400 (invalid request), 404 (unknown model or version),
413 (too many rows or bytes), 500 (the model failed) or 503. Triton's binary tensor data extension
is supported both ways (what ``tritonclient.http`` sends and asks for by default). Health and
model-ready endpoints answer 200 for true and 400 for false, as the protocol says.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from gyre_serving import metrics
from gyre_serving.domain.errors import InvalidRequestError, ServingError
from gyre_serving.domain.tensors import DEFAULT_MAX_ELEMENTS, Tensor, from_raw, from_values, to_raw
from gyre_serving.handlers import DataPlane, InferenceRequest, InferenceResponse

BINARY_HEADER = "inference-header-content-length"
"""Header of Triton's binary tensor data extension: the length of the JSON part of the body; the
binary tensors follow it (``tritonclient.http`` uses it by default)."""
BINARY_DATA_SIZE = "binary_data_size"
"""Tensor parameter of the binary extension: the byte size of the tensor's binary data."""


class RequestInput(BaseModel):
    """One input tensor of a REST inference request."""

    model_config = ConfigDict(extra="ignore")

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Any = None


class RequestOutput(BaseModel):
    """One requested output."""

    model_config = ConfigDict(extra="ignore")

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequestBody(BaseModel):
    """The JSON body of ``POST /v2/models/{name}[/versions/{version}]/infer``."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


def _error(exc: ServingError) -> JSONResponse:
    """The protocol's error body ``{"error": "<message>"}`` with the shared HTTP status (gyre_common.errors)."""
    return JSONResponse({"error": str(exc)}, status_code=exc.http_status)


def decode_body(body: bytes, model_name: str, model_version: str, json_length: int | None = None, *,
                max_elements: int = DEFAULT_MAX_ELEMENTS) -> tuple[InferenceRequest, InferenceRequestBody]:
    """Parse and validate a REST inference request body (and the parsed JSON, for its output options).

    Args:
        json_length: the ``Inference-Header-Content-Length`` header of the binary extension: the
            body is that many bytes of JSON, then the binary inputs (``binary_data_size`` each), in order.

    Raises:
        InvalidRequestError: not JSON, not the protocol's shape, or tensors that do not decode.
    """
    binary = b""
    if json_length is not None:
        if not 0 <= json_length <= len(body):
            raise InvalidRequestError(f"{BINARY_HEADER} is {json_length} but the body has {len(body)} bytes")
        body, binary = body[:json_length], body[json_length:]
    try:
        payload = InferenceRequestBody.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
                             for err in exc.errors()[:5])
        raise InvalidRequestError(f"invalid inference request: {problems}") from None
    inputs = []
    offset = 0
    for item in payload.inputs:
        size = (item.parameters or {}).get(BINARY_DATA_SIZE)
        if size is None:
            if item.data is None:
                raise InvalidRequestError(f"input {item.name!r} has neither data nor {BINARY_DATA_SIZE}")
            inputs.append(from_values(item.name, item.datatype, item.shape, item.data, max_elements=max_elements))
            continue
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise InvalidRequestError(f"input {item.name!r}: {BINARY_DATA_SIZE}={size!r} does not fit the "
                                      f"{len(binary) - offset} binary bytes left in the body")
        inputs.append(from_raw(item.name, item.datatype, item.shape, binary[offset:offset + size],
                               max_elements=max_elements))
        offset += size
    if offset != len(binary):
        raise InvalidRequestError(f"the body has {len(binary) - offset} binary bytes no input claims")
    request = InferenceRequest(
        model_name=model_name,
        model_version=model_version,
        id=payload.id or "",
        inputs=inputs,
        outputs=[output.name for output in payload.outputs or []],
        parameters=payload.parameters or {},
    )
    return request, payload


def _json_data(tensor: Tensor) -> list[Any]:
    flat = tensor.data.reshape(-1)
    if tensor.datatype == "BYTES":
        return [item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item) for item in flat]
    return list(flat.tolist())


def encode_response(response: InferenceResponse, binary: frozenset[str] = frozenset()) -> tuple[dict[str, Any], bytes]:
    """The JSON body of an inference response (output data flattened, row-major), and the binary
    data of the outputs named in ``binary`` (the binary extension), concatenated in output order."""
    outputs = []
    blobs = []
    for t in response.outputs:
        output: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        if t.name in binary:
            blob = to_raw(t)
            blobs.append(blob)
            output["parameters"] = {BINARY_DATA_SIZE: len(blob)}
        else:
            output["data"] = _json_data(t)
        outputs.append(output)
    body = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "parameters": dict(response.parameters),
        "outputs": outputs,
    }
    return body, b"".join(blobs)


def _binary_outputs(payload: InferenceRequestBody, response: InferenceResponse) -> frozenset[str]:
    """Outputs the client asked to get as binary data (per output, or all with ``binary_data_output``)."""
    if payload.outputs:
        return frozenset(o.name for o in payload.outputs if (o.parameters or {}).get("binary_data") is True)
    if (payload.parameters or {}).get("binary_data_output") is True:
        return frozenset(t.name for t in response.outputs)
    return frozenset()


def router(dataplane: DataPlane) -> APIRouter:
    """The ``/v2`` routes over ``dataplane``.

    Inference bodies are bounded by the service's one HTTP body limit, ``http_max_body_bytes``
    (:class:`gyre_common.limits.BodyLimitMiddleware`, 413 ``too_large``): the middleware refuses a
    declared ``Content-Length`` above it before reading, and cuts a chunked body off as it passes it.
    """
    api = APIRouter(prefix="/v2", tags=["inference"])

    @api.get("")
    async def server_metadata() -> dict[str, Any]:
        meta = dataplane.server_metadata()
        return {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}

    @api.get("/health/live")
    async def live() -> JSONResponse:
        ok = dataplane.live()
        return JSONResponse({"live": ok}, status_code=200 if ok else 400)

    @api.get("/health/ready")
    async def ready() -> JSONResponse:
        ok = dataplane.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 400)

    async def model_ready(name: str, version: str) -> JSONResponse:
        if dataplane.model_ready(name, version):
            return JSONResponse({"name": name, "ready": True})
        if dataplane.repository.get(name) is None:
            return JSONResponse({"name": name, "ready": False, "error": f"model {name!r} is not served here"},
                                status_code=404)
        return JSONResponse({"name": name, "ready": False}, status_code=400)

    @api.get("/models/{name}/ready")
    async def model_ready_any(name: str) -> JSONResponse:
        return await model_ready(name, "")

    @api.get("/models/{name}/versions/{version}/ready")
    async def model_ready_version(name: str, version: str) -> JSONResponse:
        return await model_ready(name, version)

    async def model_metadata(name: str, version: str) -> JSONResponse:
        try:
            meta = dataplane.model_metadata(name, version)
        except ServingError as exc:
            return _error(exc)

        def specs(items: Any) -> list[dict[str, Any]]:
            return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in items]

        return JSONResponse({"name": meta.name, "versions": list(meta.versions), "platform": meta.platform,
                             "inputs": specs(meta.inputs), "outputs": specs(meta.outputs)})

    @api.get("/models/{name}")
    async def model_metadata_any(name: str) -> JSONResponse:
        return await model_metadata(name, "")

    @api.get("/models/{name}/versions/{version}")
    async def model_metadata_version(name: str, version: str) -> JSONResponse:
        return await model_metadata(name, version)

    async def infer(request: Request, name: str, version: str) -> JSONResponse:
        started = time.perf_counter()
        label = name if dataplane.repository.get(name) is not None else metrics.UNKNOWN_MODEL
        try:
            body = await request.body()  # bounded by the body-limit middleware (see router's docstring)
            header = request.headers.get(BINARY_HEADER)
            if header is not None and not header.isdigit():
                raise InvalidRequestError(f"{BINARY_HEADER} must be a byte count, got {header!r}")
            decoded, payload = decode_body(body, name, version, int(header) if header is not None else None,
                                           max_elements=dataplane.max_tensor_elements)
            response = await dataplane.infer(decoded, started_at=started)
        except ServingError as exc:
            metrics.observe_request(label, "rest", str(exc.http_status), time.perf_counter() - started)
            return _error(exc)
        document, blobs = encode_response(response, _binary_outputs(payload, response))
        # allow_nan: a model may answer NaN; Starlette's own encoder would fail the response instead.
        encoded = json.dumps(document, allow_nan=True, separators=(",", ":")).encode()
        metrics.observe_request(label, "rest", "200", time.perf_counter() - started)
        if blobs:
            return _PreEncodedJSON(encoded + blobs, media_type="application/octet-stream",
                                   headers={BINARY_HEADER: str(len(encoded))})
        return _PreEncodedJSON(encoded)

    # Plain Starlette routes, not FastAPI endpoints: the body is parsed and checked by
    # decode_body anyway, and FastAPI's per-call parameter and dependency resolution was ~10% of a
    # small REST inference (docs/profiling/serving.md). (So they are not in the OpenAPI document;
    # the Open Inference Protocol's own REST specification describes them.)
    async def infer_any(request: Request) -> JSONResponse:
        return await infer(request, request.path_params["name"], "")

    async def infer_version(request: Request) -> JSONResponse:
        return await infer(request, request.path_params["name"], request.path_params["version"])

    # add_route takes the whole path: FastAPI applies the router's prefix to its own routes only.
    api.add_route(f"{api.prefix}/models/{{name}}/infer", infer_any, methods=["POST"])
    api.add_route(f"{api.prefix}/models/{{name}}/versions/{{version}}/infer", infer_version, methods=["POST"])

    return api


class _PreEncodedJSON(JSONResponse):
    """A JSON response whose body is already encoded."""

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else super().render(content)
