"""Runs one training job end to end, in named steps.

:meth:`JobRunner.run` takes a claimed job through: load the training set and plan the search
(:meth:`~JobRunner._prepare`), start the tracked parent run, search (each trial a child run),
build the model (refit, holdout metrics, artifact checked loadable, signature, reference profile),
score the production model on the same holdout (for the record), register the version with its
lineage (the registry's policy decides any promotion), and finish the job with its events. What
is recorded is built by the pure functions of :mod:`gyre_trainer.registration`.

What a trial, a model and an artifact are is the job's backend's business (scikit-learn or
torch-text, :mod:`gyre_trainer.domain.backends`); the steps above are the same for every backend.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, replace
from datetime import datetime

import pandas as pd

from gyre_common.artifacts import ArtifactRef, ArtifactStore
from gyre_common.models import UntrustedArtifactError
from gyre_common.profile import ProfileError
from gyre_trainer import training_events as events
from gyre_trainer.domain.backends import SKLEARN, TrainerBackend, backend_for, backend_for_format
from gyre_trainer.domain.dataset import DatasetError, TrainingSet, fingerprint
from gyre_trainer.domain.holdout import HoldoutSplit, split_holdout
from gyre_trainer.domain.jobs import InvalidRequest, Job, JobStatus, TrainingPolicy, TrainingRequest, derived_id
from gyre_trainer.domain.search import (
    SearchCancelled,
    SearchConfig,
    SearchFailed,
    SearchOutcome,
    TrialResult,
    run_search,
)
from gyre_trainer.domain.task import Task, check_objective, infer_task
from gyre_trainer.ports import (
    DependencyRejected,
    DependencyUnavailable,
    ModelRegistryClient,
    ProfileSink,
    RegisteredNew,
    RunLogger,
    SearchRun,
    TrainingDataSource,
)
from gyre_trainer.registration import (
    Candidate,
    Champion,
    experiment_name,
    registration_for,
    search_result_tags,
    search_run_name,
    search_run_tags,
    trial_run_tags,
)
from gyre_trainer.store import JobStore

log = logging.getLogger(__name__)


class CancelToken:
    """Tells a running job to stop at its next trial, and why ("cancelled", "shutdown", "lease lost")."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        """Ask the job to stop (the first reason wins)."""
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        """Whether a stop was asked for (safe from any thread)."""
        return self._event.is_set()


@dataclass(frozen=True)
class _Plan:
    """What the steps after loading share: the data, the task and how to search it."""

    data: TrainingSet
    window_start: datetime | None
    window_end: datetime | None
    task: Task
    config: SearchConfig
    split: HoldoutSplit
    dataset_fingerprint: str
    backend: TrainerBackend


# TextModelError (an artifact gyre_ml would not load back) is a ValueError, like DatasetError.
_PERMANENT = (InvalidRequest, DatasetError, DependencyRejected, SearchFailed, UntrustedArtifactError)


class JobRunner:
    """Runs one claimed job to its end (or back into the queue on a transient failure)."""

    def __init__(self, store: JobStore, source: TrainingDataSource, runs: RunLogger,
                 registry: ModelRegistryClient, artifacts: ArtifactStore, profiles: ProfileSink,
                 policy: TrainingPolicy) -> None:
        self.store = store
        self.source = source
        self.runs = runs
        self.registry = registry
        self.artifacts = artifacts
        self.profiles = profiles
        self.policy = policy

    async def run(self, job: Job, cancel: CancelToken | None = None) -> Job:
        """Answer ``job`` (already RUNNING under this worker); returns the job as last stored.

        Never raises for a job's own failure: permanent ones end the job FAILED with a reason,
        transient ones (a dependency unavailable) re-queue it until ``max_attempts``, a shutdown
        re-queues it without counting the attempt, a lost lease leaves it to its new owner.
        """
        token = cancel or CancelToken()
        search_run: list[SearchRun] = []
        await self.store.add_events([events.started(job)])
        log.info("training job %s (model %s, attempt %d) started", job.job_id, job.model_name, job.attempts)
        try:
            return await self._train(job, token, search_run)
        except SearchCancelled:
            if token.reason == "shutdown":
                await self.store.requeue(job.job_id, error="interrupted by shutdown", delay_s=0.0,
                                         count_attempt=False)
                return job
            if token.reason == "lease lost":
                log.warning("training job %s lost its lease; another worker owns it now", job.job_id)
                return job
            return await self._fail(job, "cancelled", search_run)
        except DependencyUnavailable as exc:
            if job.attempts < self.policy.max_attempts:
                log.warning("training job %s attempt %d: %s; retrying in %.0fs", job.job_id, job.attempts,
                            exc, self.policy.retry_delay_s)
                await self.store.requeue(job.job_id, error=f"attempt {job.attempts}: {exc}",
                                         delay_s=self.policy.retry_delay_s)
                return job
            return await self._fail(job, f"gave up after {job.attempts} attempts: {exc}", search_run)
        except _PERMANENT as exc:
            return await self._fail(job, str(exc), search_run)
        except Exception as exc:
            log.exception("training job %s failed unexpectedly", job.job_id)
            return await self._fail(job, f"internal error: {type(exc).__name__}: {exc}", search_run)

    async def _fail(self, job: Job, error: str, search_run: list[SearchRun]) -> Job:
        job.status, job.error = JobStatus.FAILED, error
        if search_run:
            try:
                await self.runs.finish_search(search_run[0], succeeded=False, best_run_id=job.best_run_id,
                                              metrics={}, tags={"gyre.error": error[:5000]})
            except (DependencyUnavailable, DependencyRejected) as exc:
                log.warning("could not mark run %s failed: %s", search_run[0].run_id, exc)
        await self.store.finish(job, [events.failed(job, error)])
        log.warning("training job %s failed: %s", job.job_id, error)
        return job

    async def _train(self, job: Job, token: CancelToken, search_run: list[SearchRun]) -> Job:
        plan = await self._prepare(job.request)
        run = await self._start_search_run(job, plan)
        search_run.append(run)
        outcome = await self._search(job, run, plan, token)
        assert outcome.best is not None
        best = outcome.best
        candidate = await self._build(job, plan, run, best, outcome.prepared)
        # For the record (tags, the SUCCEEDED event): the production model on this very holdout. The
        # decision is the registry's; this lets a person see both versions on the same rows.
        champion = await self._champion(job.model_name, self._champion_alias(job.request), plan.split, plan.task)
        await self.runs.finish_search(run, succeeded=True, best_run_id=candidate.best_run_id,
                                      metrics=candidate.holdout_metrics,
                                      tags=search_result_tags(candidate.artifact, best))
        registered = await self.registry.register(registration_for(candidate, champion))
        return await self._succeed(job, candidate, champion, registered)

    def _champion_alias(self, request: TrainingRequest) -> str:
        return request.promote_to_alias or self.policy.champion_alias

    async def _backend(self, request: TrainingRequest) -> TrainerBackend:
        """The request's backend; for "" the champion's (its ``gyre.backend`` and
        ``gyre.text_feature`` tags), so a retraining asked by the monitor or feedback, which know
        nothing of backends, trains the same kind of model; scikit-learn for a model without one."""
        name, text_feature = request.backend, request.text_feature
        if not name:
            current = await self.registry.version_by_alias(request.model_name, self._champion_alias(request))
            tags = current.tags if current is not None else {}
            name = tags.get("gyre.backend", "") or SKLEARN
            text_feature = text_feature or tags.get("gyre.text_feature", "")
            if name == SKLEARN and text_feature:
                raise InvalidRequest("text_feature", "applies to the torch-text backend only (set backend)")
        try:
            return backend_for(name, text=replace(self.policy.text, text_feature=text_feature))
        except ValueError as exc:  # a champion tagged with a backend this build does not know
            raise InvalidRequest("backend", str(exc)) from None

    async def _prepare(self, request: TrainingRequest) -> _Plan:
        """Load the training set, check it, and fix the backend, the task, the search and the holdout."""
        policy, search = self.policy, request.search
        backend = await self._backend(request)
        loaded = await self.source.training_set(request.feature_view, request.label, request.window_start,
                                                request.window_end)
        data = loaded.data
        if data.rows < policy.min_training_rows:
            raise DatasetError(f"the training set has {data.rows} rows, fewer than the {policy.min_training_rows} "
                               "needed (widen the window or lower GYRE_TRAINER_MIN_TRAINING_ROWS)")
        if data.label.isna().any():
            raise DatasetError(f"{int(data.label.isna().sum())} rows have no label")
        task = _task_of(request, data)
        backend.check(data, task)
        config = SearchConfig(
            task=task,
            families=backend.families(task, list(search.estimator_families)),
            objective=check_objective(task, search.objective_metric),
            max_evals=search.max_evals or policy.default_max_evals,
            seed=search.random_seed or policy.default_seed,
            cv_folds=policy.cv_folds,
            timeout_s=float(search.timeout_seconds) or None,
        )
        fraction = search.holdout_fraction or policy.default_holdout_fraction
        dataset_fp = await asyncio.to_thread(fingerprint, data)
        split = await asyncio.to_thread(split_holdout, data, fraction=fraction, feature_view=request.feature_view,
                                        label=request.label, classification=task is Task.CLASSIFICATION)
        return _Plan(data, loaded.window_start or request.window_start, loaded.window_end or request.window_end,
                     task, config, split, dataset_fp, backend)

    async def _start_search_run(self, job: Job, plan: _Plan) -> SearchRun:
        """Create (idempotently per attempt) the parent run and record it on the job."""
        run = await self.runs.start_search(
            experiment=experiment_name(self.policy.experiment_prefix, job.model_name),
            run_id=derived_id("run", job.job_id, job.attempts, "search"),
            run_name=search_run_name(job),
            tags=search_run_tags(job, dataset_fingerprint=plan.dataset_fingerprint, task=plan.task,
                                 objective=plan.config.objective, backend=plan.backend.name),
        )
        job.parent_run_id = run.run_id
        await self.store.save_progress(job)
        return run

    async def _build(self, job: Job, plan: _Plan, run: SearchRun, best: TrialResult, prepared: object) -> Candidate:
        """Refit the best trial on the development rows, score it on the holdout, store it (after
        checking serving could load it) and profile its inputs."""
        backend = plan.backend
        model = await asyncio.to_thread(backend.fit_final, prepared, best.params, plan.config)
        holdout_metrics = await asyncio.to_thread(backend.evaluate, model, plan.split.holdout.features,
                                                  plan.split.holdout.label, plan.task)
        # The backend checks that the bytes load back as serving will load them.
        blob = await asyncio.to_thread(backend.serialise, model)
        artifact = await asyncio.to_thread(self.artifacts.put, blob)
        signature = backend.signature(plan.data, plan.task, model)
        inputs = plan.split.development.features[backend.input_names(plan.data)]
        profile = await self._save_profile(backend, inputs, plan.dataset_fingerprint, plan.config.seed,
                                           job.model_name)
        return Candidate(
            job=job, task=plan.task, config=plan.config, data=plan.data, split=plan.split,
            window_start=plan.window_start, window_end=plan.window_end,
            dataset_fingerprint=plan.dataset_fingerprint, parent_run_id=run.run_id,
            experiment_id=run.experiment_id, best=best, best_run_id=job.best_run_id,
            holdout_metrics=dict(holdout_metrics), artifact=artifact, signature=signature,
            profile=profile, profile_format=self.profiles.format,
            backend=backend.name, artifact_format=backend.model_format, summary=backend.describe(best.params),
            backend_tags=backend.model_tags(model),
        )

    async def _succeed(self, job: Job, candidate: Candidate, champion: Champion | None,
                       registered: RegisteredNew) -> Job:
        """Record the registry's answer on the job and end it SUCCEEDED with its event."""
        request, version, promotion = job.request, registered.version, registered.promotion
        job.model_version = version
        job.promoted = promotion.promoted
        job.champion_version = promotion.champion_version
        if champion is not None and champion.version == promotion.champion_version and champion.version != version:
            # Only the metrics of the champion the registry actually compared with are reported.
            job.champion_metrics = dict(champion.metrics)
        if request.promote_to_alias and promotion.alias and promotion.alias != request.promote_to_alias:
            log.warning("training request %s asked for alias %r; the registry's policy uses %r", job.request_id,
                        request.promote_to_alias, promotion.alias)
        log.info("registry policy on %s v%d: %s (%s)", job.model_name, version, promotion.outcome, promotion.reason)
        job.best_metrics = dict(candidate.holdout_metrics)
        job.status, job.error = JobStatus.SUCCEEDED, ""
        await self.store.finish(job, [events.succeeded(job, candidate.best, candidate.holdout_metrics)])
        objective = candidate.config.objective
        log.info("training job %s registered %s v%d (%s=%.4f, promoted=%s)", job.job_id, job.model_name,
                 version, objective, candidate.holdout_metrics.get(objective, float("nan")), job.promoted)
        return job

    async def _save_profile(self, backend: TrainerBackend, features: pd.DataFrame, dataset_fp: str, seed: int,
                            model_name: str) -> ArtifactRef | None:
        try:
            # Version 0: the registry numbers the version after this profile's URI is in the lineage;
            # the monitor takes the number from the VERSION_CREATED event.
            profile = await asyncio.to_thread(backend.reference_profile, features, model_name=model_name,
                                              dataset_fingerprint=dataset_fp,
                                              max_values=self.policy.profile_max_values, seed=seed)
        except ProfileError as exc:
            # A model whose inputs the monitor cannot compare (all free text) is still a model.
            log.warning("no reference profile: %s", exc)
            return None
        return await self.profiles.save(profile)

    async def _search(self, job: Job, run: SearchRun, plan: _Plan, token: CancelToken) -> SearchOutcome:
        loop = asyncio.get_running_loop()
        best_loss = [float("inf")]

        async def record(trial: TrialResult) -> None:
            run_id = await self.runs.log_trial(
                run, run_id=derived_id("run", job.job_id, job.attempts, "trial", trial.number), trial=trial,
                tags=trial_run_tags(job, parent_run_id=run.run_id, trial_number=trial.number),
            )
            job.trials_completed += 1
            if trial.ok and trial.loss < best_loss[0]:
                best_loss[0] = trial.loss
                job.best_run_id = run_id
                job.best_metrics = {f"val_{k}": v for k, v in trial.metrics.items()}
            await self.store.save_progress(job, [events.trial_completed(job, trial, run_id)])
            latest = await self.store.get(job.job_id)
            if latest is not None and latest.cancel_requested:
                token.cancel("cancelled")

        def on_trial(trial: TrialResult) -> None:
            # Runs in the search thread: hand the I/O to the event loop and wait, so trials are
            # logged in order and a slow tracking service slows the search instead of piling up.
            future = asyncio.run_coroutine_threadsafe(record(trial), loop)
            future.result(timeout=self.policy.trial_callback_timeout_s)

        return await asyncio.to_thread(run_search, plan.split.development, plan.config, on_trial=on_trial,
                                       should_stop=token.is_set, backend=plan.backend)

    async def _champion(self, model_name: str, alias: str, split: HoldoutSplit, task: Task) -> Champion | None:
        """The alias holder's metrics on this job's holdout rows; None when the alias points nowhere.

        Fair: no version trains on a holdout entity (the split is by entity id), so these rows are
        unseen by the alias holder too. Advisory only: the registry's policy decides promotion.
        """
        current = await self.registry.version_by_alias(model_name, alias)
        if current is None:
            return None
        try:
            # The champion may come from another backend than this job's: its artifact format says whose.
            backend = backend_for_format(current.artifact_format, text=self.policy.text)
            blob = await asyncio.to_thread(self.artifacts.get, current.artifact.uri, current.artifact.sha256)
            model = await asyncio.to_thread(backend.load, blob)
            names = list(current.input_names) or split.holdout.feature_names
            missing = [n for n in names if n not in split.holdout.features.columns]
            if missing:
                return Champion(current.version, {}, f"holdout lacks the champion's inputs {missing}")
            metrics = await asyncio.to_thread(backend.evaluate, model, split.holdout.features[names],
                                              split.holdout.label, task)
            return Champion(current.version, metrics)
        except Exception as exc:  # the comparison is advisory: a broken champion must not sink the job
            log.warning("champion %s v%d could not be evaluated on the holdout: %s", model_name, current.version, exc)
            return Champion(current.version, {}, f"could not evaluate: {exc}")


def _task_of(request: TrainingRequest, data: TrainingSet) -> Task:
    if request.task is Task.REGRESSION and data.label.dtype.kind not in "iuf":
        raise DatasetError(f"regression needs a numeric label; {request.label} is {data.label.dtype}")
    return request.task if request.task is not None else infer_task(data.label)
