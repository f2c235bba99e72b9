"""MLflow's proxied artifact API (``mlflow-artifacts``), served by tracking so that MLflow clients
upload and download run artifacts through the server (experiments created without an artifact
location get ``mlflow-artifacts:/<experiment id>``; the client turns that into these routes).

Routes (as ``mlflow server`` serves them; paths are relative to the artifact directory):

* ``PUT    /api/2.0/mlflow-artifacts/artifacts/{path}`` — body = the file's bytes; ``{}``;
* ``GET    /api/2.0/mlflow-artifacts/artifacts/{path}`` — the file's bytes (404 when missing);
* ``GET    /api/2.0/mlflow-artifacts/artifacts?path=`` — ``{"files": [{"path", "is_dir", "file_size"}]}``
  with names relative to ``path`` (empty for a missing path or a file);
* ``DELETE /api/2.0/mlflow-artifacts/artifacts/{path}`` — removes a file or a directory tree.

Errors are MLflow's (:data:`gyre_tracking.mlflow_api.ERRORS`): a bad path is 400 INVALID_PARAMETER_VALUE.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse

from gyre_common.limits import body_limit
from gyre_common.mlflow.gateway import mlflow_route_class
from gyre_tracking.mlflow_api import ERRORS
from gyre_tracking.store.files import ProxiedArtifactFiles

PREFIX = "/api/2.0/mlflow-artifacts"
"""Where MLflow's ``mlflow-artifacts`` repository sends its requests."""

_MLFLOW_ERROR: dict[str, Any] = {
    "description": "MLflow's error answer (INVALID_PARAMETER_VALUE for a bad path, RESOURCE_DOES_NOT_EXIST).",
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["error_code", "message"],
        "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}}}}},
}


def router(files: ProxiedArtifactFiles, prefix: str = PREFIX) -> APIRouter:
    """The ``mlflow-artifacts`` routes over ``files``."""
    api = APIRouter(prefix=prefix, route_class=mlflow_route_class(ERRORS), tags=["mlflow-artifacts"])

    @api.get("/artifacts")
    async def list_artifacts(path: str = "") -> dict[str, Any]:
        entries = await files.list(path)
        listed: list[dict[str, Any]] = []
        for entry in entries:
            item: dict[str, Any] = {"path": entry.name, "is_dir": entry.is_dir}
            if entry.size_bytes is not None:
                item["file_size"] = entry.size_bytes
            listed.append(item)
        return {"files": listed}

    # Streamed to disk chunk by chunk, so the service's request-body limit does not apply.
    @api.put("/artifacts/{path:path}", openapi_extra=body_limit(None))
    async def upload(path: str, request: Request) -> JSONResponse:
        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in request.stream():
                yield chunk

        await files.write(path, chunks())
        return JSONResponse({})

    # The file's bytes, documented as such (not FastAPI's default JSON) in the OpenAPI document.
    @api.get("/artifacts/{path:path}", response_class=FileResponse, responses={
        200: {"description": "The file's bytes.",
              "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        400: _MLFLOW_ERROR, 404: _MLFLOW_ERROR})
    async def download(path: str) -> FileResponse:
        return FileResponse(files.file_for_download(path), media_type="application/octet-stream")

    @api.delete("/artifacts/{path:path}")
    async def delete(path: str) -> JSONResponse:
        await files.delete(path)
        return JSONResponse({})

    return api


def install(app: FastAPI, files: ProxiedArtifactFiles) -> None:
    """Add the ``mlflow-artifacts`` routes to ``app``."""
    app.include_router(router(files))
