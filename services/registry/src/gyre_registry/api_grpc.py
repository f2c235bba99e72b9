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
from gyre_registry.auth import Authenticator
from gyre_registry.domain.errors import DatabaseUnavailable
from gyre_registry.handlers import RegistryHandlers
from gyre_registry.store import DATABASE_ERRORS

log = logging.getLogger(__name__)

SERVICE_NAME = "gyre.registry.v1.RegistryService"
"""Full gRPC name of the service (also reported by grpc.health.v1)."""

Req = TypeVar("Req")
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
    """The gRPC face of :class:`RegistryHandlers`."""

    def __init__(self, handlers: RegistryHandlers, auth: Authenticator) -> None:
        self.handlers = handlers
        self.auth = auth

    async def _read(self, call: Callable[[Req], Awaitable[Resp]], request: Req, context: Context) -> Resp:
        try:
            return await call(request)
        except Exception as exc:
            await _abort(context, exc)

    async def _write(self, call: Callable[[Req, str], Awaitable[Resp]], request: Req, context: Context) -> Resp:
        try:
            actor = self.auth.actor(_metadata(context, "authorization"), _metadata(context, "x-gyre-actor"))
            return await call(request, actor)
        except Exception as exc:
            await _abort(context, exc)

    async def CreateRegisteredModel(self, request: pb.CreateRegisteredModelRequest,
                                    context: Context) -> pb.CreateRegisteredModelResponse:
        return await self._write(self.handlers.create_registered_model, request, context)

    async def GetRegisteredModel(self, request: pb.GetRegisteredModelRequest,
                                 context: Context) -> pb.GetRegisteredModelResponse:
        return await self._read(self.handlers.get_registered_model, request, context)

    async def ListRegisteredModels(self, request: pb.ListRegisteredModelsRequest,
                                   context: Context) -> pb.ListRegisteredModelsResponse:
        return await self._read(self.handlers.list_registered_models, request, context)

    async def CreateModelVersion(self, request: pb.CreateModelVersionRequest,
                                 context: Context) -> pb.CreateModelVersionResponse:
        return await self._write(self.handlers.create_model_version, request, context)

    async def GetModelVersion(self, request: pb.GetModelVersionRequest,
                              context: Context) -> pb.GetModelVersionResponse:
        return await self._read(self.handlers.get_model_version, request, context)

    async def ListModelVersions(self, request: pb.ListModelVersionsRequest,
                                context: Context) -> pb.ListModelVersionsResponse:
        return await self._read(self.handlers.list_model_versions, request, context)

    async def SetAlias(self, request: pb.SetAliasRequest, context: Context) -> pb.SetAliasResponse:
        return await self._write(self.handlers.set_alias, request, context)

    async def DeleteAlias(self, request: pb.DeleteAliasRequest,
                          context: Context) -> pb.DeleteAliasResponse:
        return await self._write(self.handlers.delete_alias, request, context)

    async def GetModelVersionByAlias(self, request: pb.GetModelVersionByAliasRequest,
                                     context: Context) -> pb.GetModelVersionByAliasResponse:
        return await self._read(self.handlers.get_model_version_by_alias, request, context)

    async def ArchiveModelVersion(self, request: pb.ArchiveModelVersionRequest,
                                  context: Context) -> pb.ArchiveModelVersionResponse:
        return await self._write(self.handlers.archive_model_version, request, context)

    async def ListApprovals(self, request: pb.ListApprovalsRequest,
                            context: Context) -> pb.ListApprovalsResponse:
        return await self._read(self.handlers.list_approvals, request, context)

    async def DecideApproval(self, request: pb.DecideApprovalRequest,
                             context: Context) -> pb.DecideApprovalResponse:
        return await self._write(self.handlers.decide_approval, request, context)

    async def ListAuditEntries(self, request: pb.ListAuditEntriesRequest,
                               context: Context) -> pb.ListAuditEntriesResponse:
        return await self._read(self.handlers.list_audit_entries, request, context)


def add_to_server(servicer: RegistryServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` on ``server``."""
    pb_grpc.add_RegistryServiceServicer_to_server(servicer, server)
