"""Settings of the trainer (environment prefix ``GYRE_TRAINER_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from gyre_common.settings import OutboxSettings


class TrainerSettings(OutboxSettings):
    """Where the trainer listens, which services it talks to and how it searches."""

    model_config = SettingsConfigDict(env_prefix="GYRE_TRAINER_")

    http_port: int = 7300
    """HTTP port: REST API (`/v1/jobs`), `/healthz`, `/readyz`, `/metrics`."""

    grpc_port: int = 7301
    """gRPC port: `gyre.trainer.v1.TrainerService` and `grpc.health.v1`."""

    features_address: str = "127.0.0.1:7201"
    """host:port of the features service's gRPC API (training sets are built there)."""

    tracking_address: str = "127.0.0.1:7101"
    """host:port of the tracking service's gRPC API (every trial is logged there as a run)."""

    registry_address: str = "127.0.0.1:7401"
    """host:port of the registry service's gRPC API (the best model is registered there)."""

    service_token: SecretStr | None = None
    """Bearer token the trainer sends to features, tracking and the registry (a "scientist" token); unset sends none."""

    auth_tokens: SecretStr | None = None
    """Comma-separated `subject:token` pairs; when set, submitting or cancelling jobs needs one as a bearer token."""

    rpc_timeout_s: float = 30.0
    """Deadline of one unary gRPC call to another service, in seconds."""

    training_set_timeout_s: float = 600.0
    """Deadline of one streamed training-set build at the features service, in seconds."""

    default_max_evals: int = Field(default=20, ge=1)
    """Trials of a search when the request leaves `search.max_evals` at 0."""

    max_max_evals: int = Field(default=500, ge=1)
    """Most trials one request may ask for; larger requests are rejected as invalid."""

    default_seed: int = 42
    """Seed of the search and the holdout split when the request leaves `search.random_seed` at 0."""

    default_holdout_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    """Share of the rows held out for the final evaluation when the request leaves it at 0."""

    cv_folds: int = Field(default=3, ge=2)
    """Stratified folds each trial is cross-validated on (inside the non-holdout rows)."""

    min_training_rows: int = Field(default=20, ge=4)
    """Fewest rows a training set may have; fewer fails the job with a clear reason."""

    profile_max_values: int = Field(default=5000, ge=1)
    """Most reference values per feature kept in the monitor's reference profile (a seeded sample)."""

    max_queued_jobs: int = Field(default=100, ge=1)
    """Most jobs waiting to run; SubmitTraining answers RESOURCE_EXHAUSTED beyond it (Kafka requests always queue)."""

    concurrent_jobs: int = Field(default=1, ge=1)
    """Jobs this replica runs at once (each search runs in its own worker thread)."""

    job_poll_interval_s: float = Field(default=2.0, gt=0.0)
    """Seconds between looks at the job table for queued work (a local submit wakes the worker at once)."""

    job_lease_s: float = Field(default=60.0, gt=0.0)
    """Seconds a running job's lease lasts without renewal; a job whose replica died is picked up again after it."""

    max_attempts: int = Field(default=3, ge=1)
    """Attempts at a job whose dependencies (features, tracking, registry) are unavailable before it fails."""

    retry_delay_s: float = Field(default=30.0, ge=0.0)
    """Seconds a job waits in the queue before its next attempt after a dependency was unavailable."""

    consumer_group: str = "trainer"
    """Kafka consumer group reading `training.requests` (also names the dead-letter topic)."""

    experiment_prefix: str = "gyre/"
    """Prefix of the tracking experiment of a model: the experiment is `<prefix><model name>`."""

    champion_alias: str = "production"
    """Alias whose holder each job scores on its holdout, for the record (the registry's policy alone moves it)."""

    text_max_length: int = Field(default=64, ge=8, le=512)
    """torch-text: texts are truncated at this many tokens (recorded in the model; serving truncates alike)."""

    text_batch_size: int = Field(default=32, ge=1, le=4096)
    """torch-text: texts per optimisation step."""

    text_validation_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    """torch-text: share of the development rows each trial is validated on after every epoch."""

    text_max_epochs: int = Field(default=6, ge=1, le=100)
    """torch-text: the most epochs the search tries (it searches 1..this)."""

    torch_threads: int = Field(default=0, ge=0)
    """torch intra-op threads while fine-tuning; 0 leaves torch's default (the machine's cores)."""
