"""The one place that wires serving: repository, loader, data plane, adapters, registry follower,
inference-event emitter and readiness checks."""

from __future__ import annotations

import os
import socket
from functools import partial
from importlib import metadata
from typing import cast

from gyre_common.artifacts import ArtifactSettings, LocalArtifactStore
from gyre_common.bus import Publisher, ensure_topics
from gyre_common.runner import ServiceContext
from gyre_common.settings import load_settings
from gyre_common.topics import INFERENCE_EVENTS
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from gyre_serving import api_http
from gyre_serving.api_grpc import SERVICE_NAME, InferenceServicer
from gyre_serving.batching import BatchingPolicy
from gyre_serving.consumers import RegistryEventsFollower, Snapshot
from gyre_serving.domain.runtime import ModelSource
from gyre_serving.emitter import InferenceEmitter, SpoolingOverflow
from gyre_serving.handlers import DataPlane
from gyre_serving.loader import ModelLoader
from gyre_serving.models import AliasManagers, ModelManager
from gyre_serving.registry_client import RegistryClient
from gyre_serving.repository import ModelRepository
from gyre_serving.settings import ServingSettings
from gyre_serving.spool import open_spool
from gyre_serving.traffic import TrafficSplit


def _version() -> str:
    try:
        return metadata.version("gyre-serving")
    except metadata.PackageNotFoundError:
        return "0+unknown"


async def bootstrap(ctx: ServiceContext, *, artifacts: ArtifactSettings | None = None) -> None:
    """Wire serving into the runner's context.

    Args:
        artifacts: where model artifacts are read (``GYRE_ARTIFACTS_*`` when omitted).
    """
    settings = cast(ServingSettings, ctx.settings)
    store = LocalArtifactStore.from_settings(artifacts or load_settings(ArtifactSettings))
    repository = ModelRepository(settings.alias)
    challengers = ModelRepository(settings.challenger_alias)
    registry = (RegistryClient(settings.registry_address, token=settings.service_token,
                               timeout_s=settings.rpc_timeout_s,
                               interceptors=ctx.telemetry.grpc_client_interceptors())
                if settings.registry_address else None)
    loader = ModelLoader(store, settings.trusted_types, compile=settings.runtime == "auto",
                         max_text_bytes=settings.max_text_bytes, torch_threads=settings.torch_threads).load
    lookup = registry.version if registry is not None else None
    manager = ModelManager(repository, loader, alias=settings.alias, models=settings.models,
                           load_attempts=settings.load_attempts, lookup=lookup)
    # The challenger alias is followed only when some traffic split may use it.
    challenger = (ModelManager(challengers, loader, alias=settings.challenger_alias, models=settings.models,
                               load_attempts=settings.load_attempts, lookup=lookup)
                  if settings.traffic else None)
    managers = AliasManagers([manager] if challenger is None else [manager, challenger])

    kafka = ctx.kafka
    emitter = InferenceEmitter(
        lambda: Publisher(kafka, service="serving", tracer_provider=ctx.telemetry.active_tracer_provider),
        capacity_rows=settings.event_queue_rows, batch_rows=settings.event_batch_rows,
        overflow=SpoolingOverflow(open_spool(settings.spool_dir, max_bytes=settings.spool_max_bytes,
                                             fsync_interval_s=settings.spool_fsync_interval_s)),
        # Apache Kafka may not auto-create topics: make sure ours exists before publishing.
        prepare=partial(ensure_topics, kafka, [INFERENCE_EVENTS]),
    )
    readiness = ctx.readiness
    dataplane = DataPlane(repository, emitter, server_name=settings.server_name, server_version=_version(),
                          ready=lambda: readiness.is_ready, max_batch_rows=settings.max_batch_rows,
                          max_tensor_elements=settings.max_tensor_elements,
                          challengers=challengers if challenger is not None else None,
                          traffic={name: TrafficSplit(split.canary_percent, split.shadow)
                                   for name, split in settings.traffic.items()},
                          batching={name: BatchingPolicy(policy.max_batch_rows, policy.max_wait_ms / 1000.0)
                                    for name, policy in settings.batching.items()},
                          event_text=settings.event_text)
    ctx.app.include_router(api_http.router(dataplane))
    ctx.add_servicer(pb_grpc.add_GRPCInferenceServiceServicer_to_server, InferenceServicer(dataplane),
                     name=SERVICE_NAME)

    snapshot: Snapshot | None = None
    if registry is not None:
        client = registry

        async def snapshot() -> dict[str, dict[str, ModelSource | None]]:
            return {m.alias: await client.alias_snapshot(m.alias, settings.models) for m in managers.managers}

    follower = RegistryEventsFollower(
        kafka, managers, snapshot, snapshot_complete=not settings.models,
        resync_interval_s=settings.resync_interval_s,
        # Every replica reads every registry event: a client id naming this process helps operators.
        client_id=f"{kafka.client_id}-serving-{socket.gethostname()}-{os.getpid()}",
    )

    # Started in this order, stopped in reverse: the follower stops first, the emitter last (after
    # the servers drained, so the events of the last requests are still published).
    ctx.add_task(emitter, name="inference-events")
    ctx.add_task(_InferenceThread(dataplane), name="inference-thread")
    if registry is not None:
        ctx.add_task(_Closing(registry), name="registry-client")
    ctx.add_task(follower.run, name="registry-events")

    async def following() -> None:
        if not follower.positioned:
            raise RuntimeError("not yet following registry.events")

    async def models_loaded() -> None:
        if not follower.synced:
            raise RuntimeError(f"the registry at {settings.registry_address} has not been read yet")
        missing = manager.missing()
        if missing:
            raise RuntimeError(f"no version with alias {settings.alias!r} loaded yet for: {', '.join(missing)}")

    ctx.add_check("registry-events", following)
    ctx.add_check("models", models_loaded)


class _Closing:
    """Closes the registry client's channel at shutdown."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.client.close()


class _InferenceThread:
    """Stops the data plane's inference thread at shutdown (after the servers drained)."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.dataplane.close()
