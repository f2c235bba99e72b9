"""Settings of the feedback service (environment prefix ``GYRE_FEEDBACK_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from gyre_common.settings import OutboxSettings


class FeedbackSettings(OutboxSettings):
    """Where the feedback service listens, how it matches labels and when it asks for retraining."""

    model_config = SettingsConfigDict(env_prefix="GYRE_FEEDBACK_")

    http_port: int = 7600
    """HTTP port: REST API (`/api/v1/feedback`, `/api/v1/models/{name}/quality`), `/healthz`, `/readyz`, `/metrics`."""

    grpc_port: int = 7601
    """gRPC port: `gyre.feedback.v1.FeedbackService` and `grpc.health.v1`."""

    label_output: str = "predict"
    """Name of the inference output compared with corrected labels (serving's class or value output);
    a prediction without it counts as wrong when it has several outputs, and uses its only output otherwise."""

    quality_alias: str = "production"
    """Alias whose served predictions the quality-drop check watches (the production version); empty
    watches every non-shadow prediction."""

    retrain_enabled: bool = True
    """Whether a drop in accuracy raises a QUALITY_DROP alert and a retraining request."""

    retrain_window_labels: int = Field(default=50, ge=1, le=100_000)
    """Number of most recent labelled feedbacks of a version whose accuracy is checked; the check waits
    until this many exist."""

    retrain_accuracy_threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    """Accuracy (share in [0, 1]) under which the last `retrain_window_labels` labels count as a quality drop."""

    retrain_cooldown_s: float = Field(default=3600.0, ge=0.0)
    """Seconds (wall clock) between two quality-drop alerts and retraining requests of one model."""

    promote_to_alias: str = "production"
    """Alias a retrained model is asked to win (TrainingRequest.promote_to_alias); empty registers without promotion."""

    corrections_to_features: bool = True
    """Whether a corrected label on a prediction that names its entity (InferenceEvent.entity_id) goes
    back to the feature store as a label event on `features.events`, in the feature view and label the
    model version was trained on (registry lineage), so the next training set learns from it."""

    inference_consumer_group: str = "feedback-inference"
    """Kafka consumer group reading `inference.events` (also names its dead-letter topic)."""

    feedback_consumer_group: str = "feedback"
    """Kafka consumer group reading `feedback.events` (feedback published straight to Kafka)."""

    registry_consumer_group: str = "feedback-registry"
    """Kafka consumer group reading `registry.events` (feature view and label of each version, for retraining)."""

    prediction_retention_days: float = Field(default=30.0, gt=0.0)
    """Days stored predictions (and consumed-event ids) are kept; older ones are pruned with their
    quality. Feedback itself is kept."""

    prune_interval_s: float = Field(default=3600.0, gt=0.0)
    """Seconds between prunings of old predictions."""
