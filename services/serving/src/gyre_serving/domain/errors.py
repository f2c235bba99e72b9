"""Errors of the serving domain: the shared ones of :mod:`gyre_common.errors`, which map them to
status codes (the transports keep the Open Inference Protocol's body ``{"error": "..."}``).

| error | gRPC | HTTP |
|---|---|---|
| :class:`InvalidRequestError` | INVALID_ARGUMENT | 400 |
| :class:`ModelNotFoundError` | NOT_FOUND | 404 |
| :class:`RequestTooLargeError` | RESOURCE_EXHAUSTED | 413 |
| :class:`ModelUnavailableError` | UNAVAILABLE | 503 |
| :class:`PredictionError` | INTERNAL | 500 |
"""

from __future__ import annotations

from gyre_common import errors


class ServingError(errors.GyreError):
    """Base of the errors a client can cause or see; the message is meant for the client."""

    grpc_code = "UNKNOWN"


class InvalidRequestError(errors.InvalidArgument, ServingError, ValueError):
    """The request is malformed: wrong datatype, shape, size, names; the message says what was expected."""


class ModelNotFoundError(errors.NotFound, ServingError, LookupError):
    """No such model (or version of it) is loaded here."""


class RequestTooLargeError(errors.TooLarge, ServingError):
    """The request carries more rows than the configured limit."""


class ModelUnavailableError(errors.Unavailable, ServingError):
    """The model is known but cannot answer right now (e.g. its prediction failed)."""


class PredictionError(ServingError):
    """The model failed on input that passed validation (a bug or an incompatible artifact)."""

    grpc_code = "INTERNAL"


class ModelLoadError(Exception):
    """A model version could not be loaded; the old version (if any) keeps serving.

    Attributes:
        reason: short machine-readable cause, also a metric label: ``integrity`` (sha256
            mismatch), ``untrusted`` (types outside the trusted list), ``format``,
            ``not_found``, ``unreadable``, ``deserialise``, ``signature`` or ``warmup``.
        retryable: whether trying again later may succeed (a missing or unreadable file).
    """

    def __init__(self, reason: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable
