"""Size limits at the HTTP edge: one request-body limit for every service's FastAPI app.

:class:`BodyLimitMiddleware` is plain ASGI (no ``BaseHTTPMiddleware``, which would buffer and
re-wrap every request): it counts the bytes a route actually reads through ``receive``, so a
chunked upload without ``Content-Length`` is cut off as soon as it passes the limit, and a declared
``Content-Length`` above the limit is refused before any byte is read. Either way the answer is
413 with the shared error body ``{"detail": "...", "reason": "too_large"}``
(:mod:`gyre_common.errors`). A route that never reads its body costs nothing beyond one header scan.

The limit is the service's ``http_max_body_bytes`` setting (:class:`~gyre_common.settings.ServiceSettings`,
4 MiB by default). A route that documents a different one declares it next to its path with
:func:`body_limit`; the value then also appears in the route's OpenAPI operation as
``x-max-body-bytes``. ``body_limit(None)`` means no limit (uploads streamed to storage); FastAPI
leaves a null out of the document.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gyre_common.errors import TooLarge, error_body

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
"""4 MiB: gRPC's default message limit too, so both transports of a service take the same requests."""

OPENAPI_KEY = "x-max-body-bytes"
"""Where :func:`body_limit` puts a route's own limit in its OpenAPI operation (``openapi_extra``)."""

INT64_MAX = 2**63 - 1
"""Largest integer PostgreSQL's bigint and protobuf's int64 hold; bound request integers by it."""

_UNSET = object()


def _storable_text(value: str) -> str:
    # JSON may escape a lone UTF-16 surrogate ("\ud800"); UTF-8 (PostgreSQL, protobuf) cannot hold it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


STORABLE = AfterValidator(_storable_text)
"""Pydantic metadata for a request string: ``Annotated[StrictStr, STORABLE]``."""

Text = Annotated[str, STORABLE]
"""A request string that PostgreSQL and protobuf can store: a 422 for a lone surrogate instead of a 500."""


def body_limit(max_bytes: int | None) -> dict[str, Any]:
    """``openapi_extra`` for a route whose body limit differs from the service's, e.g.
    ``@router.put("/profile", openapi_extra=body_limit(16 << 20))``.

    Args:
        max_bytes: most bytes the route's request body may have; None for no limit (a streamed
            upload that the route bounds itself, or that storage bounds).
    """
    if max_bytes is not None and max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0 or None, got {max_bytes}")
    return {OPENAPI_KEY: max_bytes}


class RequestBodyTooLarge(TooLarge, HTTPException):
    """A request body passed its limit. Raised from ``receive`` inside the route.

    It is a :class:`~gyre_common.errors.TooLarge` (so the shared handler answers 413 with the
    shared body) and a Starlette ``HTTPException`` (so FastAPI's body parsing re-raises it as it is
    instead of turning it into a 400 "error parsing the body").
    """

    def __init__(self, message: str) -> None:
        TooLarge.__init__(self, message)
        HTTPException.__init__(self, status_code=413, detail=message)

    def __str__(self) -> str:
        return str(self.detail)


def _route_limit(scope: Scope, default: int | None) -> int | None:
    # FastAPI's routing puts the matched route in the scope before the endpoint reads its body,
    # i.e. before the first receive().
    route = scope.get("route")
    extra = getattr(route, "openapi_extra", None)
    if isinstance(extra, dict):
        value = extra.get(OPENAPI_KEY, _UNSET)
        if value is None or isinstance(value, int):
            return value
    return default


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses a malformed Content-Length itself
    return None


class BodyLimitMiddleware:
    """ASGI middleware: request bodies above the limit get 413 (see the module docstring).

    Args:
        app: the wrapped ASGI app.
        max_bytes: the limit, in bytes, for routes that do not declare their own with :func:`body_limit`.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit: int | None = None
        limit_known = False
        received = 0

        async def limited_receive() -> Message:
            nonlocal limit, limit_known, received
            if not limit_known:
                limit, limit_known = _route_limit(scope, self.max_bytes), True
                declared = _declared_length(scope) if limit is not None else None
                if limit is not None and declared is not None and declared > limit:
                    raise RequestBodyTooLarge(f"the request body has {declared} bytes; at most {limit}")
            message = await receive()
            if limit is not None and message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestBodyTooLarge(f"the request body has more than {limit} bytes")
            return message

        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except RequestBodyTooLarge as exc:
            # Usually the shared GyreError handler (gyre_common.http.create_app) or an MLflow
            # gateway answers it inside; this is for ASGI code that lets it through (a proxy).
            if started:
                raise
            await _send_too_large(send, exc)


async def _send_too_large(send: Send, exc: TooLarge) -> None:
    body = json.dumps(error_body(exc)).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
