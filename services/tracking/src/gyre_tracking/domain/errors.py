"""Errors of the tracking domain. Each maps to one gRPC status and one HTTP status in the adapters;
``reason`` is a stable machine-readable code (also the dead-letter reason of a rejected event)."""

from __future__ import annotations


class TrackingError(Exception):
    """Base of every expected failure; the message is meant for the caller."""

    reason = "tracking_error"


class InvalidArgument(TrackingError):
    """The request is malformed: a bad key, name, filter, page token or size (gRPC INVALID_ARGUMENT)."""

    reason = "invalid_argument"


class NotFound(TrackingError):
    """The experiment or run does not exist (gRPC NOT_FOUND)."""

    reason = "not_found"


class AlreadyExists(TrackingError):
    """The entity exists with other content: experiment name, run id, artifact path (gRPC ALREADY_EXISTS)."""

    reason = "already_exists"


class ParamConflict(AlreadyExists):
    """A param was logged again with a different value; params are write-once (gRPC ALREADY_EXISTS)."""

    reason = "param_conflict"


class FailedPrecondition(TrackingError):
    """The entity is not in a state that allows the change, e.g. a deleted run (gRPC FAILED_PRECONDITION)."""

    reason = "failed_precondition"
