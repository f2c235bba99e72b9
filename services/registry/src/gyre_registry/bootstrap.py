"""The one place the registry is wired: store, handlers, outbox relay, gRPC, REST and MLflow REST adapters."""

from __future__ import annotations

from typing import cast

from gyre_common.outbox import add_outbox
from gyre_common.runner import ServiceContext
from gyre_common.settings import SettingsError
from gyre_common.topics import REGISTRY_EVENTS
from gyre_registry import api_grpc, api_http
from gyre_registry.artifacts import ArtifactVerifier, FileArtifactVerifier, NoVerification
from gyre_registry.auth import Authenticator, parse_tokens
from gyre_registry.handlers import PromotionConfig, RegistryHandlers
from gyre_registry.mlflow import api as mlflow_api
from gyre_registry.mlflow.handlers import MlflowRegistryHandlers
from gyre_registry.mlflow.store import PostgresMlflowStore
from gyre_registry.settings import RegistrySettings
from gyre_registry.store import PostgresStore


def authenticator(settings: RegistrySettings) -> Authenticator:
    """The authenticator of ``settings.auth_tokens``; exits naming the variable when malformed."""
    if settings.auth_tokens is None:
        return Authenticator(None)
    try:
        return Authenticator(parse_tokens(settings.auth_tokens.get_secret_value()))
    except ValueError as exc:
        raise SettingsError(f"invalid setting {RegistrySettings.env_name('auth_tokens')}: {exc}") from None


WAKE_COALESCE_S = 0.02
"""How long the relay may wait after a commit that queued events, so that a burst of changes
(an MLflow client registering and aliasing versions back to back) is published in one relay round
instead of one round (a transaction and a broker round trip) per change."""


async def bootstrap(ctx: ServiceContext) -> None:
    """Wire the registry into the runner's context."""
    settings = cast(RegistrySettings, ctx.settings)
    store = PostgresStore(ctx.db)
    relay = add_outbox(ctx, topics=[REGISTRY_EVENTS], wake_coalesce_s=WAKE_COALESCE_S)
    wake_relay = relay.wake
    verifier: ArtifactVerifier = FileArtifactVerifier() if settings.verify_artifacts else NoVerification()
    handlers = RegistryHandlers(
        store,
        promotion=PromotionConfig(settings.champion_alias, settings.challenger_alias),
        verifier=verifier,
        on_events=wake_relay,
    )
    auth = authenticator(settings)
    ctx.app.include_router(api_http.router(handlers, auth))
    # MLflow's registry REST API (what tracking proxies for MLflow clients).
    mlflow_handlers = MlflowRegistryHandlers(handlers, PostgresMlflowStore(store), on_events=wake_relay)
    mlflow_api.install(ctx.app, mlflow_handlers, auth)
    ctx.add_servicer(api_grpc.add_to_server, api_grpc.RegistryServicer(handlers, auth), name=api_grpc.SERVICE_NAME)
