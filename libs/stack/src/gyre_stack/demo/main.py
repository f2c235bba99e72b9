"""``gyre-stack demo`` (behind ``make demo``): the story against the stack that ``make up`` started."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import httpx

from gyre_stack.demo.checks import LoopError
from gyre_stack.demo.data import feature_names
from gyre_stack.demo.endpoints import SERVICES, Endpoints
from gyre_stack.demo.plan import Plan, demo_plan
from gyre_stack.demo.story import Clock, run_loop


async def check_stack(endpoints: Endpoints, names: Iterable[str] = SERVICES) -> list[str]:
    """Services whose ``/readyz`` does not answer 200 (3 s timeout), each with why."""
    problems = []
    async with httpx.AsyncClient(timeout=3) as http:
        for name in names:
            url = f"{endpoints[name].http}/readyz"
            try:
                response = await http.get(url)
            except httpx.HTTPError as exc:
                problems.append(f"{name}: no answer at {url} ({type(exc).__name__})")
                continue
            if response.status_code != 200:
                problems.append(f"{name}: not ready at {url} ({response.status_code} {response.text[:200]})")
    return problems


def demo(deadline_s: float) -> int:
    """Play the story against the stack of `make up`, one line per step on stdout, waiting at most
    ``deadline_s`` seconds for any one step.

    Returns:
        0 when the whole loop ran, 1 when a step failed (the reason on stdout), 2 when the stack is
        not up (the services that do not answer on stderr).

    Raises:
        SettingsError: a ``GYRE_*`` variable of this environment does not parse.
    """
    return play(lambda: demo_plan(feature_names(), deadline_s),
                lambda endpoints, plan: f"model {plan.model}, ",
                run_loop, "the loop closed")


def play(make_plan: Callable[[], Plan], model: Callable[[Endpoints, Plan], str],
         run: Callable[[Endpoints, Plan, Clock], Coroutine[Any, Any, dict[str, Any]]], closed: str) -> int:
    """Check the stack of `make up` is up, then play ``run`` with ``make_plan()``'s plan, one line per step
    on stdout; ``model(endpoints, plan)`` starts the line's model description and ``closed`` ends the story.

    Returns:
        0 when the whole loop ran, 1 when a step failed (the reason on stdout), 2 when the stack is
        not up (the services that do not answer on stderr).

    Raises:
        SettingsError: a ``GYRE_*`` variable of this environment does not parse.
    """
    clock = Clock()
    try:
        endpoints = Endpoints.from_env()
    except LoopError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    problems = asyncio.run(check_stack(endpoints))
    if problems:
        print("demo: the stack is not up (start it with `make up`; `make status` shows what runs):\n  "
              + "\n  ".join(problems), file=sys.stderr)
        return 2
    plan = make_plan()
    clock(f"stack is up (broker {endpoints.bootstrap_servers}, topics {endpoints.topic_prefix}*); "
          f"{model(endpoints, plan)}monitor windows of {plan.window_rows} predictions, "
          f"{plan.max_evals} trials per training")
    try:
        summary = asyncio.run(run(endpoints, plan, clock))
    except LoopError as exc:
        clock(f"FAILED: {exc}")
        return 1
    clock(f"done: {closed} (promotion of v2 by {summary['promotion']}); "
          f"open {endpoints['dashboard'].http}/ to see it")
    return 0
