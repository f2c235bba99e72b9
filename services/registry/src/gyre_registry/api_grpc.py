"""gRPC adapter: ``gyre.registry.v1.RegistryService`` on grpc.aio. Decode, call a handler, encode.

Status codes: NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT, FAILED_PRECONDITION, UNAUTHENTICATED
from the handlers' errors (gyre_common.errors); UNAVAILABLE while the database is unreachable; INTERNAL otherwise.
Writes read metadata ``authorization: Bearer <token>`` (required when tokens are configured) and,
without authentication, ``x-gyre-actor`` as the audit actor.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc

from gyre_common.errors import GyreError
from gyre_common.grpc_errors import abort_grpc
from gyre_contracts.gyre.registry.v1 import registry_service_pb2 as pb
from gyre_contracts.gyre.registry.v1 import registry_service_pb2_grpc as pb_grpc
from gyre_registry import convert
from gyre_registry.auth import Authenticator
from gyre_registry.domain.errors import DatabaseUnavailable
from gyre_registry.handlers import RegistryHandlers
from gyre_registry.store import DATABASE_ERRORS

log = logging.getLogger(__name__)

SERVICE_NAME = "gyre.registry.v1.RegistryService"
"""Full gRPC name of the service (also reported by grpc.health.v1)."""

Resp = TypeVar("Resp")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def _metadata(context: Context, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


async def _abort(context: Context, exc: Exception) -> NoReturn:
    if isinstance(exc, DATABASE_ERRORS):
        log.warning("database unavailable: %s", exc)
        exc = DatabaseUnavailable()
    if isinstance(exc, GyreError):
        await abort_grpc(context, exc)
    log.exception("internal error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the registry's log")
    raise AssertionError("context.abort() always raises")


class RegistryServicer(pb_grpc.RegistryServiceServicer):
    """The gRPC face of :class:`RegistryHandlers`: each RPC decodes its request, calls one handler
    and encodes the answer (:mod:`gyre_registry.convert`)."""

    def __init__(self, handlers: RegistryHandlers, auth: Authenticator) -> None:
        self.handlers = handlers
        self.auth = auth

    async def _read(self, call: Callable[[], Awaitable[Resp]], context: Context) -> Resp:
        try:
            return await call()
        except Exception as exc:
            await _abort(context, exc)

    async def _write(self, call: Callable[[str], Awaitable[Resp]], context: Context) -> Resp:
        try:
            actor = self.auth.actor(_metadata(context, "authorization"), _metadata(context, "x-gyre-actor"))
            return await call(actor)
        except Exception as exc:
            await _abort(context, exc)

    async def CreateRegisteredModel(self, request: pb.CreateRegisteredModelRequest,
                                    context: Context) -> pb.CreateRegisteredModelResponse:
        async def call(actor: str) -> pb.CreateRegisteredModelResponse:
            model = await self.handlers.create_registered_model(request.name, request.description,
                                                                dict(request.tags), actor)
            return convert.registered_model_response(pb.CreateRegisteredModelResponse, model)
        return await self._write(call, context)

    async def GetRegisteredModel(self, request: pb.GetRegisteredModelRequest,
                                 context: Context) -> pb.GetRegisteredModelResponse:
        async def call() -> pb.GetRegisteredModelResponse:
            model = await self.handlers.get_registered_model(request.name)
            return convert.registered_model_response(pb.GetRegisteredModelResponse, model)
        return await self._read(call, context)

    async def ListRegisteredModels(self, request: pb.ListRegisteredModelsRequest,
                                   context: Context) -> pb.ListRegisteredModelsResponse:
        async def call() -> pb.ListRegisteredModelsResponse:
            return convert.registered_models_response(
                await self.handlers.list_registered_models(request.page_size, request.page_token))
        return await self._read(call, context)

    async def CreateModelVersion(self, request: pb.CreateModelVersionRequest,
                                 context: Context) -> pb.CreateModelVersionResponse:
        async def call(actor: str) -> pb.CreateModelVersionResponse:
            return convert.registration_response(
                await self.handlers.create_model_version(convert.version_draft(request), actor))
        return await self._write(call, context)

    async def GetModelVersion(self, request: pb.GetModelVersionRequest,
                              context: Context) -> pb.GetModelVersionResponse:
        async def call() -> pb.GetModelVersionResponse:
            version = await self.handlers.get_model_version(request.model_name, request.version)
            return convert.model_version_response(pb.GetModelVersionResponse, version)
        return await self._read(call, context)

    async def ListModelVersions(self, request: pb.ListModelVersionsRequest,
                                context: Context) -> pb.ListModelVersionsResponse:
        async def call() -> pb.ListModelVersionsResponse:
            return convert.model_versions_response(await self.handlers.list_model_versions(
                request.model_name, request.include_archived, request.page_size, request.page_token))
        return await self._read(call, context)

    async def SetAlias(self, request: pb.SetAliasRequest, context: Context) -> pb.SetAliasResponse:
        async def call(actor: str) -> pb.SetAliasResponse:
            return convert.alias_set_response(await self.handlers.set_alias(
                request.model_name, request.alias, request.version, request.comment, actor))
        return await self._write(call, context)

    async def DeleteAlias(self, request: pb.DeleteAliasRequest,
                          context: Context) -> pb.DeleteAliasResponse:
        async def call(actor: str) -> pb.DeleteAliasResponse:
            return convert.alias_removed_response(await self.handlers.delete_alias(
                request.model_name, request.alias, request.comment, actor))
        return await self._write(call, context)

    async def GetModelVersionByAlias(self, request: pb.GetModelVersionByAliasRequest,
                                     context: Context) -> pb.GetModelVersionByAliasResponse:
        async def call() -> pb.GetModelVersionByAliasResponse:
            version = await self.handlers.get_model_version_by_alias(request.model_name, request.alias)
            return convert.model_version_response(pb.GetModelVersionByAliasResponse, version)
        return await self._read(call, context)

    async def ArchiveModelVersion(self, request: pb.ArchiveModelVersionRequest,
                                  context: Context) -> pb.ArchiveModelVersionResponse:
        async def call(actor: str) -> pb.ArchiveModelVersionResponse:
            version = await self.handlers.archive_model_version(request.model_name, request.version,
                                                                request.comment, actor)
            return convert.model_version_response(pb.ArchiveModelVersionResponse, version)
        return await self._write(call, context)

    async def ListApprovals(self, request: pb.ListApprovalsRequest,
                            context: Context) -> pb.ListApprovalsResponse:
        async def call() -> pb.ListApprovalsResponse:
            await self.handlers.list_approvals(request.model_name, request.page_size, request.page_token)
            return pb.ListApprovalsResponse()
        return await self._read(call, context)

    async def DecideApproval(self, request: pb.DecideApprovalRequest,
                             context: Context) -> pb.DecideApprovalResponse:
        async def call(actor: str) -> pb.DecideApprovalResponse:
            await self.handlers.decide_approval(request.approval_id, actor)
            return pb.DecideApprovalResponse()
        return await self._write(call, context)

    async def ListAuditEntries(self, request: pb.ListAuditEntriesRequest,
                               context: Context) -> pb.ListAuditEntriesResponse:
        async def call() -> pb.ListAuditEntriesResponse:
            return convert.audit_entries_response(await self.handlers.list_audit_entries(
                request.model_name, convert.audit_since(request), request.page_size, request.page_token))
        return await self._read(call, context)


def add_to_server(servicer: RegistryServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` on ``server``."""
    pb_grpc.add_RegistryServiceServicer_to_server(servicer, server)
