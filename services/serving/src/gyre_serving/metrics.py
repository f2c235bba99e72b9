"""Serving's Prometheus metrics (served on ``/metrics`` by the runner).

Defined once per process: every replica runs one serving, and tests that start several share them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INFER_REQUESTS = Counter(
    "gyre_serving_infer_requests", "Inference requests answered, by model, protocol and outcome code.",
    ["model", "protocol", "code"],
)
INFER_SECONDS = Histogram(
    "gyre_serving_infer_seconds", "Time to answer one inference request (decode, predict, encode), in seconds.",
    ["model", "protocol"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
PREDICTIONS = Counter("gyre_serving_predictions", "Rows predicted, by model.", ["model"])
MODEL_LOADS = Counter(
    "gyre_serving_model_loads", "Model version loads, by model and outcome (loaded, or the refusal reason).",
    ["model", "outcome"],
)
SERVED_VERSION = Gauge("gyre_serving_model_version", "Version being served, by model and alias (0: none).",
                       ["model", "alias"])
EVENTS_PUBLISHED = Counter("gyre_serving_inference_events_published", "Inference events the broker acknowledged.")
EVENTS_DROPPED = Counter(
    "gyre_serving_inference_events_dropped",
    "Inference events dropped, by reason (queue_full, broker_error, shutdown, spool_full, disk_full, spool_error).",
    ["reason"],
)
EVENTS_SPOOLED = Counter(
    "gyre_serving_inference_events_spooled",
    "Inference events written to the local disk spool, by reason (queue_full, broker_error, backlog, shutdown).",
    ["reason"],
)
EVENTS_DRAINED = Counter("gyre_serving_inference_events_drained",
                         "Spooled inference events the broker acknowledged.")
EVENT_SPOOL_ERRORS = Counter(
    "gyre_serving_inference_event_spool_errors",
    "Disk trouble of the inference event spool, by operation (short_write, write, rollback, fsync, cursor, "
    "delete, roll, read, quarantine); none of it fails a prediction.", ["operation"],
)
EVENT_SPOOL_QUARANTINED = Counter(
    "gyre_serving_inference_event_spool_quarantined",
    "Unsound stretches of the inference event spool set aside in its quarantine folder, by reason "
    "(crc, truncated, undecodable).", ["reason"],
)
EVENT_DRAINER_RESTARTS = Counter(
    "gyre_serving_inference_event_drainer_restarts",
    "Times the inference event drainer failed unexpectedly and was restarted.",
)
EVENT_SPOOL_EVENTS = Gauge("gyre_serving_inference_event_spool_events",
                           "Inference events in the disk spool waiting for the broker.")
SHADOW_PREDICTIONS = Counter("gyre_serving_shadow_predictions",
                             "Shadow (challenger) predictions, by model and outcome (ok, failed).",
                             ["model", "outcome"])
BATCHES = Counter("gyre_serving_batches", "Combined predict calls of adaptive batching, by model.", ["model"])
EVENT_QUEUE_ROWS = Gauge("gyre_serving_inference_event_queue_rows", "Inference events waiting for the broker.")
REGISTRY_EVENTS = Counter(
    "gyre_serving_registry_events",
    "registry.events records seen, by outcome (applied, ignored, undecodable, invalid, failed).",
    ["outcome"],
)

UNKNOWN_MODEL = "_unknown"
"""Model label of requests for models that are not served (keeps the label set bounded)."""


_request_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
_prediction_children: dict[str, Counter] = {}


def observe_request(model: str, protocol: str, code: str, seconds: float) -> None:
    """Count one answered inference request and its duration."""
    # Label children are looked up once per label set: ``labels()`` takes a lock and builds a key
    # on every call, which showed in the per-request profile. The label sets are bounded (served
    # models, two protocols, status codes; unknown models share UNKNOWN_MODEL).
    key = (model, protocol, code)
    children = _request_children.get(key)
    if children is None:
        children = _request_children[key] = (INFER_REQUESTS.labels(model, protocol, code),
                                              INFER_SECONDS.labels(model, protocol))
    children[0].inc()
    children[1].observe(seconds)


def count_predictions(model: str, rows: int) -> None:
    """Count ``rows`` predicted rows of ``model``."""
    child = _prediction_children.get(model)
    if child is None:
        child = _prediction_children[model] = PREDICTIONS.labels(model)
    child.inc(rows)
