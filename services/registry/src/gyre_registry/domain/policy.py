"""The promotion policy: should a new version replace the champion? A pure function.

Rules, in order (``champion`` is the version the champion alias points at):

1. No champion yet (e.g. the model's first version): promote.
2. The caller re-scored the current champion on the new version's holdout rows
   (``champion_version`` names the champion, ``champion_score`` its primary metric there): the two
   are compared on those same rows, rule 4 below.
3. Otherwise the two versions must be comparable on their own evaluations. They are not when the
   new one has no primary metric, the champion has no value for it, they rank by different metrics
   or directions, or their holdout ids differ or are unknown: then make the new version the
   challenger, and say why.
4. The new version's primary metric is at least as good as the champion's (``>=``, or ``<=`` when
   lower is better): promote. Ties promote, so a retrained model on fresher data takes over.
5. Otherwise: no alias moves.
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
        champion_version: the champion the caller re-scored on this version's holdout (0: none).
        champion_score: that champion's primary metric on this version's holdout rows.
    """

    primary_metric: str = ""
    lower_is_better: bool = False
    holdout_id: str = ""
    champion_version: int = 0
    champion_score: float | None = None


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


def _rescored_champion(candidate: Contender, champion: Contender) -> bool:
    """Whether the candidate carries the current champion's score on the candidate's own holdout rows."""
    new = candidate.evaluation
    score = new.champion_score
    return (bool(new.primary_metric) and new.champion_version == champion.version
            and score is not None and not math.isnan(score)
            and new.primary_metric in candidate.metrics and not math.isnan(candidate.metrics[new.primary_metric]))


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
    metric = candidate.evaluation.primary_metric
    lower = candidate.evaluation.lower_is_better
    holdout = _short(candidate.evaluation.holdout_id)
    if _rescored_champion(candidate, champion):
        new_value, old_value = candidate.metrics[metric], float(candidate.evaluation.champion_score or 0.0)
        where = f"on the new version's holdout {holdout} (the champion re-scored on the same rows)"
    else:
        why_not = _incomparable(candidate, champion)
        if why_not is not None:
            return Decision(Outcome.CHALLENGER, challenger_alias, f"not compared with the champion: {why_not}")
        new_value, old_value = candidate.metrics[metric], champion.metrics[metric]
        where = f"on holdout {holdout}"
    better_or_equal = new_value <= old_value if lower else new_value >= old_value
    relation = ("<=" if lower else ">=") if better_or_equal else (">" if lower else "<")
    comparison = f"{metric} {_fmt(new_value)} {relation} {_fmt(old_value)} of the champion v{champion.version} {where}"
    if better_or_equal:
        return Decision(Outcome.PROMOTED, champion_alias, comparison)
    return Decision(Outcome.NOT_PROMOTED, None, comparison + f"{' (lower is better)' if lower else ''}")
