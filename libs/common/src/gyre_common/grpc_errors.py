"""Where :mod:`gyre_common.errors` meets gRPC: a :class:`~gyre_common.errors.GyreError` ends a call
with the ``grpc.StatusCode`` its ``grpc_code`` names, and the message as details.

Servicers use :func:`grpc_errors` (a block) or :func:`abort_grpc` (one error, optionally with other
details); :func:`grpc_status` gives the code, e.g. for a metric label. Every server the runner
builds also has :class:`DependencyOutageInterceptor`: a call that fails because the database or the
broker is away ends with UNAVAILABLE, never UNKNOWN.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import grpc

from gyre_common.bus.failures import Failure, classify_failure
from gyre_common.errors import GyreError
from gyre_common.http import OUTAGE_MESSAGE, describe_failure

log = logging.getLogger(__name__)


def grpc_status(exc: GyreError) -> grpc.StatusCode:
    """The status code ``exc``'s class names in ``grpc_code``.

    Raises:
        KeyError: ``grpc_code`` names no ``grpc.StatusCode`` member (a typo in an error class).
    """
    return grpc.StatusCode[exc.grpc_code]


async def abort_grpc(context: grpc.aio.ServicerContext[Any, Any], exc: GyreError, message: str | None = None,
                     ) -> NoReturn:
    """End the gRPC call with ``exc``'s status; the details are ``message`` or else ``str(exc)``.

    Raises:
        Exception: always (``context.abort`` raises to end the call).
    """
    await context.abort(grpc_status(exc), str(exc) if message is None else message)
    raise AssertionError("context.abort always raises")


@asynccontextmanager
async def grpc_errors(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
    """``async with grpc_errors(context): ...`` ends the call with the status of a :class:`GyreError`
    raised in the block; other exceptions pass through."""
    try:
        yield
    except GyreError as exc:
        await abort_grpc(context, exc)


class DependencyOutageInterceptor(grpc.aio.ServerInterceptor):
    """Ends a call with UNAVAILABLE (details: a dependency is unavailable) when its handler raises
    an exception :func:`~gyre_common.bus.failures.classify_failure` calls transient, e.g. PostgreSQL
    unreachable, also when wrapped; logged as one warning line, without a traceback. Other
    exceptions, and a status the handler set itself (``context.abort``), pass unchanged.

    Wraps the async handlers of each method (unary or streaming, coroutine or async generator);
    synchronous handlers are left as they are.
    """

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or not hasattr(handler, "_replace"):
            return handler
        method = handler_call_details.method
        kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        guarded = {kind: _guard(getattr(handler, kind), method) for kind in kinds if getattr(handler, kind)}
        return handler._replace(**guarded)  # type: ignore[no-any-return]


async def _abort_unavailable(context: grpc.aio.ServicerContext[Any, Any], method: str, exc: BaseException) -> None:
    log.warning("%s ended UNAVAILABLE, a dependency is unavailable: %s", method, describe_failure(exc))
    await context.abort(grpc.StatusCode.UNAVAILABLE, OUTAGE_MESSAGE)


def _guard(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):
        async def guarded_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            try:
                async for reply in behavior(request, context):
                    yield reply
            except Exception as exc:
                if classify_failure(exc) is not Failure.TRANSIENT:
                    raise
                await _abort_unavailable(context, method, exc)
        return guarded_stream
    if inspect.iscoroutinefunction(behavior):
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await behavior(request, context)
            except Exception as exc:
                if classify_failure(exc) is not Failure.TRANSIENT:
                    raise
                await _abort_unavailable(context, method, exc)
        return guarded
    return behavior
