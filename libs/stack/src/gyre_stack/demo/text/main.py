"""``gyre-stack demo --text`` (behind ``make demo-text``): the text story against the stack of ``make up``."""

from __future__ import annotations

import asyncio
import sys

from gyre_stack.demo.checks import LoopError
from gyre_stack.demo.endpoints import Endpoints
from gyre_stack.demo.main import check_stack
from gyre_stack.demo.story import Clock
from gyre_stack.demo.text.data import MISLABELLED, ROWS, TOPICS
from gyre_stack.demo.text.plan import text_plan
from gyre_stack.demo.text.story import run_text_loop


def demo_text(deadline_s: float, max_evals: int | None = None) -> int:
    """Play the text story against the stack of `make up`, one line per step on stdout, waiting at most
    ``deadline_s`` seconds for any one step; ``max_evals`` trials for version 1 (default: the trainer's
    ``default_max_evals``, which the monitor's retraining gets).

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
    plan = text_plan(deadline_s, max_evals)
    clock(f"stack is up (broker {endpoints.bootstrap_servers}, topics {endpoints.topic_prefix}*); text model "
          f"{plan.model} on {ROWS} generated sentences ({', '.join(TOPICS)}; {MISLABELLED} mislabelled), "
          f"monitor windows of {plan.window_rows} predictions, {plan.max_evals} trials per training")
    try:
        summary = asyncio.run(run_text_loop(endpoints, plan, clock))
    except LoopError as exc:
        clock(f"FAILED: {exc}")
        return 1
    clock(f"done: the text loop closed (promotion of v2 by {summary['promotion']}); "
          f"open {endpoints['dashboard'].http}/ to see it")
    return 0
