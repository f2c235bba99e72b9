"""Errors of the registry's use cases; each transport maps them to its own status codes.

gRPC: NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT, FAILED_PRECONDITION, UNAUTHENTICATED.
HTTP: 404, 409, 400, 412, 401.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base of the errors below; ``str(error)`` is the message shown to the caller."""


class NotFound(RegistryError):
    """The model, version, alias or approval does not exist."""


class AlreadyExists(RegistryError):
    """The name is taken, or an idempotency key was reused for something else."""


class InvalidArgument(RegistryError):
    """A request field is invalid; ``field`` names it (dotted path, e.g. ``artifact.sha256``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class FailedPrecondition(RegistryError):
    """The request is valid but the registry's state forbids it (archived version, bad artifact)."""


class Unauthenticated(RegistryError):
    """A write without a valid token while tokens are configured."""
