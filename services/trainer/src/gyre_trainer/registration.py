"""Pure builders of what a training job records: the tags of its tracking runs, the lineage and the
registration request of the version it trained.

No I/O here: :class:`~gyre_trainer.runner.JobRunner` gathers the facts (a :class:`Candidate`,
and the champion scored on the same holdout) and hands the results to tracking and the registry.
Tag names are part of what operators and the dashboard read: change them with care.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from gyre_common.artifacts import ArtifactRef
from gyre_common.models import SKOPS_FORMAT, TRUSTED_SKOPS_TYPES
from gyre_trainer import __version__
from gyre_trainer.domain.backends import SKLEARN
from gyre_trainer.domain.dataset import TrainingSet
from gyre_trainer.domain.holdout import HOLDOUT_RULE, HoldoutSplit
from gyre_trainer.domain.jobs import Job
from gyre_trainer.domain.search import SearchConfig, TrialResult, params_as_strings
from gyre_trainer.domain.signature import Signature
from gyre_trainer.domain.task import LOWER_IS_BETTER, Task
from gyre_trainer.ports import HoldoutEvaluation, Lineage, Registration

CODE_VERSION = f"gyre-trainer=={__version__}"
"""Lineage.code_version of every model this package trains."""


@dataclass
class Champion:
    """The alias holder scored on a job's holdout rows; ``metrics`` is empty (and ``note`` says why)
    when it could not be scored."""

    version: int
    metrics: dict[str, float]
    note: str = ""


@dataclass(frozen=True)
class Candidate:
    """What one job produced before registration.

    Attributes:
        data: the whole training set (development and holdout rows).
        window_start, window_end: the window the training set was built over (UTC; None: unbounded).
        parent_run_id, experiment_id: the tracking run of the whole search.
        best_run_id: the tracking run of the best trial.
        holdout_metrics: the refitted best model on the holdout, by metric name without prefix.
        profile: the reference profile's artifact (None when the inputs allow none) and its format.
        backend: the backend that trained it (``sklearn``, ``torch-text``).
        artifact_format: the registry's format of ``artifact``.
        summary: a few words naming the model (the description starts with them); "" for a
            scikit-learn model means its family.
        backend_tags: the backend's own tags (e.g. trusted skops types, the text feature).
    """

    job: Job
    task: Task
    config: SearchConfig
    data: TrainingSet
    split: HoldoutSplit
    window_start: datetime | None
    window_end: datetime | None
    dataset_fingerprint: str
    parent_run_id: str
    experiment_id: str
    best: TrialResult
    best_run_id: str
    holdout_metrics: dict[str, float]
    artifact: ArtifactRef
    signature: Signature
    profile: ArtifactRef | None = None
    profile_format: str = ""
    backend: str = SKLEARN
    artifact_format: str = SKOPS_FORMAT
    summary: str = ""
    backend_tags: dict[str, str] | None = None

    @property
    def hyperparameters(self) -> dict[str, str]:
        """The best trial's point of the space, as strings."""
        return params_as_strings(self.best.params)


def experiment_name(prefix: str, model_name: str) -> str:
    """The tracking experiment of a model's searches, e.g. ``gyre/cancer``."""
    return f"{prefix}{model_name}"


def search_run_name(job: Job) -> str:
    """The name of a job attempt's parent run (model, job id prefix, attempt)."""
    return f"{job.model_name}-search-{job.job_id[:8]}-{job.attempts}"


def search_run_tags(job: Job, *, dataset_fingerprint: str, task: Task, objective: str,
                    backend: str = SKLEARN) -> dict[str, str]:
    """Tags of the parent run when the search starts."""
    return {"gyre.job_id": job.job_id, "gyre.training_request_id": job.request_id,
            "gyre.feature_view": job.request.feature_view, "gyre.dataset_fingerprint": dataset_fingerprint,
            "gyre.task": task.value, "gyre.objective_metric": objective, "gyre.backend": backend}


def trial_run_tags(job: Job, *, parent_run_id: str, trial_number: int) -> dict[str, str]:
    """Tags of one trial's child run (MLflow nests it under the parent)."""
    return {"mlflow.parentRunId": parent_run_id, "gyre.job_id": job.job_id, "gyre.trial": str(trial_number)}


def search_result_tags(artifact: ArtifactRef, best: TrialResult) -> dict[str, str]:
    """Tags of the parent run when the search succeeded: the artifact and the winning trial."""
    return {"gyre.artifact.uri": artifact.uri, "gyre.artifact.sha256": artifact.sha256,
            "gyre.best_trial": str(best.number)}


def model_tags(candidate: Candidate, champion: Champion | None) -> dict[str, str]:
    """The version's tags: backend, search, holdout definition, the backend's own (trusted skops
    types; text feature and encoder), runs, classes, champion. ``gyre.backend`` (and
    ``gyre.text_feature``) let a retraining request without a backend keep the model's kind."""
    config, split = candidate.config, candidate.split
    backend_tags = candidate.backend_tags
    if backend_tags is None:  # a Candidate built without a backend: scikit-learn's
        backend_tags = {"gyre.skops.trusted_types": ",".join(TRUSTED_SKOPS_TYPES)}
    tags = {
        "gyre.backend": candidate.backend,
        "gyre.task": candidate.task.value,
        "gyre.objective_metric": config.objective,
        "gyre.search.max_evals": str(config.max_evals),
        "gyre.search.families": ",".join(config.families),
        "gyre.search.seed": str(config.seed),
        "gyre.holdout.rule": HOLDOUT_RULE,
        "gyre.holdout.fraction": repr(split.fraction),
        "gyre.holdout.id": split.holdout_id,
        "gyre.holdout.rows": str(split.holdout.rows),
        "gyre.holdout.digest": split.rows_digest,
        **backend_tags,
        "gyre.parent_run_id": candidate.parent_run_id,
        "gyre.job_id": candidate.job.job_id,
    }
    if candidate.signature.classes:
        tags["gyre.classes"] = json.dumps(list(candidate.signature.classes))
    if candidate.data.source_fingerprint:
        tags["gyre.features.fingerprint"] = candidate.data.source_fingerprint
    if champion is not None:
        tags["gyre.champion.version"] = str(champion.version)
        tags.update({f"gyre.champion.{k}": repr(v) for k, v in champion.metrics.items()})
    return tags


def lineage_of(candidate: Candidate) -> Lineage:
    """Where the version came from: request, feature view and window, dataset, runs, metrics."""
    request = candidate.job.request
    return Lineage(
        training_request_id=candidate.job.request_id,
        feature_views=(request.feature_view,),
        window_start=candidate.window_start,
        window_end=candidate.window_end,
        dataset_fingerprint=candidate.dataset_fingerprint,
        run_id=candidate.best_run_id,
        experiment_id=candidate.experiment_id,
        hyperparameters=candidate.hyperparameters,
        metrics={f"holdout_{name}": value for name, value in candidate.holdout_metrics.items()},
        code_version=CODE_VERSION,
        label=request.label,
        training_rows=candidate.data.rows,
        reference_profile=candidate.profile,
        reference_profile_format=candidate.profile_format if candidate.profile is not None else "",
    )


def holdout_evaluation(candidate: Candidate, champion: Champion | None) -> HoldoutEvaluation:
    """What the registry's policy compares; the champion's score on these same holdout rows when known."""
    objective = candidate.config.objective
    scored = champion is not None and objective in champion.metrics
    return HoldoutEvaluation(
        primary_metric=f"holdout_{objective}",
        lower_is_better=objective in LOWER_IS_BETTER,
        holdout_id=candidate.split.holdout_id,
        # The production model scored on these same holdout rows: the registry's policy compares
        # the two on identical data, whatever window each was trained on.
        champion_version=champion.version if scored and champion is not None else 0,
        champion_score=champion.metrics[objective] if scored and champion is not None else None,
    )


def registration_for(candidate: Candidate, champion: Champion | None) -> Registration:
    """The CreateModelVersion request of ``candidate``, idempotent on the training request id."""
    job = candidate.job
    return Registration(
        model_name=job.model_name,
        artifact=candidate.artifact,
        artifact_format=candidate.artifact_format,
        signature=candidate.signature,
        lineage=lineage_of(candidate),
        description=(f"{candidate.summary or candidate.best.params['family']} from training request {job.request_id} "
                     f"(TRAINING_REASON_{job.request.reason.name})"),
        tags=model_tags(candidate, champion),
        idempotency_key=job.request_id,
        evaluation=holdout_evaluation(candidate, champion),
        # No alias asked for: register only. Otherwise the registry's policy decides (its champion
        # alias, `production` by default); the trainer never moves an alias itself.
        skip_promotion=not job.request.promote_to_alias,
    )

