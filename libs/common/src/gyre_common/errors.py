"""Domain errors every service shares, and the one place they become gRPC and HTTP status codes.

A handler raises a subclass of :class:`GyreError`; the transports translate it without knowing
the service: :func:`abort_grpc` / :func:`grpc_errors` end a gRPC call with the class's
``grpc_status`` and the message as details, and the FastAPI handler installed by
:func:`install_http_errors` (the runner does it for every app) answers with ``http_status`` and
the body ``{"detail": "<message>", "reason": "<slug>"}``.

| class | ``reason`` | gRPC | HTTP |
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
API says so, ``http_status`` (e.g. 422 for invalid input, 412 for a failed precondition).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar, NoReturn

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class GyreError(Exception):
    """Base of every expected failure a caller may see; ``str(error)`` is the message for the caller.

    Attributes:
        reason: stable machine-readable slug (snake_case); a class attribute that an instance may
            override (e.g. a dead-letter reason).
        grpc_status: the gRPC status code a call ends with.
        http_status: the HTTP status of the answer.
        http_headers: extra headers of the HTTP answer.
    """

    reason: str = "error"
    grpc_status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_status: ClassVar[int] = 500
    http_headers: ClassVar[Mapping[str, str]] = {}


class InvalidArgument(GyreError):
    """The request is malformed; the message says which field and why."""

    reason = "invalid_argument"
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400


class NotFound(GyreError):
    """What the request names does not exist."""

    reason = "not_found"
    grpc_status = grpc.StatusCode.NOT_FOUND
    http_status = 404


class AlreadyExists(GyreError):
    """The entity exists already (with other content, or the name is taken)."""

    reason = "already_exists"
    grpc_status = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409


class FailedPrecondition(GyreError):
    """The request is valid but the current state forbids it."""

    reason = "failed_precondition"
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class ResourceExhausted(GyreError):
    """A quota or queue is full; retrying later may succeed."""

    reason = "resource_exhausted"
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429


class TooLarge(ResourceExhausted):
    """The request exceeds a size limit; it will never succeed as it is."""

    reason = "too_large"
    http_status = 413


class Unavailable(GyreError):
    """A dependency cannot answer right now; retrying later may succeed."""

    reason = "unavailable"
    grpc_status = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class Unauthenticated(GyreError):
    """No credentials, or ones that match no known subject."""

    reason = "unauthenticated"
    grpc_status = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401
    http_headers = {"WWW-Authenticate": "Bearer"}


async def abort_grpc(context: grpc.aio.ServicerContext[Any, Any], exc: GyreError, message: str | None = None,
                     ) -> NoReturn:
    """End the gRPC call with ``exc``'s status; the details are ``message`` or else ``str(exc)``.

    Raises:
        Exception: always (``context.abort`` raises to end the call).
    """
    await context.abort(exc.grpc_status, str(exc) if message is None else message)
    raise AssertionError("context.abort always raises")


@asynccontextmanager
async def grpc_errors(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
    """``async with grpc_errors(context): ...`` ends the call with the status of a :class:`GyreError`
    raised in the block; other exceptions pass through."""
    try:
        yield
    except GyreError as exc:
        await abort_grpc(context, exc)


def error_body(exc: GyreError) -> dict[str, str]:
    """The JSON body of an HTTP error answer: ``{"detail": <message>, "reason": <slug>}``."""
    return {"detail": str(exc), "reason": exc.reason}


async def http_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI exception handler for :class:`GyreError`: its status, headers and :func:`error_body`."""
    assert isinstance(exc, GyreError)
    return JSONResponse(error_body(exc), status_code=exc.http_status, headers=dict(exc.http_headers) or None)


def install_http_errors(app: FastAPI) -> None:
    """Answer every :class:`GyreError` a route raises with :func:`http_error_handler`."""
    app.add_exception_handler(GyreError, http_error_handler)
