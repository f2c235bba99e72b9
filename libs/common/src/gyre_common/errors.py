"""Domain errors every service shares, in plain Python: no transport is imported here.

A handler raises a subclass of :class:`GyreError`; the transports translate it without knowing
the service, from the class's attributes: :mod:`gyre_common.grpc_errors` (``abort_grpc``,
``grpc_errors``) ends a gRPC call with the status named by ``grpc_code`` and the message as
details, and the FastAPI handler of :mod:`gyre_common.http` (installed by ``create_app`` for every
app) answers with ``http_status`` and the body ``{"detail": "<message>", "reason": "<slug>"}``.
So a service's ``domain`` package can raise these without depending on grpc or fastapi.

| class | ``reason`` | gRPC (``grpc_code``) | HTTP |
|---|---|---|---|
| :class:`GyreError` | ``error`` | INTERNAL | 500 |
| :class:`InvalidArgument` | ``invalid_argument`` | INVALID_ARGUMENT | 400 |
| :class:`NotFound` | ``not_found`` | NOT_FOUND | 404 |
| :class:`AlreadyExists` | ``already_exists`` | ALREADY_EXISTS | 409 |
| :class:`FailedPrecondition` | ``failed_precondition`` | FAILED_PRECONDITION | 409 |
| :class:`ResourceExhausted` | ``resource_exhausted`` | RESOURCE_EXHAUSTED | 429 |
| :class:`TooLarge` | ``too_large`` | RESOURCE_EXHAUSTED | 413 |
| :class:`Unavailable` | ``unavailable`` | UNAVAILABLE | 503 |
| :class:`Unauthenticated` | ``unauthenticated`` | UNAUTHENTICATED | 401 (+ ``WWW-Authenticate``) |

A service's own error classes subclass these (shared class first among the bases, so its codes
win over a service base class) and may override ``reason`` or, where the service's documented
API says so, ``http_status`` (e.g. 422 for invalid input, 412 for a failed precondition) or
``grpc_code`` (the name of a ``grpc.StatusCode`` member, e.g. ``"UNKNOWN"``).

Besides these, an exception that :func:`gyre_common.failures.classify_failure` calls transient
(the database or the broker away) answers 503 / UNAVAILABLE in every service (see
:mod:`gyre_common.http` and :mod:`gyre_common.grpc_errors`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class GyreError(Exception):
    """Base of every expected failure a caller may see; ``str(error)`` is the message for the caller.

    Attributes:
        reason: stable machine-readable slug (snake_case); a class attribute that an instance may
            override (e.g. a dead-letter reason).
        grpc_code: the name of the ``grpc.StatusCode`` a gRPC call ends with (e.g. ``"NOT_FOUND"``).
        http_status: the HTTP status of the answer.
        http_headers: extra headers of the HTTP answer.
    """

    reason: str = "error"
    grpc_code: ClassVar[str] = "INTERNAL"
    http_status: ClassVar[int] = 500
    http_headers: ClassVar[Mapping[str, str]] = {}


class InvalidArgument(GyreError):
    """The request is malformed; the message says which field and why."""

    reason = "invalid_argument"
    grpc_code = "INVALID_ARGUMENT"
    http_status = 400


class NotFound(GyreError):
    """What the request names does not exist."""

    reason = "not_found"
    grpc_code = "NOT_FOUND"
    http_status = 404


class AlreadyExists(GyreError):
    """The entity exists already (with other content, or the name is taken)."""

    reason = "already_exists"
    grpc_code = "ALREADY_EXISTS"
    http_status = 409


class FailedPrecondition(GyreError):
    """The request is valid but the current state forbids it."""

    reason = "failed_precondition"
    grpc_code = "FAILED_PRECONDITION"
    http_status = 409


class ResourceExhausted(GyreError):
    """A quota or queue is full; retrying later may succeed."""

    reason = "resource_exhausted"
    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 429


class TooLarge(ResourceExhausted):
    """The request exceeds a size limit; it will never succeed as it is."""

    reason = "too_large"
    http_status = 413


class Unavailable(GyreError):
    """A dependency cannot answer right now; retrying later may succeed."""

    reason = "unavailable"
    grpc_code = "UNAVAILABLE"
    http_status = 503


class Unauthenticated(GyreError):
    """No credentials, or ones that match no known subject."""

    reason = "unauthenticated"
    grpc_code = "UNAUTHENTICATED"
    http_status = 401
    http_headers = {"WWW-Authenticate": "Bearer"}


def error_body(exc: GyreError) -> dict[str, str]:
    """The JSON body of an HTTP error answer: ``{"detail": <message>, "reason": <slug>}``."""
    return {"detail": str(exc), "reason": exc.reason}
