"""How every step checks what it claims: poll a condition until a deadline, or fail saying what was seen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import httpx

T = TypeVar("T")


class LoopError(AssertionError):
    """A step of the loop did not happen as expected; the message says what was expected and seen."""


async def poll(check: Callable[[], Awaitable[T | None]], *, within_s: float, what: str,
               every_s: float = 0.2) -> T:
    """``await check()`` until it returns something other than None (or False).

    HTTP, gRPC, KeyError and ValueError failures of ``check`` count as "not yet" and the last one is
    quoted in the error.

    Raises:
        LoopError: nothing came within ``within_s`` seconds.
    """
    deadline = time.monotonic() + within_s
    last: Any = None
    while True:
        try:
            result = await check()
        except (httpx.HTTPError, grpc.RpcError, KeyError, ValueError) as exc:
            result, last = None, exc
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise LoopError(f"timed out after {within_s:.0f}s waiting for {what}" + (f" (last error: {last!r})"
                                                                                      if last else ""))
        await asyncio.sleep(every_s)


async def get_json(client: httpx.AsyncClient, url: str, **params: Any) -> Any:
    """GET ``url``; the JSON body, or None for 404; other errors raise ``httpx.HTTPStatusError``."""
    response = await client.get(url, params=params or None)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.json()
