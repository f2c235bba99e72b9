"""The trainer's use cases, free of transport: queue, inspect and cancel jobs, and run one job.

:class:`JobService` answers the API and the bus (submit, get, list, cancel); :class:`JobRunner`
runs one job end to end: training set, holdout, tracked search, refit, artifact, reference
profile, the production model scored on the same holdout (for the record), registration with
lineage and the holdout evaluation (the registry's policy decides any promotion), events.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from gyre_common import errors
from gyre_common.artifacts import ArtifactRef, ArtifactStore
from gyre_common.models import SKOPS_FORMAT, TRUSTED_SKOPS_TYPES, UntrustedArtifactError, dump_model, load_model
from gyre_common.profile import ProfileError, build_reference_profile
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_trainer import __version__
from gyre_trainer import training_events as events
from gyre_trainer.domain.dataset import DatasetError, TrainingSet, fingerprint
from gyre_trainer.domain.evaluation import evaluate
from gyre_trainer.domain.holdout import HOLDOUT_RULE, HoldoutSplit, split_holdout
from gyre_trainer.domain.jobs import InvalidRequest, Job, JobStatus, derived_id, job_id_for, validate_request
from gyre_trainer.domain.search import (
    SearchCancelled,
    SearchConfig,
    SearchFailed,
    SearchOutcome,
    TrialResult,
    fit_best,
    params_as_strings,
    run_search,
)
from gyre_trainer.domain.signature import signature_of
from gyre_trainer.domain.space import resolve_families
from gyre_trainer.domain.task import LOWER_IS_BETTER, Task, check_objective, infer_task
from gyre_trainer.ports import (
    DependencyRejected,
    DependencyUnavailable,
    HoldoutEvaluation,
    Lineage,
    ModelRegistryClient,
    ProfileSink,
    Registration,
    RunLogger,
    SearchRun,
    TrainingDataSource,
)
from gyre_trainer.store import EventClaim, JobStore

log = logging.getLogger(__name__)

CODE_VERSION = f"gyre-trainer=={__version__}"
"""Lineage.code_version of every model this package trains."""


@dataclass(frozen=True)
class TrainingPolicy:
    """Defaults and limits of training (from :class:`~gyre_trainer.settings.TrainerSettings`)."""

    default_max_evals: int = 20
    max_max_evals: int = 500
    default_seed: int = 42
    default_holdout_fraction: float = 0.2
    cv_folds: int = 3
    min_training_rows: int = 20
    profile_max_values: int = 5000
    max_queued_jobs: int = 100
    experiment_prefix: str = "gyre/"
    champion_alias: str = "production"
    max_attempts: int = 3
    retry_delay_s: float = 30.0
    trial_callback_timeout_s: float = 120.0


class JobNotFound(errors.NotFound, LookupError):
    """No job with that id."""


class JobAlreadyEnded(errors.FailedPrecondition, RuntimeError):
    """The job already succeeded or failed."""


class JobService:
    """Queue, read and cancel jobs. ``wake`` is called after a new job is queued (to start a local
    worker at once instead of at its next poll)."""

    def __init__(self, store: JobStore, policy: TrainingPolicy, wake: Callable[[], None] | None = None) -> None:
        self.store = store
        self.policy = policy
        self._wake = wake or (lambda: None)

    async def submit(self, request: ev.TrainingRequest, *, claim: EventClaim | None = None) -> tuple[Job, bool]:
        """Queue a job for ``request``; idempotent on request_id.

        From the API (``claim`` is None) an invalid request raises :class:`InvalidRequest` and a
        full queue raises :class:`~gyre_trainer.store.QueueFull`. From the bus (``claim`` given)
        nothing is refused: an invalid request is recorded as a FAILED job with a FAILED event, so
        its producer can see why, and the queue limit does not apply (the topic is the buffer).

        Returns:
            The job and whether the request id was already known (then nothing new happened).
        """
        if not request.HasField("requested_at"):
            request.requested_at.FromDatetime(datetime.now(UTC))
        try:
            validate_request(request, max_max_evals=self.policy.max_max_evals)
        except InvalidRequest as exc:
            if claim is None:
                raise
            if not request.request_id.strip():
                # Still answerable: key it by the bus event, so a redelivery maps to the same job.
                request.request_id = f"ce:{claim.event_id}"
            error = f"invalid request: {exc}"
            placeholder = Job(job_id_for(request.request_id), request, JobStatus.FAILED, datetime.now(UTC))
            job, duplicate = await self.store.submit(request, claim=claim,
                                                     rejected=(error, events.failed(placeholder, error)))
            log.warning("rejected training request %s: %s", request.request_id, exc)
            return job, duplicate
        limit = None if claim is not None else self.policy.max_queued_jobs
        job, duplicate = await self.store.submit(request, max_queued=limit, claim=claim)
        if not duplicate:
            log.info("queued training job %s for model %s (request %s)", job.job_id, job.model_name,
                     job.request_id)
            self._wake()
        return job, duplicate

    async def get_job(self, *, job_id: str = "", request_id: str = "") -> Job:
        """The job by id or by request id. Raises :class:`JobNotFound`, or ValueError if neither is given."""
        if not job_id and not request_id:
            raise ValueError("give job_id or request_id")
        job = await (self.store.get(job_id) if job_id else self.store.get_by_request(request_id))
        if job is None:
            raise JobNotFound(f"no training job {'with id ' + job_id if job_id else 'for request ' + request_id}")
        return job

    async def list_jobs(self, *, model_name: str = "", page_size: int = 0,
                        page_token: str = "") -> tuple[list[Job], str]:
        """One page of jobs, newest first, and the token of the next page ("" on the last).

        Raises:
            ValueError: page_size outside 0..1000 or a page_token this service did not issue.
        """
        if not 0 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000 (0 means 100)")
        size = page_size or 100
        after = _decode_token(page_token) if page_token else None
        jobs = await self.store.list_jobs(model_name=model_name, limit=size + 1, after=after)
        if len(jobs) > size:
            last = jobs[size - 1]
            return jobs[:size], _encode_token(last.created_at, last.job_id)
        return jobs, ""

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once, or ask the running one to stop at its next trial.

        Raises:
            JobNotFound: unknown job.
            JobAlreadyEnded: the job already succeeded or failed.
        """
        job = await self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no training job with id {job_id}")
        if job.status.ended:
            raise JobAlreadyEnded(f"training job {job_id} already {job.status.value}")
        cancelled = await self.store.request_cancel(job_id, events.failed(job, "cancelled"))
        if cancelled is None:
            raise JobNotFound(f"no training job with id {job_id}")
        return cancelled


def _encode_token(created_at: datetime, job_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str) -> tuple[datetime, str]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        return datetime.fromisoformat(created), str(job_id)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid page_token: {exc}") from None


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


@dataclass
class _Champion:
    version: int
    metrics: dict[str, float]
    note: str = ""


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
        request, policy = job.request, self.policy
        window_start = request.window_start.ToDatetime(UTC) if request.HasField("window_start") else None
        window_end = request.window_end.ToDatetime(UTC) if request.HasField("window_end") else None
        loaded = await self.source.training_set(request.feature_view, request.label, window_start, window_end)
        data = loaded.data
        if data.rows < policy.min_training_rows:
            raise DatasetError(f"the training set has {data.rows} rows, fewer than the {policy.min_training_rows} "
                               "needed (widen the window or lower GYRE_TRAINER_MIN_TRAINING_ROWS)")
        if data.label.isna().any():
            raise DatasetError(f"{int(data.label.isna().sum())} rows have no label")
        task = _task_of(request, data)
        search = request.search
        config = SearchConfig(
            task=task,
            families=resolve_families(task, list(search.estimator_families)),
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

        run = await self.runs.start_search(
            experiment=f"{policy.experiment_prefix}{job.model_name}",
            run_id=derived_id("run", job.job_id, job.attempts, "search"),
            run_name=f"{job.model_name}-search-{job.job_id[:8]}-{job.attempts}",
            tags={"gyre.job_id": job.job_id, "gyre.training_request_id": job.request_id,
                  "gyre.feature_view": request.feature_view, "gyre.dataset_fingerprint": dataset_fp,
                  "gyre.task": task.value, "gyre.objective_metric": config.objective},
        )
        search_run.append(run)
        job.parent_run_id = run.run_id
        await self.store.save_progress(job)

        outcome = await self._search(job, run, split, config, token)
        assert outcome.best is not None
        best = outcome.best
        model = await asyncio.to_thread(fit_best, split.development, config, best)
        holdout_metrics = await asyncio.to_thread(evaluate, model, split.holdout.features, split.holdout.label, task)
        blob = await asyncio.to_thread(dump_model, model)
        # Serving loads with the same trusted types: refuse to register what it could not load.
        await asyncio.to_thread(load_model, blob)
        artifact = await asyncio.to_thread(self.artifacts.put, blob)
        signature = signature_of(data, task, getattr(model, "classes_", None))
        profile_ref = await self._save_profile(split.development.features, dataset_fp, config.seed, job.model_name)
        # For the record (tags, the SUCCEEDED event): the production model on this very holdout. The
        # decision is the registry's; this lets a person see both versions on the same rows.
        champion = await self._champion(job.model_name, request.promote_to_alias or policy.champion_alias,
                                        split, task)

        best_run_id = job.best_run_id
        await self.runs.finish_search(run, succeeded=True, best_run_id=best_run_id, metrics=holdout_metrics,
                                      tags={"gyre.artifact.uri": artifact.uri,
                                            "gyre.artifact.sha256": artifact.sha256,
                                            "gyre.best_trial": str(best.number)})
        hyperparameters = params_as_strings(best.params)
        tags = {
            "gyre.task": task.value,
            "gyre.objective_metric": config.objective,
            "gyre.search.max_evals": str(config.max_evals),
            "gyre.search.families": ",".join(config.families),
            "gyre.search.seed": str(config.seed),
            "gyre.holdout.rule": HOLDOUT_RULE,
            "gyre.holdout.fraction": repr(split.fraction),
            "gyre.holdout.id": split.holdout_id,
            "gyre.holdout.rows": str(split.holdout.rows),
            "gyre.holdout.digest": split.rows_digest,
            "gyre.skops.trusted_types": ",".join(TRUSTED_SKOPS_TYPES),
            "gyre.parent_run_id": run.run_id,
            "gyre.job_id": job.job_id,
        }
        if signature.classes:
            tags["gyre.classes"] = json.dumps(list(signature.classes))
        if data.source_fingerprint:
            tags["gyre.features.fingerprint"] = data.source_fingerprint
        if champion is not None:
            tags["gyre.champion.version"] = str(champion.version)
            tags.update({f"gyre.champion.{k}": repr(v) for k, v in champion.metrics.items()})
        champion_score_of: tuple[int, float | None] = (
            (champion.version, champion.metrics[config.objective])
            if champion is not None and config.objective in champion.metrics else (0, None)
        )
        registration = Registration(
            model_name=job.model_name,
            artifact=artifact,
            artifact_format=SKOPS_FORMAT,
            signature=signature,
            lineage=Lineage(
                training_request_id=job.request_id,
                feature_views=(request.feature_view,),
                window_start=loaded.window_start or window_start,
                window_end=loaded.window_end or window_end,
                dataset_fingerprint=dataset_fp,
                run_id=best_run_id,
                experiment_id=run.experiment_id,
                hyperparameters=hyperparameters,
                metrics={f"holdout_{name}": value for name, value in holdout_metrics.items()},
                code_version=CODE_VERSION,
                label=request.label,
                training_rows=data.rows,
                reference_profile=profile_ref,
                reference_profile_format=self.profiles.format if profile_ref is not None else "",
            ),
            description=(f"{best.params['family']} from training request {job.request_id} "
                         f"({ev.TrainingReason.Name(request.reason)})"),
            tags=tags,
            idempotency_key=job.request_id,
            evaluation=HoldoutEvaluation(
                primary_metric=f"holdout_{config.objective}",
                lower_is_better=config.objective in LOWER_IS_BETTER,
                holdout_id=split.holdout_id,
                # The production model scored on these same holdout rows: the registry's policy
                # compares the two on identical data, whatever window each was trained on.
                champion_version=champion_score_of[0], champion_score=champion_score_of[1],
            ),
            # No alias asked for: register only. Otherwise the registry's policy decides (its champion
            # alias, `production` by default); the trainer never moves an alias itself.
            skip_promotion=not request.promote_to_alias,
        )
        registered = await self.registry.register(registration)
        version, promotion = registered.version, registered.promotion
        job.model_version = version
        job.promoted = promotion.promoted
        job.champion_version = promotion.champion_version
        if champion is not None and champion.version == promotion.champion_version and champion.version != version:
            job.champion_metrics = dict(champion.metrics)
        if request.promote_to_alias and promotion.alias and promotion.alias != request.promote_to_alias:
            log.warning("training request %s asked for alias %r; the registry's policy uses %r", job.request_id,
                        request.promote_to_alias, promotion.alias)
        log.info("registry policy on %s v%d: %s (%s)", job.model_name, version, promotion.outcome, promotion.reason)
        job.best_metrics = dict(holdout_metrics)
        job.status, job.error = JobStatus.SUCCEEDED, ""
        await self.store.finish(job, [events.succeeded(job, best, holdout_metrics)])
        log.info("training job %s registered %s v%d (%s=%.4f, promoted=%s)", job.job_id, job.model_name,
                 version, config.objective, holdout_metrics.get(config.objective, float("nan")), job.promoted)
        return job

    async def _save_profile(self, features: pd.DataFrame, dataset_fp: str, seed: int,
                            model_name: str) -> ArtifactRef | None:
        try:
            # Version 0: the registry numbers the version after this profile's URI is in the lineage;
            # the monitor takes the number from the VERSION_CREATED event.
            profile = await asyncio.to_thread(build_reference_profile, features, model_name=model_name,
                                              model_version=0, dataset_fingerprint=dataset_fp,
                                              max_values=self.policy.profile_max_values, seed=seed)
        except ProfileError as exc:
            # A model whose inputs the monitor cannot compare (all free text) is still a model.
            log.warning("no reference profile: %s", exc)
            return None
        return await self.profiles.save(profile)

    async def _search(self, job: Job, run: SearchRun, split: HoldoutSplit, config: SearchConfig,
                      token: CancelToken) -> SearchOutcome:
        loop = asyncio.get_running_loop()
        best_loss = [float("inf")]

        async def record(trial: TrialResult) -> None:
            run_id = await self.runs.log_trial(
                run, run_id=derived_id("run", job.job_id, job.attempts, "trial", trial.number), trial=trial,
                tags={"mlflow.parentRunId": run.run_id, "gyre.job_id": job.job_id,
                      "gyre.trial": str(trial.number)},
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

        return await asyncio.to_thread(run_search, split.development, config, on_trial=on_trial,
                                       should_stop=token.is_set)

    async def _champion(self, model_name: str, alias: str, split: HoldoutSplit, task: Task) -> _Champion | None:
        """The alias holder's metrics on this job's holdout rows; None when the alias points nowhere.

        Fair: no version trains on a holdout entity (the split is by entity id), so these rows are
        unseen by the alias holder too. Advisory only: the registry's policy decides promotion.
        """
        current = await self.registry.version_by_alias(model_name, alias)
        if current is None:
            return None
        try:
            blob = await asyncio.to_thread(self.artifacts.get, current.artifact.uri, current.artifact.sha256)
            model = await asyncio.to_thread(load_model, blob)
            names = list(current.input_names) or split.holdout.feature_names
            missing = [n for n in names if n not in split.holdout.features.columns]
            if missing:
                return _Champion(current.version, {}, f"holdout lacks the champion's inputs {missing}")
            metrics = await asyncio.to_thread(evaluate, model, split.holdout.features[names],
                                              split.holdout.label, task)
            return _Champion(current.version, metrics)
        except Exception as exc:  # the comparison is advisory: a broken champion must not sink the job
            log.warning("champion %s v%d could not be evaluated on the holdout: %s", model_name, current.version, exc)
            return _Champion(current.version, {}, f"could not evaluate: {exc}")


def _task_of(request: ev.TrainingRequest, data: TrainingSet) -> Task:
    if request.task == ev.TRAINING_TASK_CLASSIFICATION:
        return Task.CLASSIFICATION
    if request.task == ev.TRAINING_TASK_REGRESSION:
        if data.label.dtype.kind not in "iuf":
            raise DatasetError(f"regression needs a numeric label; {request.label} is {data.label.dtype}")
        return Task.REGRESSION
    return infer_task(data.label)
