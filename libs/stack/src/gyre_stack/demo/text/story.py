"""The text story from start to end: :func:`run_text_loop` plays steps a to g in order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gyre_stack.demo.endpoints import Endpoints
from gyre_stack.demo.plan import Plan
from gyre_stack.demo.steps.drift import check_debounce
from gyre_stack.demo.story import play_story
from gyre_stack.demo.text.loop import TextLoop
from gyre_stack.demo.text.steps import corrections, dashboard, drift, features, retrain, serving, training

#: The steps in order, with the letter each prints.
STEPS = ("a features", "b training", "c serving", "d corrections", "e drift", "f retrain", "g dashboard")


async def run_text_loop(endpoints: Endpoints, plan: Plan, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the text story's steps a to g against ``endpoints``; a summary of what happened
    (``fingerprint_before``/``fingerprint_after``: the features' training set before and after the
    corrections; ``v1``, ``v2``: lineages; ``corrections``; ``alert``, ``drift_request``; ``promotion``;
    ``swap``: the client's calls; ``overview``: the dashboard's last answer).

    Raises:
        LoopError: at the first step that does not happen as expected.
    """
    async def story(loop: TextLoop) -> dict[str, Any]:
        await features.run(loop)
        await training.run(loop)
        await serving.run(loop)
        await corrections.run(loop)
        await drift.run(loop)
        await retrain.run(loop)
        check_debounce(loop.base)
        loop.summary["overview"] = await dashboard.run(loop)
        return loop.summary
    return await play_story(endpoints, plan, say, TextLoop, story)
