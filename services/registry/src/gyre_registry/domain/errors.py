"""Errors of the registry's use cases: the shared ones of :mod:`gyre_common.errors`, which map each
to its status codes.

gRPC: NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT, FAILED_PRECONDITION, UNAUTHENTICATED.
HTTP: 404, 409, 400, 412, 401.
"""

from __future__ import annotations

from gyre_common import errors


class RegistryError(errors.GyreError):
    """Base of the errors below; ``str(error)`` is the message shown to the caller."""


class NotFound(errors.NotFound, RegistryError):
    """The model, version, alias or approval does not exist."""


class AlreadyExists(errors.AlreadyExists, RegistryError):
    """The name is taken, or an idempotency key was reused for something else."""


class InvalidArgument(errors.InvalidArgument, RegistryError):
    """A request field is invalid; ``field`` names it (dotted path, e.g. ``artifact.sha256``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class FailedPrecondition(errors.FailedPrecondition, RegistryError):
    """The request is valid but the registry's state forbids it (archived version, bad artifact);
    HTTP 412 as the registry's REST API has always answered."""

    http_status = 412


class Unauthenticated(errors.Unauthenticated, RegistryError):
    """A write without a valid token while tokens are configured."""


class DatabaseUnavailable(errors.Unavailable, RegistryError):
    """The registry's database cannot be reached; the call may succeed later (UNAVAILABLE, 503)."""

    def __init__(self, message: str = "the registry's database is unavailable; retry later") -> None:
        super().__init__(message)


class BodyTooLarge(errors.InvalidArgument, RegistryError):
    """A REST body above the size limit: HTTP 413, code INVALID_ARGUMENT as the REST API documents."""

    http_status = 413
