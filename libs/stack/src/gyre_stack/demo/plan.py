"""What the story does: names, sizes of the traffic, trials, deadlines; fitted to a stack's settings."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gyre_common.service import discover_services
from gyre_common.settings import load_settings
from gyre_stack.demo.data import drifted_features


@dataclass(frozen=True)
class Plan:
    """What the loop does: names, window of the training data, sizes of the traffic.

    Attributes:
        model: registered model name (unique per run, so runs never share state).
        feature_view: feature view the rows go to.
        window_rows: predictions per monitor window (the monitor's ``window_size``).
        drifted: features shifted by ``SHIFT_STD`` standard deviations in the drifted traffic.
        max_evals: trials of the first training (the retraining uses the trainer's default, so
            give the same number to get the same search on the same data).
        drift_windows: windows of drifted traffic sent (more than one shows the debounce).
        deadline_s: longest wait for any one step, in seconds.
        experiment_prefix: the trainer's tracking experiment prefix (its ``experiment_prefix`` setting).
    """

    model: str
    feature_view: str
    window_rows: int
    drifted: tuple[str, ...]
    max_evals: int
    drift_windows: int = 2
    deadline_s: float = 120.0
    experiment_prefix: str = "gyre/"


def demo_plan(names: Sequence[str], deadline_s: float = Plan.deadline_s) -> Plan:
    """A plan fitted to the running stack's monitor and trainer settings (read from this environment),
    with new names (``cancer_<hex>``, ``breast_cancer_<hex>``) so that runs never share state.

    Raises:
        SettingsError: a ``GYRE_MONITOR_*`` or ``GYRE_TRAINER_*`` variable does not parse.
    """
    # Through the services' specs, as the stack itself reads them (no import of a service package).
    specs = {spec.name: spec for spec in discover_services()}
    monitor: Any = load_settings(specs["monitor"].settings)
    trainer: Any = load_settings(specs["trainer"].settings)
    suffix = uuid.uuid4().hex[:6]
    return Plan(model=f"cancer_{suffix}", feature_view=f"breast_cancer_{suffix}", window_rows=monitor.window_size,
                drifted=drifted_features(monitor.drift_share, names), max_evals=trainer.default_max_evals,
                deadline_s=deadline_s, experiment_prefix=trainer.experiment_prefix)
