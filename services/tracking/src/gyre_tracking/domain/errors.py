"""Errors of the tracking domain: the shared ones of :mod:`gyre_common.errors`, which map each to
one gRPC status and one HTTP status; ``reason`` is a stable machine-readable code (also the
dead-letter reason of a rejected event)."""

from __future__ import annotations

from gyre_common import errors


class TrackingError(errors.GyreError):
    """Base of every expected failure; the message is meant for the caller (else INVALID_ARGUMENT, 400)."""

    reason = "tracking_error"
    grpc_code = "INVALID_ARGUMENT"
    http_status = 400


class InvalidArgument(errors.InvalidArgument, TrackingError):
    """The request is malformed: a bad key, name, filter, page token or size (gRPC INVALID_ARGUMENT, 400)."""

    reason = "invalid_argument"


class NotFound(errors.NotFound, TrackingError):
    """The experiment or run does not exist (gRPC NOT_FOUND, 404)."""

    reason = "not_found"


class AlreadyExists(errors.AlreadyExists, TrackingError):
    """The entity exists with other content: experiment name, run id, artifact path (ALREADY_EXISTS, 409)."""

    reason = "already_exists"


class ParamConflict(AlreadyExists):
    """A param was logged again with a different value; params are write-once (gRPC ALREADY_EXISTS)."""

    reason = "param_conflict"


class FailedPrecondition(errors.FailedPrecondition, TrackingError):
    """The entity is not in a state that allows the change, e.g. a deleted run (FAILED_PRECONDITION, 409)."""

    reason = "failed_precondition"
