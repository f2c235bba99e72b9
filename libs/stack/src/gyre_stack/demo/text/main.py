"""``gyre-stack demo --text`` (behind ``make demo-text``): the text story against the stack of ``make up``."""

from __future__ import annotations

from gyre_stack.demo.main import play
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
    return play(lambda: text_plan(deadline_s, max_evals),
                lambda endpoints, plan: f"text model {plan.model} on {ROWS} generated sentences "
                                        f"({', '.join(TOPICS)}; {MISLABELLED} mislabelled), ",
                run_text_loop, "the text loop closed")
