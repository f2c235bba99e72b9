"""Where :mod:`gyre_common.errors` meets gRPC: a :class:`~gyre_common.errors.GyreError` ends a call
with the ``grpc.StatusCode`` its ``grpc_code`` names, and the message as details.

Servicers use :func:`grpc_errors` (a block) or :func:`abort_grpc` (one error, optionally with other
details); :func:`grpc_status` gives the code, e.g. for a metric label.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import grpc

from gyre_common.errors import GyreError


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
