"""REST mirror of the gRPC API under ``/api/v1`` (for the dashboard, scripts and tests).

Bodies and responses are the proto3 JSON mapping of the ``gyre.registry.v1`` messages
(lowerCamelCase names; proto names accepted on input; int64 as strings on output), so the REST and
gRPC APIs carry exactly the same data. Errors answer ``{"error": {"code": "NOT_FOUND",
"message": "..."}}`` with 400, 401, 404, 409, 412, 413 or 503. Writes take
``Authorization: Bearer <token>`` (and ``X-Gyre-Actor`` while authentication is off).

| method and path | RPC |
|---|---|
| ``POST /api/v1/registered-models`` | CreateRegisteredModel (201) |
| ``GET /api/v1/registered-models`` | ListRegisteredModels (``page_size``, ``page_token``) |
| ``GET /api/v1/registered-models/{name}`` | GetRegisteredModel |
| ``POST /api/v1/registered-models/{name}/versions`` | CreateModelVersion (201) |
| ``GET /api/v1/registered-models/{name}/versions`` | ListModelVersions (``include_archived``, paging) |
| ``GET /api/v1/registered-models/{name}/versions/{version}`` | GetModelVersion |
| ``POST /api/v1/registered-models/{name}/versions/{version}/archive`` | ArchiveModelVersion |
| ``GET /api/v1/registered-models/{name}/aliases/{alias}`` | GetModelVersionByAlias (``latest`` too) |
| ``PUT /api/v1/registered-models/{name}/aliases/{alias}`` | SetAlias (body ``{"version": 2, "comment": ...}``) |
| ``DELETE /api/v1/registered-models/{name}/aliases/{alias}`` | DeleteAlias (``comment``) |
| ``GET /api/v1/audit-entries`` | ListAuditEntries (``model_name``, ``since`` RFC 3339, paging) |
| ``GET /api/v1/approvals`` | ListApprovals |
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from google.protobuf.message import Message

from gyre_common.errors import GyreError
from gyre_contracts.gyre.registry.v1 import registry_service_pb2 as pb
from gyre_registry import convert
from gyre_registry.auth import Authenticator
from gyre_registry.domain.errors import BodyTooLarge, DatabaseUnavailable, InvalidArgument
from gyre_registry.handlers import RegistryHandlers
from gyre_registry.store import DATABASE_ERRORS

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest request body accepted (like gRPC's default message limit)."""

M = TypeVar("M", bound=Message)


def _error(exc: GyreError) -> JSONResponse:
    """The registry's REST error body: the gRPC code's name and the message, with the shared HTTP status."""
    return JSONResponse({"error": {"code": exc.grpc_code, "message": str(exc)}},
                        status_code=exc.http_status)


def _encode(message: Message, status: int = 200) -> JSONResponse:
    return JSONResponse(json_format.MessageToDict(message), status_code=status)


async def _body(request: Request, message: M, **fields: Any) -> M:
    """Parse the JSON body into ``message``, then set ``fields`` (path parameters win)."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise BodyTooLarge("body", f"the body has {len(raw)} bytes; at most {MAX_BODY_BYTES}")
    if raw.strip():
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise InvalidArgument("body", f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidArgument("body", "must be a JSON object")
        try:
            json_format.ParseDict(data, message)
        except json_format.ParseError as exc:
            raise InvalidArgument("body", str(exc)) from None
    for name, value in fields.items():
        setattr(message, name, value)
    return message


def _query(request: Request, message: M, *, ints: tuple[str, ...] = (), bools: tuple[str, ...] = (),
           texts: tuple[str, ...] = (), times: tuple[str, ...] = ()) -> M:
    """Set fields of ``message`` from query parameters of the given kinds."""
    params = request.query_params
    for name in ints:
        if name in params:
            try:
                setattr(message, name, int(params[name]))
            except ValueError:
                raise InvalidArgument(name, f"must be an integer, got {params[name][:40]!r}") from None
    for name in bools:
        if name in params:
            setattr(message, name, params[name].lower() in ("1", "true", "yes"))
    for name in texts:
        if name in params:
            setattr(message, name, params[name])
    for name in times:
        if name in params:
            try:
                getattr(message, name).FromJsonString(params[name])
            except ValueError:
                raise InvalidArgument(name, f"must be an RFC 3339 time such as 2025-03-01T12:00:00Z, "
                                            f"got {params[name][:40]!r}") from None
    return message


def _version_param(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidArgument("version", f"must be an integer, got {value[:40]!r}") from None


async def _answer(call: Callable[[], Awaitable[Message]], status: int = 200) -> JSONResponse:
    try:
        return _encode(await call(), status)
    except GyreError as exc:
        return _error(exc)
    except DATABASE_ERRORS as exc:
        log.warning("database unavailable: %s", exc)
        return _error(DatabaseUnavailable())


def router(handlers: RegistryHandlers, auth: Authenticator) -> APIRouter:
    """The ``/api/v1`` routes over ``handlers``."""
    api = APIRouter(prefix="/api/v1", tags=["registry"])

    def actor(request: Request) -> str:
        return auth.actor(request.headers.get("authorization"), request.headers.get("x-gyre-actor"))

    @api.post("/registered-models")
    async def create_registered_model(request: Request) -> JSONResponse:
        async def call() -> Message:
            who = actor(request)
            body = await _body(request, pb.CreateRegisteredModelRequest())
            model = await handlers.create_registered_model(body.name, body.description, dict(body.tags), who)
            return convert.registered_model_response(pb.CreateRegisteredModelResponse, model)
        return await _answer(call, 201)

    @api.get("/registered-models")
    async def list_registered_models(request: Request) -> JSONResponse:
        async def call() -> Message:
            query = _query(request, pb.ListRegisteredModelsRequest(), ints=("page_size",), texts=("page_token",))
            return convert.registered_models_response(
                await handlers.list_registered_models(query.page_size, query.page_token))
        return await _answer(call)

    @api.get("/registered-models/{name}")
    async def get_registered_model(name: str) -> JSONResponse:
        async def call() -> Message:
            model = await handlers.get_registered_model(name)
            return convert.registered_model_response(pb.GetRegisteredModelResponse, model)
        return await _answer(call)

    @api.post("/registered-models/{name}/versions")
    async def create_model_version(name: str, request: Request) -> JSONResponse:
        async def call() -> Message:
            who = actor(request)
            body = await _body(request, pb.CreateModelVersionRequest(), model_name=name)
            return convert.registration_response(
                await handlers.create_model_version(convert.version_draft(body), who))
        return await _answer(call, 201)

    @api.get("/registered-models/{name}/versions")
    async def list_model_versions(name: str, request: Request) -> JSONResponse:
        async def call() -> Message:
            query = _query(request, pb.ListModelVersionsRequest(model_name=name), ints=("page_size",),
                           bools=("include_archived",), texts=("page_token",))
            return convert.model_versions_response(await handlers.list_model_versions(
                query.model_name, query.include_archived, query.page_size, query.page_token))
        return await _answer(call)

    @api.get("/registered-models/{name}/versions/{version}")
    async def get_model_version(name: str, version: str) -> JSONResponse:
        async def call() -> Message:
            found = await handlers.get_model_version(name, _version_param(version))
            return convert.model_version_response(pb.GetModelVersionResponse, found)
        return await _answer(call)

    @api.post("/registered-models/{name}/versions/{version}/archive")
    async def archive_model_version(name: str, version: str, request: Request) -> JSONResponse:
        async def call() -> Message:
            who = actor(request)
            body = await _body(request, pb.ArchiveModelVersionRequest(), model_name=name,
                               version=_version_param(version))
            found = await handlers.archive_model_version(body.model_name, body.version, body.comment, who)
            return convert.model_version_response(pb.ArchiveModelVersionResponse, found)
        return await _answer(call)

    @api.get("/registered-models/{name}/aliases/{alias}")
    async def get_model_version_by_alias(name: str, alias: str) -> JSONResponse:
        async def call() -> Message:
            found = await handlers.get_model_version_by_alias(name, alias)
            return convert.model_version_response(pb.GetModelVersionByAliasResponse, found)
        return await _answer(call)

    @api.put("/registered-models/{name}/aliases/{alias}")
    async def set_alias(name: str, alias: str, request: Request) -> JSONResponse:
        async def call() -> Message:
            who = actor(request)
            body = await _body(request, pb.SetAliasRequest(), model_name=name, alias=alias)
            return convert.alias_set_response(
                await handlers.set_alias(body.model_name, body.alias, body.version, body.comment, who))
        return await _answer(call)

    @api.delete("/registered-models/{name}/aliases/{alias}")
    async def delete_alias(name: str, alias: str, request: Request) -> JSONResponse:
        async def call() -> Message:
            who = actor(request)
            query = _query(request, pb.DeleteAliasRequest(model_name=name, alias=alias), texts=("comment",))
            return convert.alias_removed_response(
                await handlers.delete_alias(query.model_name, query.alias, query.comment, who))
        return await _answer(call)

    @api.get("/audit-entries")
    async def list_audit_entries(request: Request) -> JSONResponse:
        async def call() -> Message:
            query = _query(request, pb.ListAuditEntriesRequest(), ints=("page_size",),
                           texts=("model_name", "page_token"), times=("since",))
            return convert.audit_entries_response(await handlers.list_audit_entries(
                query.model_name, convert.audit_since(query), query.page_size, query.page_token))
        return await _answer(call)

    @api.get("/approvals")
    async def list_approvals(request: Request) -> JSONResponse:
        async def call() -> Message:
            query = _query(request, pb.ListApprovalsRequest(), ints=("page_size",),
                           texts=("model_name", "page_token"))
            await handlers.list_approvals(query.model_name, query.page_size, query.page_token)
            return pb.ListApprovalsResponse()
        return await _answer(call)

    return api
