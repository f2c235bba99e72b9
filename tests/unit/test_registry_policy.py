"""The promotion policy (gyre_registry.domain.policy): a pure function, every rule."""

from __future__ import annotations

import math

import pytest

from gyre_registry.domain.policy import Contender, Evaluation, Outcome, decide_promotion

HOLDOUT = "a" * 64
OTHER_HOLDOUT = "b" * 64


def version(number: int, value: float | None, *, metric: str = "holdout_accuracy", holdout: str = HOLDOUT,
            lower: bool = False, named_metric: str | None = None) -> Contender:
    metrics = {} if value is None else {metric: value}
    name = metric if named_metric is None else named_metric
    return Contender(number, metrics, Evaluation(name, lower, holdout))


def decide(candidate: Contender, champion: Contender | None):  # type: ignore[no-untyped-def]
    return decide_promotion(candidate, champion, champion_alias="production", challenger_alias="challenger")


def test_first_version_is_promoted_even_without_metrics() -> None:
    decision = decide(Contender(1), None)
    assert decision.outcome is Outcome.PROMOTED
    assert decision.alias == "production"
    assert "production" in decision.reason


def test_better_version_is_promoted_and_reason_names_the_numbers() -> None:
    decision = decide(version(2, 0.91), version(1, 0.88))
    assert decision.outcome is Outcome.PROMOTED
    assert decision.alias == "production"
    assert "holdout_accuracy 0.91 >= 0.88" in decision.reason
    assert "v1" in decision.reason


def test_tie_is_promoted() -> None:
    assert decide(version(2, 0.88), version(1, 0.88)).outcome is Outcome.PROMOTED


def test_worse_version_moves_no_alias() -> None:
    decision = decide(version(3, 0.80), version(2, 0.91))
    assert decision.outcome is Outcome.NOT_PROMOTED
    assert decision.alias is None
    assert "0.8 < 0.91" in decision.reason


@pytest.mark.parametrize(("new", "old", "outcome"), [
    (0.30, 0.40, Outcome.PROMOTED),      # lower rmse is better
    (0.40, 0.40, Outcome.PROMOTED),
    (0.50, 0.40, Outcome.NOT_PROMOTED),
])
def test_lower_is_better_metrics(new: float, old: float, outcome: Outcome) -> None:
    decision = decide(version(2, new, metric="rmse", lower=True), version(1, old, metric="rmse", lower=True))
    assert decision.outcome is outcome


def test_different_holdouts_make_a_challenger_and_say_why() -> None:
    decision = decide(version(2, 0.99, holdout=OTHER_HOLDOUT), version(1, 0.50))
    assert decision.outcome is Outcome.CHALLENGER
    assert decision.alias == "challenger"
    assert "holdouts differ" in decision.reason


@pytest.mark.parametrize(("candidate", "champion", "why"), [
    (Contender(2, {"holdout_accuracy": 0.9}), version(1, 0.8), "names no primary metric"),
    (version(2, 0.9, holdout=""), version(1, 0.8), "holdout of the new version is unknown"),
    (version(2, 0.9), version(1, 0.8, holdout=""), "holdout of the champion v1 is unknown"),
    (version(2, 0.9), version(1, None), "champion v1 has no value for holdout_accuracy"),
    (version(2, 0.9), version(1, 0.8, metric="roc_auc"), "ranks by roc_auc"),
    (version(2, 0.9, lower=True), version(1, 0.8), "disagree on whether lower"),
    (version(2, 0.9), version(1, math.nan), "has no value"),
    (version(2, None, named_metric="holdout_accuracy"), version(1, 0.8), "new version has no value"),
])
def test_incomparable_versions_become_challenger(candidate: Contender, champion: Contender, why: str) -> None:
    decision = decide(candidate, champion)
    assert decision.outcome is Outcome.CHALLENGER
    assert decision.alias == "challenger"
    assert why in decision.reason


def test_champion_without_named_metric_but_with_value_is_comparable() -> None:
    # A champion registered before evaluations existed: same holdout and a value for the metric.
    champion = Contender(1, {"holdout_accuracy": 0.8}, Evaluation("", False, HOLDOUT))
    assert decide(version(2, 0.9), champion).outcome is Outcome.PROMOTED


def test_retrains_on_newer_windows_compare_through_the_trainers_holdout_definition() -> None:
    # The trainer's holdout is an entity-hash rule: its holdout_id names the rule, fraction, feature
    # view and label, not the data, so v2 trained on a newer window is compared with v1 (each scored
    # on the held-out entities of its own window), while a change of definition is not compared.
    from gyre_trainer.domain.holdout import holdout_id  # only to show the ids the trainer sends

    rule = holdout_id(feature_view="customers", label="churned", fraction=0.2)
    v1 = version(1, 0.90, metric="holdout_roc_auc", holdout=rule)
    assert decide(version(2, 0.93, metric="holdout_roc_auc", holdout=rule), v1).outcome is Outcome.PROMOTED
    assert decide(version(2, 0.80, metric="holdout_roc_auc", holdout=rule), v1).outcome is Outcome.NOT_PROMOTED
    wider = holdout_id(feature_view="customers", label="churned", fraction=0.3)
    assert decide(version(2, 0.99, metric="holdout_roc_auc", holdout=wider), v1).outcome is Outcome.CHALLENGER


def rescored(number: int, value: float, champion_version: int, champion_score: float, *,
             holdout: str = OTHER_HOLDOUT) -> Contender:
    """A candidate that carries the champion's score on the candidate's own holdout rows."""
    return Contender(number, {"holdout_accuracy": value},
                     Evaluation("holdout_accuracy", False, holdout, champion_version, champion_score))


def test_champion_rescored_on_the_candidates_holdout_is_compared_on_those_rows() -> None:
    # Different holdout ids (new window), but the trainer scored the champion on the new rows.
    decision = decide(rescored(2, 0.90, champion_version=1, champion_score=0.85), version(1, 0.97))
    assert decision.outcome is Outcome.PROMOTED
    assert "holdout_accuracy 0.9 >= 0.85" in decision.reason
    assert "same rows" in decision.reason


def test_champion_rescored_better_on_the_same_rows_keeps_its_alias() -> None:
    decision = decide(rescored(2, 0.80, champion_version=1, champion_score=0.85), version(1, 0.70))
    assert decision.outcome is Outcome.NOT_PROMOTED
    assert decision.alias is None


def test_rescore_of_a_former_champion_is_ignored() -> None:
    # The candidate re-scored v1, but v3 holds the alias by now: fall back to the own-holdout rule.
    decision = decide(rescored(4, 0.99, champion_version=1, champion_score=0.10), version(3, 0.90))
    assert decision.outcome is Outcome.CHALLENGER
    assert "holdouts differ" in decision.reason
