"""The promotion policy: should a new version replace the champion? A pure function.

Rules, in order (``champion`` is the version the champion alias points at):

1. No champion yet (e.g. the model's first version): promote.
2. The two versions are not comparable: the new one has no primary metric, the champion has no
   value for it, they rank by different metrics or directions, or their holdout ids differ or are
   unknown. Then make the new version the challenger, and say why.
3. The new version's primary metric is at least as good as the champion's (``>=``, or ``<=`` when
   lower is better): promote. Ties promote, so a retrained model on fresher data takes over.
4. Otherwise: no alias moves.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Evaluation:
    """How a version scored on its holdout (mirrors ``gyre.registry.v1.HoldoutEvaluation``).

    Attributes:
        primary_metric: key of ``metrics`` that ranks versions; empty: not comparable.
        lower_is_better: True for losses and errors (rmse), False for scores (accuracy).
        holdout_id: id of the holdout rows the metrics were measured on; empty: unknown.
    """

    primary_metric: str = ""
    lower_is_better: bool = False
    holdout_id: str = ""


@dataclass(frozen=True)
class Contender:
    """A version as the policy sees it: its number, holdout metrics and evaluation."""

    version: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    evaluation: Evaluation = field(default_factory=Evaluation)


class Outcome(enum.Enum):
    """What the policy decided (values match ``gyre.registry.v1.PromotionOutcome`` names)."""

    PROMOTED = "promoted"
    CHALLENGER = "challenger"
    NOT_PROMOTED = "not_promoted"


@dataclass(frozen=True)
class Decision:
    """The policy's answer.

    Attributes:
        outcome: promote, make challenger, or leave the aliases alone.
        alias: the alias to point at the candidate; None when nothing moves.
        reason: one sentence for the audit log and the RegistryEvent comment.
    """

    outcome: Outcome
    alias: str | None
    reason: str


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _short(holdout_id: str) -> str:
    return holdout_id if len(holdout_id) <= 16 else holdout_id[:12] + "..."


def _incomparable(candidate: Contender, champion: Contender) -> str | None:
    """Why the two cannot be ranked, or None when they can."""
    new, old = candidate.evaluation, champion.evaluation
    champ = f"the champion v{champion.version}"
    if not new.primary_metric:
        return "the new version names no primary metric"
    if new.primary_metric not in candidate.metrics or math.isnan(candidate.metrics[new.primary_metric]):
        return f"the new version has no value for {new.primary_metric}"
    if old.primary_metric and old.primary_metric != new.primary_metric:
        return f"{champ} ranks by {old.primary_metric}, the new version by {new.primary_metric}"
    if old.primary_metric and old.lower_is_better != new.lower_is_better:
        return f"{champ} and the new version disagree on whether lower {new.primary_metric} is better"
    if new.primary_metric not in champion.metrics or math.isnan(champion.metrics[new.primary_metric]):
        return f"{champ} has no value for {new.primary_metric}"
    if not new.holdout_id or not old.holdout_id:
        return f"the holdout of {'the new version' if not new.holdout_id else champ} is unknown"
    if new.holdout_id != old.holdout_id:
        return (f"holdouts differ: the new version was measured on {_short(new.holdout_id)}, "
                f"{champ} on {_short(old.holdout_id)}")
    return None


def decide_promotion(candidate: Contender, champion: Contender | None, *,
                     champion_alias: str, challenger_alias: str) -> Decision:
    """Decide what the new version ``candidate`` becomes (see the module docstring for the rules).

    Args:
        candidate: the version just registered.
        champion: the version ``champion_alias`` points at, or None when it points nowhere.
        champion_alias: e.g. ``"production"``.
        challenger_alias: e.g. ``"challenger"``.
    """
    if champion is None:
        return Decision(Outcome.PROMOTED, champion_alias,
                        f"no version holds {champion_alias!r} yet: the first comparable version takes it")
    why_not = _incomparable(candidate, champion)
    if why_not is not None:
        return Decision(Outcome.CHALLENGER, challenger_alias, f"not compared with the champion: {why_not}")
    metric = candidate.evaluation.primary_metric
    lower = candidate.evaluation.lower_is_better
    new_value, old_value = candidate.metrics[metric], champion.metrics[metric]
    better_or_equal = new_value <= old_value if lower else new_value >= old_value
    relation = ("<=" if lower else ">=") if better_or_equal else (">" if lower else "<")
    holdout = _short(candidate.evaluation.holdout_id)
    comparison = (f"{metric} {_fmt(new_value)} {relation} {_fmt(old_value)} of the champion "
                  f"v{champion.version} on holdout {holdout}")
    if better_or_equal:
        return Decision(Outcome.PROMOTED, champion_alias, comparison)
    return Decision(Outcome.NOT_PROMOTED, None, comparison + f"{' (lower is better)' if lower else ''}")
