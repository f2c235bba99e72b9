"""Polling with a deadline: how tests wait for asynchronous work instead of sleeping (tests only)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def wait_until(condition: Callable[[], Any], within_s: float = 30.0, what: str = "condition",
                     interval_s: float = 0.05) -> Any:
    """Poll ``condition`` (sync, or returning an awaitable) until it returns something truthy; return that.

    Raises:
        AssertionError: ``within_s`` seconds passed without a truthy answer; the message names ``what``.
    """
    deadline = time.monotonic() + within_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval_s)
