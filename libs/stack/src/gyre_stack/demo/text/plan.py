"""What the text story does: names, window of the monitor, trials; fitted to a stack's settings."""

from __future__ import annotations

import uuid
from typing import Any

from gyre_common.service import discover_services
from gyre_common.settings import load_settings
from gyre_stack.demo.plan import Plan

#: The text feature of the view (and the model's BYTES input, which the trainer names after it).
TEXT_FEATURE = "text"
#: The label: the topic, a string.
LABEL = "topic"


def text_plan(deadline_s: float = Plan.deadline_s, max_evals: int | None = None) -> Plan:
    """A plan for the text story fitted to the running stack's monitor and trainer settings (read from
    this environment), with new names (``topics_<hex>``, ``news_<hex>``) so that runs never share state.
    ``drifted`` is the text feature; ``max_evals`` defaults to the trainer's ``default_max_evals``
    (what the monitor's retraining request will get).

    Raises:
        SettingsError: a ``GYRE_MONITOR_*`` or ``GYRE_TRAINER_*`` variable does not parse.
    """
    specs = {spec.name: spec for spec in discover_services()}
    monitor: Any = load_settings(specs["monitor"].settings)
    trainer: Any = load_settings(specs["trainer"].settings)
    suffix = uuid.uuid4().hex[:6]
    return Plan(model=f"topics_{suffix}", feature_view=f"news_{suffix}", window_rows=monitor.window_size,
                drifted=(TEXT_FEATURE,), max_evals=max_evals or trainer.default_max_evals, deadline_s=deadline_s,
                experiment_prefix=trainer.experiment_prefix)
