"""Settings of serving (environment prefix ``GYRE_SERVING_``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from gyre_common.settings import ServiceSettings

DEFAULT_TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.tree._tree.Tree",
    "numpy.dtype",
)
"""Types beyond skops' defaults a model artifact may hold; the same list the trainer writes with
(``gyre_trainer.domain.model_io.TRUSTED_TYPES``)."""


class BatchingPolicySetting(BaseModel):
    """Adaptive batching of one model (an entry of ``GYRE_SERVING_BATCHING``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_rows: int = Field(default=64, ge=1)
    """Most rows one combined predict call takes."""

    max_wait_ms: float = Field(default=2.0, ge=0)
    """Longest a request waits for others to join its batch, in milliseconds."""


class TrafficSplitSetting(BaseModel):
    """Traffic split of one model between the served alias and the challenger (``GYRE_SERVING_TRAFFIC``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    canary_percent: float = Field(default=0.0, ge=0, le=100)
    """Share of requests (0-100) the challenger answers, sticky per request key."""

    shadow: bool = False
    """The challenger also predicts on a copy of every request it does not answer; its answer only
    goes to `inference.events` (with `shadow=true`)."""


def _split_names(value: Any) -> Any:
    """Accept ``"a,b"`` from the environment as well as a list."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class ServingSettings(ServiceSettings):
    """Where serving listens, what it serves and how it reports predictions."""

    model_config = SettingsConfigDict(env_prefix="GYRE_SERVING_")

    http_port: int = 8080
    """HTTP port: Open Inference Protocol REST (`/v2/...`), `/healthz`, `/readyz`, `/metrics`."""

    grpc_port: int = 8081
    """gRPC port: `inference.GRPCInferenceService` (Open Inference Protocol V2) and `grpc.health.v1`."""

    alias: str = "production"
    """Registry alias to serve: each model serves the version this alias points at, and swaps when it moves."""

    models: Annotated[tuple[str, ...], NoDecode] = ()
    """Comma-separated model names to serve; empty serves every model that has the alias. Serving is
    not ready until each named model has a version loaded."""

    registry_address: str = "127.0.0.1:7401"
    """host:port of the registry's gRPC API, asked at start-up (and every `resync_interval_s`) which
    version each model's alias points at. Empty disables this: only `registry.events` drive loading."""

    service_token: str | None = None
    """Bearer token serving sends to the registry (a "viewer" token); unset sends none."""

    rpc_timeout_s: float = Field(default=10.0, gt=0)
    """Deadline of one gRPC call to the registry, in seconds."""

    resync_interval_s: float = Field(default=300.0, ge=0)
    """Seconds between re-reads of the registry's aliases (heals missed events); 0 reads only at start-up."""

    trusted_types: Annotated[tuple[str, ...], NoDecode] = DEFAULT_TRUSTED_TYPES
    """Comma-separated types a skops model artifact may hold beyond skops' defaults (never pickle);
    an artifact holding any other type is refused."""

    load_attempts: int = Field(default=3, ge=1)
    """Attempts at reading an artifact that is missing or unreadable before the load is given up
    (a sha256 mismatch or an untrusted type is never retried)."""

    max_batch_rows: int = Field(default=10_000, ge=1)
    """Most rows one inference request may carry; more is refused (gRPC RESOURCE_EXHAUSTED, HTTP 413)."""

    max_tensor_elements: int = Field(default=1 << 24, ge=1)
    """Most elements one input tensor may hold (16,777,216 by default). Every input's shape is
    checked while the request is decoded, before anything is allocated: a negative dimension, more
    than 32 dimensions, or more elements than this (dimensions of 0 counted as 1, so `[0, 2**62]`
    is refused too) answers gRPC INVALID_ARGUMENT / HTTP 400."""

    event_queue_rows: int = Field(default=50_000, ge=1)
    """Capacity, in predictions, of the in-memory buffer of inference events waiting for the broker;
    when it is full new events are dropped and counted, never blocking a prediction."""

    event_batch_rows: int = Field(default=500, ge=1)
    """Most inference events the publisher hands to the broker before waiting for their acknowledgements."""

    http_max_body_bytes: int = Field(default=16 << 20, ge=0)
    """Largest HTTP request body in bytes for every serving route, the REST inference routes
    included (larger is refused with 413): 16 MiB here, 4 MiB in the other services. gRPC messages
    are limited by `grpc_max_receive_message_bytes` (RESOURCE_EXHAUSTED)."""

    batching: dict[str, BatchingPolicySetting] = Field(default_factory=dict)
    """Adaptive batching per model, JSON: `{"<model>": {"max_batch_rows": 64, "max_wait_ms": 2}}`;
    the key `*` applies to every model without its own entry. Empty (the default): no batching."""

    runtime: Literal["auto", "sklearn"] = "auto"
    """What computes predictions. `auto`: models that convert exactly (linear models and numeric
    scalers fitted on arrays, checked against scikit-learn at load) run on ONNX Runtime, the rest on
    scikit-learn; `sklearn`: scikit-learn for every model (docs/services/serving.md)."""

    torch_threads: int = Field(default=0, ge=0)
    """Threads torch computes a text model's batch with (`torch.set_num_threads`, process-wide); 0
    (the default) uses the cores this process may run on. Text models predict in one worker thread,
    one batch at a time, off the event loop (docs/services/serving.md)."""

    max_text_bytes: int = Field(default=16_384, ge=1)
    """Longest text one BYTES element of a text model's input may hold, in UTF-8 bytes (16 KiB);
    longer answers gRPC INVALID_ARGUMENT / HTTP 400, as does a text that is not valid UTF-8. The
    model reads at most its `max_length` tokens (128 by default) of a text anyway."""

    event_text: Literal["text", "hash"] = "text"
    """What inference events carry of a text model's input: `text`, the text itself; `hash`, only
    `sha256:<hex of its UTF-8 bytes>:<length in characters>` under the input's name, for texts that
    must not leave serving (the monitor still tests their length)."""

    challenger_alias: str = "challenger"
    """Registry alias of the challenger version that traffic splits (canary, shadow) send requests to."""

    traffic: dict[str, TrafficSplitSetting] = Field(default_factory=dict)
    """Traffic split per model, JSON: `{"<model>": {"canary_percent": 10, "shadow": false}}`; the
    key `*` applies to every model without its own entry. Empty (the default): the challenger gets
    no traffic. Routing is sticky by the request parameter `request_key` (else per request)."""

    spool_dir: str = ".gyre/serving-spool"
    """Parent folder of the inference-event disk spools: each process takes the first free slot
    `<spool_dir>/<n>` (locked while it runs), so replicas on one host never share one and a
    restarted process drains what its predecessor left."""

    spool_max_bytes: int = Field(default=1 << 30, ge=1 << 16)
    """Most bytes one process's spool keeps on disk; events beyond are dropped and counted (`spool_full`)."""

    spool_fsync_interval_s: float = Field(default=1.0, ge=0)
    """Longest time between fsyncs of spooled events (0: every write); bounds what a machine crash
    (not a process crash) can lose."""

    server_name: str = "gyre-serving"
    """Server name reported by the ServerMetadata RPC and `GET /v2`."""

    @field_validator("models", "trusted_types", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_names(value)
