"""The tracking domain: model, validation, run lifecycle rules and the search grammar (no I/O)."""

from gyre_tracking.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ParamConflict,
    TrackingError,
)
from gyre_tracking.domain.model import (
    Experiment,
    LifecycleStage,
    Metric,
    NewRun,
    Run,
    RunArtifact,
    RunInfo,
    RunStatus,
    ViewType,
)

__all__ = [
    "AlreadyExists",
    "Experiment",
    "FailedPrecondition",
    "InvalidArgument",
    "LifecycleStage",
    "Metric",
    "NewRun",
    "NotFound",
    "ParamConflict",
    "Run",
    "RunArtifact",
    "RunInfo",
    "RunStatus",
    "TrackingError",
    "ViewType",
]
