"""The one place the trainer is wired: store, clients, handlers, runner, worker, relay, consumer, APIs.

Tests swap the other services for fakes with ``functools.partial(bootstrap, deps=Dependencies(...))``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gyre_common.artifacts import ArtifactSettings, ArtifactStore, LocalArtifactStore
from gyre_common.bus import Consumer, add_consumer
from gyre_common.deadletters import mount_dead_letter_routes
from gyre_common.outbox import add_outbox
from gyre_common.runner import ServiceContext
from gyre_common.settings import load_settings
from gyre_common.topics import TRAINING_EVENTS, TRAINING_REQUESTS
from gyre_contracts.gyre.trainer.v1 import trainer_service_pb2_grpc as pb_grpc
from gyre_trainer import api_http
from gyre_trainer.adapters.features import GrpcTrainingDataSource
from gyre_trainer.adapters.profiles import ArtifactProfileSink
from gyre_trainer.adapters.registry import GrpcModelRegistryClient
from gyre_trainer.adapters.rpc import open_channel
from gyre_trainer.adapters.tracking import GrpcRunLogger
from gyre_trainer.api_grpc import SERVICE_NAME, TrainerServicer
from gyre_trainer.auth import TokenAuth
from gyre_trainer.consumers import TrainingRequestsAdapter
from gyre_trainer.domain.backends.options import TextOptions
from gyre_trainer.domain.jobs import TrainingPolicy
from gyre_trainer.handlers import TrainerHandlers
from gyre_trainer.ports import ModelRegistryClient, RunLogger, TrainingDataSource
from gyre_trainer.runner import JobRunner
from gyre_trainer.settings import TrainerSettings
from gyre_trainer.store import PostgresJobStore
from gyre_trainer.worker import JobWorker


def policy_from(settings: TrainerSettings) -> TrainingPolicy:
    """The training policy the settings describe."""
    return TrainingPolicy(
        default_max_evals=settings.default_max_evals,
        max_max_evals=settings.max_max_evals,
        default_seed=settings.default_seed,
        default_holdout_fraction=settings.default_holdout_fraction,
        cv_folds=settings.cv_folds,
        min_training_rows=settings.min_training_rows,
        profile_max_values=settings.profile_max_values,
        max_queued_jobs=settings.max_queued_jobs,
        experiment_prefix=settings.experiment_prefix,
        champion_alias=settings.champion_alias,
        max_attempts=settings.max_attempts,
        retry_delay_s=settings.retry_delay_s,
        text=TextOptions(max_length=settings.text_max_length, batch_size=settings.text_batch_size,
                         validation_fraction=settings.text_validation_fraction,
                         max_epochs=settings.text_max_epochs, threads=settings.torch_threads),
    )


@dataclass
class Dependencies:
    """Stand-ins for the other services (tests); each one left None is the real gRPC client."""

    source: TrainingDataSource | None = None
    runs: RunLogger | None = None
    registry: ModelRegistryClient | None = None
    artifacts: ArtifactStore | None = None


async def bootstrap(ctx: ServiceContext, deps: Dependencies | None = None) -> None:
    """Wire the trainer into ``ctx`` (the ``build`` of :func:`gyre_common.runner.run_service`).

    Args:
        deps: stand-ins for features, tracking, the registry and the artifact store (tests); each
            one left None is the real client built from the settings.
    """
    deps = deps or Dependencies()
    settings = ctx.settings
    assert isinstance(settings, TrainerSettings)
    token = settings.service_token.get_secret_value() if settings.service_token else None
    interceptors = ctx.telemetry.grpc_client_interceptors()
    artifacts = deps.artifacts or LocalArtifactStore.from_settings(load_settings(ArtifactSettings))
    policy = policy_from(settings)

    store = PostgresJobStore(ctx.db)
    source = deps.source or GrpcTrainingDataSource(open_channel(settings.features_address, interceptors),
                                                   timeout_s=settings.training_set_timeout_s, token=token)
    runs = deps.runs or GrpcRunLogger(open_channel(settings.tracking_address, interceptors),
                                      timeout_s=settings.rpc_timeout_s, token=token)
    registry = deps.registry or GrpcModelRegistryClient(open_channel(settings.registry_address, interceptors),
                                                        timeout_s=settings.rpc_timeout_s, token=token)
    runner = JobRunner(store, source, runs, registry, artifacts, ArtifactProfileSink(artifacts), policy)
    relay = add_outbox(ctx, topics=[TRAINING_EVENTS])  # the task "outbox-relay", added first
    worker = JobWorker(store, runner, concurrency=settings.concurrent_jobs,
                       poll_interval_s=settings.job_poll_interval_s, lease_s=settings.job_lease_s)

    def wake() -> None:
        worker.wake()
        relay.wake()

    handlers = TrainerHandlers(store, policy, wake=wake)
    auth = TokenAuth(settings.auth_tokens)
    ctx.app.include_router(api_http.router(handlers, auth, worker.cancel_local))
    ctx.add_servicer(pb_grpc.add_TrainerServiceServicer_to_server,
                     TrainerServicer(handlers, auth, worker.cancel_local), name=SERVICE_NAME)
    # Start order: the relay first (events of jobs resumed at start go out), then the worker,
    # then the consumer; stop runs in reverse, so the consumer commits before the worker drains.
    ctx.add_task(worker, name="job-worker")
    group = settings.consumer_group
    add_consumer(ctx, Consumer(ctx.kafka, group=group, topics=[TRAINING_REQUESTS], service="trainer",
                               handler=TrainingRequestsAdapter(handlers, group)), name="consumer")
    mount_dead_letter_routes(ctx, authorize=auth.subject)  # replay is a write: same tokens as SubmitTraining
