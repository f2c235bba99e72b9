"""Asking the registry (gRPC ``gyre.registry.v1.RegistryService``) which version each alias points at."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from gyre_contracts.gyre.registry.v1 import registry_service_pb2 as pb
from gyre_contracts.gyre.registry.v1 import registry_service_pb2_grpc as pb_grpc
from gyre_serving.convert import source_from_version
from gyre_serving.domain.runtime import ModelSource

PAGE_SIZE = 500


class RegistryClient:
    """A small client of the registry's read API.

    Args:
        address: host:port of the registry's gRPC API.
        token: bearer token sent as ``authorization`` metadata (a "viewer" token), or None.
        timeout_s: deadline of each call, in seconds.
        interceptors: client interceptors (tracing), e.g. ``ctx.telemetry.grpc_client_interceptors()``.

    Errors: calls raise ``grpc.aio.AioRpcError`` when the registry is unreachable or refuses.
    """

    def __init__(self, address: str, *, token: str | None = None, timeout_s: float = 10.0,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None) -> None:
        self.address = address
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout_s = timeout_s
        self._channel = grpc.aio.insecure_channel(address, interceptors=list(interceptors or []))
        self._stub = pb_grpc.RegistryServiceStub(self._channel)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def alias_snapshot(self, alias: str, models: Sequence[str] = ()) -> dict[str, ModelSource | None]:
        """The version ``alias`` points at for each model.

        Args:
            models: the models to ask about (a missing alias or model maps to None); empty asks
                about every registered model and lists only those that have the alias.
        """
        names = list(models)
        if not names:
            names = [m.name for m in await self._all_models() if alias in m.aliases]
        snapshot: dict[str, ModelSource | None] = {}
        for name in names:
            snapshot[name] = await self.by_alias(name, alias)
        return snapshot

    async def by_alias(self, name: str, alias: str) -> ModelSource | None:
        """The version ``alias`` of ``name`` points at; None when the model or alias does not exist."""
        try:
            reply = await self._stub.GetModelVersionByAlias(
                pb.GetModelVersionByAliasRequest(model_name=name, alias=alias),
                timeout=self._timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return source_from_version(reply.model_version)

    async def version(self, name: str, version: int) -> ModelSource | None:
        """One version's artifact and signature; None when it does not exist."""
        try:
            reply = await self._stub.GetModelVersion(pb.GetModelVersionRequest(model_name=name, version=version),
                                                     timeout=self._timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return source_from_version(reply.model_version)

    async def _all_models(self) -> list[pb.RegisteredModel]:
        models: list[pb.RegisteredModel] = []
        token = ""
        while True:
            reply = await self._stub.ListRegisteredModels(
                pb.ListRegisteredModelsRequest(page_size=PAGE_SIZE, page_token=token),
                timeout=self._timeout_s, metadata=self._metadata)
            models.extend(reply.registered_models)
            token = reply.next_page_token
            if not token:
                return models
