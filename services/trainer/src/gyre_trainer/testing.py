"""In-memory stand-ins for the trainer's dependencies, for tests and local experiments.

They implement the ports of :mod:`gyre_trainer.ports` faithfully enough that the service layer
cannot tell: idempotent registration on the key, aliases, runs with params/metrics/tags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer

from gyre_common.artifacts import ArtifactRef, ArtifactStore
from gyre_common.profile import ReferenceProfile
from gyre_trainer.adapters.profiles import ArtifactProfileSink
from gyre_trainer.domain.dataset import TrainingSet
from gyre_trainer.domain.search import TrialResult, params_as_strings
from gyre_trainer.ports import (
    DependencyRejected,
    DependencyUnavailable,
    LoadedTrainingSet,
    ModelRegistryClient,
    ProfileSink,
    Promotion,
    RegisteredNew,
    RegisteredVersion,
    Registration,
    RunLogger,
    SearchRun,
    TrainingDataSource,
)

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def breast_cancer_training_set(label: str = "diagnosis") -> TrainingSet:
    """scikit-learn's breast cancer data (569 rows, 30 float features, labels "malignant"/"benign"),
    one row per patient ``p0000``..., event times one hour apart from 2026-01-01 UTC."""
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame
    features = frame.drop(columns=["target"])
    features.columns = [str(c).replace(" ", "_") for c in features.columns]
    names = [str(n) for n in bunch.target_names]
    labels = frame["target"].map(lambda i: names[int(i)]).astype("object").rename(label)
    rows = len(frame)
    return TrainingSet(
        features=features.reset_index(drop=True),
        label=labels.reset_index(drop=True),
        entity_ids=pd.Series([f"p{i:04d}" for i in range(rows)], dtype="object"),
        event_times=pd.Series([EPOCH + timedelta(hours=i) for i in range(rows)]),
    )


_TOPICS = {
    "sport": (["the match", "our striker", "the referee", "the final whistle", "the goalkeeper", "the league",
               "the coach", "the penalty kick", "the stadium crowd", "the away team"],
              ["scored twice in extra time", "was sent off after a foul", "saved a late penalty",
               "won the championship again", "trained hard before the derby", "lost on the last lap",
               "celebrated the victory with the fans", "signed a new contract with the club"]),
    "cooking": (["the soup", "my grandmother's recipe", "the sourdough bread", "this curry", "the chocolate cake",
                 "the roasted vegetables", "the pasta sauce", "the oven", "a pinch of salt", "the frying pan"],
                ["needs more garlic and fresh basil", "was baked for forty minutes", "simmered slowly all afternoon",
                 "tasted sweet with a hint of cinnamon", "burned because the heat was too high",
                 "was served warm with butter", "goes well with grated parmesan", "rose beautifully overnight"]),
}


def topic_texts(rows: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``rows`` short generated texts about two clearly separable topics (``sport``, ``cooking``),
    alternating, and their topics. Deterministic for a seed; nothing is downloaded."""
    rng = np.random.default_rng(seed)
    texts, topics = [], []
    names = sorted(_TOPICS)
    for i in range(rows):
        topic = names[i % len(names)]
        subjects, predicates = _TOPICS[topic]
        text = f"{subjects[rng.integers(len(subjects))]} {predicates[rng.integers(len(predicates))]}"
        texts.append(text[0].upper() + text[1:] + ".")
        topics.append(topic)
    return texts, topics


def topic_training_set(rows: int = 48, seed: int = 0, *, text: str = "review", label: str = "topic") -> TrainingSet:
    """A text-classification training set from :func:`topic_texts`: the text feature ``text``, a
    numeric feature ``stars`` (noise the text model ignores), the label ``label``; one row per
    entity ``r0000``..., one hour apart from 2026-01-01 UTC."""
    texts, topics = topic_texts(rows, seed)
    stars = np.random.default_rng(seed + 1).integers(1, 6, size=rows)
    return TrainingSet(
        features=pd.DataFrame({text: pd.Series(texts, dtype="object"), "stars": stars.astype("int64")}),
        label=pd.Series(topics, dtype="object", name=label),
        entity_ids=pd.Series([f"r{i:04d}" for i in range(rows)], dtype="object"),
        event_times=pd.Series([EPOCH + timedelta(hours=i) for i in range(rows)]),
    )


class FakeTrainingDataSource(TrainingDataSource):
    """Serves fixed training sets by feature view; rows are filtered by the window.

    ``unavailable`` makes the next N calls raise :class:`DependencyUnavailable`.
    """

    def __init__(self, views: Mapping[str, TrainingSet]) -> None:
        self.views = dict(views)
        self.calls: list[tuple[str, str, datetime | None, datetime | None]] = []
        self.unavailable = 0

    async def training_set(self, feature_view: str, label: str, window_start: datetime | None,
                           window_end: datetime | None) -> LoadedTrainingSet:
        self.calls.append((feature_view, label, window_start, window_end))
        if self.unavailable > 0:
            self.unavailable -= 1
            raise DependencyUnavailable("features: UNAVAILABLE (fake)")
        data = self.views.get(feature_view)
        if data is None:
            raise DependencyRejected(f"features BuildTrainingSet: NOT_FOUND: no feature view {feature_view!r}")
        if str(data.label.name) != label:
            raise DependencyRejected(f"features BuildTrainingSet: INVALID_ARGUMENT: no feature {label!r}")
        keep = pd.Series(True, index=data.event_times.index)
        if window_start is not None:
            keep &= data.event_times >= pd.Timestamp(window_start)
        if window_end is not None:
            keep &= data.event_times < pd.Timestamp(window_end)
        subset = data.take(np.flatnonzero(keep.to_numpy()))
        return LoadedTrainingSet(subset, window_start, window_end)


@dataclass
class FakeRun:
    """A run as the fake tracking service keeps it."""

    run_id: str
    experiment_id: str
    name: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    status: str = "RUNNING"


class FakeRunLogger(RunLogger):
    """Keeps experiments and runs in dicts, with MLflow's write-once params."""

    def __init__(self) -> None:
        self.experiments: dict[str, str] = {}
        self.runs: dict[str, FakeRun] = {}

    def _metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        for key, value in metrics.items():
            self.runs[run_id].metrics.setdefault(key, []).append((step, float(value)))

    async def start_search(self, *, experiment: str, run_id: str, run_name: str,
                           tags: Mapping[str, str]) -> SearchRun:
        experiment_id = self.experiments.setdefault(experiment, str(len(self.experiments) + 1))
        self.runs.setdefault(run_id, FakeRun(run_id, experiment_id, run_name, dict(tags)))
        return SearchRun(experiment_id, run_id)

    async def log_trial(self, search: SearchRun, *, run_id: str, trial: TrialResult,
                        tags: Mapping[str, str]) -> str:
        run = self.runs.setdefault(run_id, FakeRun(run_id, search.experiment_id, f"trial-{trial.number}", dict(tags)))
        for key, value in params_as_strings(trial.params).items():
            if run.params.get(key, value) != value:
                raise DependencyRejected(f"param {key} already has another value")
            run.params[key] = value
        curves = {name for epoch in trial.history for name in epoch.metrics}
        self._metrics(run_id, {f"val_{k}": v for k, v in trial.metrics.items() if f"val_{k}" not in curves})
        for epoch in trial.history:  # learning curves: metric history, step = epoch
            self._metrics(run_id, epoch.metrics, step=epoch.epoch)
        if trial.error:
            run.tags["gyre.error"] = trial.error
        run.status = "FINISHED" if trial.ok else "FAILED"
        return run_id

    async def finish_search(self, search: SearchRun, *, succeeded: bool, best_run_id: str,
                            metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
        parent = self.runs[search.run_id]
        self._metrics(search.run_id, {f"holdout_{k}": v for k, v in metrics.items()})
        parent.tags.update(tags)
        if best_run_id:
            parent.tags["gyre.best_run_id"] = best_run_id
        parent.status = "FINISHED" if succeeded else "FAILED"

    def children(self, parent_run_id: str) -> list[FakeRun]:
        """Trial runs of a search, in creation order."""
        return [run for run in self.runs.values() if run.tags.get("mlflow.parentRunId") == parent_run_id]


class FakeModelRegistry(ModelRegistryClient):
    """Versions numbered per model, idempotent on the key, with the registry's promotion policy
    (``gyre_registry.domain.policy``, restated: services do not import each other): the first
    version takes ``champion_alias``; a later one takes it when its primary metric is at least as
    good as the champion's on the same holdout id, else (not comparable) ``challenger_alias``."""

    def __init__(self, champion_alias: str = "production", challenger_alias: str = "challenger") -> None:
        self.versions: dict[str, list[Registration]] = {}
        self.aliases: dict[tuple[str, str], int] = {}
        self.keys: dict[str, tuple[str, RegisteredNew]] = {}
        self.champion_alias = champion_alias
        self.challenger_alias = challenger_alias
        self.unavailable = 0

    async def register(self, registration: Registration) -> RegisteredNew:
        if self.unavailable > 0:
            self.unavailable -= 1
            raise DependencyUnavailable("registry: UNAVAILABLE (fake)")
        if registration.idempotency_key in self.keys:
            return self.keys[registration.idempotency_key][1]
        versions = self.versions.setdefault(registration.model_name, [])
        versions.append(registration)
        version = len(versions)
        result = RegisteredNew(version, self._promote(registration, version))
        self.keys[registration.idempotency_key] = (registration.model_name, result)
        return result

    def _promote(self, candidate: Registration, version: int) -> Promotion:
        name = candidate.model_name
        champion_version = self.aliases.get((name, self.champion_alias), 0)
        if candidate.skip_promotion:
            return Promotion("skipped", champion_version=champion_version)
        if not champion_version:
            self.aliases[(name, self.champion_alias)] = version
            return Promotion("promoted", self.champion_alias, 0, "first version")
        champion = self.registration(name, champion_version)
        new, old = candidate.evaluation, champion.evaluation
        metric = new.primary_metric if new is not None else ""
        if (new is not None and new.champion_version == champion_version and new.champion_score is not None
                and metric in candidate.lineage.metrics):
            # The champion re-scored on the candidate's holdout rows: compare on those same rows.
            ours, theirs = candidate.lineage.metrics[metric], new.champion_score
            if (ours <= theirs) if new.lower_is_better else (ours >= theirs):
                self.aliases[(name, self.champion_alias)] = version
                return Promotion("promoted", self.champion_alias, champion_version, f"{metric} {ours} vs {theirs}")
            return Promotion("not_promoted", "", champion_version, f"{metric} {ours} vs {theirs}")
        if (new is None or old is None or old.primary_metric != metric or old.lower_is_better != new.lower_is_better
                or not new.holdout_id or new.holdout_id != old.holdout_id
                or metric not in candidate.lineage.metrics or metric not in champion.lineage.metrics):
            self.aliases[(name, self.challenger_alias)] = version
            return Promotion("challenger", self.challenger_alias, champion_version, "not comparable")
        ours, theirs = candidate.lineage.metrics[metric], champion.lineage.metrics[metric]
        if (ours <= theirs) if new.lower_is_better else (ours >= theirs):
            self.aliases[(name, self.champion_alias)] = version
            return Promotion("promoted", self.champion_alias, champion_version, f"{metric} {ours} vs {theirs}")
        return Promotion("not_promoted", "", champion_version, f"{metric} {ours} vs {theirs}")

    async def version_by_alias(self, model_name: str, alias: str) -> RegisteredVersion | None:
        version = self.aliases.get((model_name, alias))
        if version is None:
            return None
        registration = self.versions[model_name][version - 1]
        return RegisteredVersion(model_name, version, registration.artifact,
                                 tuple(t.name for t in registration.signature.inputs), dict(registration.tags),
                                 registration.artifact_format)

    def registration(self, model_name: str, version: int) -> Registration:
        """What was registered as ``model_name`` version ``version``."""
        return self.versions[model_name][version - 1]


class StoreProfileSink(ProfileSink):
    """Writes profiles to an artifact store as the real sink does, and keeps them for inspection."""

    format = ArtifactProfileSink.format

    def __init__(self, artifacts: ArtifactStore) -> None:
        self._real = ArtifactProfileSink(artifacts)
        self.saved: list[ReferenceProfile] = []

    async def save(self, profile: ReferenceProfile) -> ArtifactRef:
        self.saved.append(profile)
        return await self._real.save(profile)
