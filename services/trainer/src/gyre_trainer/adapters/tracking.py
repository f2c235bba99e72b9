"""The tracking service as the trainer's :class:`~gyre_trainer.ports.RunLogger`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import grpc

from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2 as pb
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2_grpc as pb_grpc
from gyre_trainer.adapters.rpc import call_metadata, dependency_error
from gyre_trainer.domain.search import TrialResult, params_as_strings
from gyre_trainer.ports import RunLogger, SearchRun

USER = "gyre-trainer"
"""RunInfo.user of every run the trainer creates."""

_PARAMS_PER_CALL = 100
_METRICS_PER_CALL = 1000  # MLflow's log-batch limit on metrics


class GrpcRunLogger(RunLogger):
    """Logs searches and trials through ``gyre.tracking.v1.TrackingService``.

    Run ids are chosen by the trainer (deterministic per job, attempt and trial), so a retried call
    returns the existing run instead of creating a second one.
    """

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float, token: str | None = None) -> None:
        self._stub = pb_grpc.TrackingServiceStub(channel)
        self._timeout_s = timeout_s
        self._metadata = call_metadata(token)
        self._experiments: dict[str, str] = {}

    async def _call(self, name: str, request: object) -> object:
        try:
            return await getattr(self._stub, name)(request, timeout=self._timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise dependency_error("tracking", name, exc) from None

    async def _experiment_id(self, name: str) -> str:
        cached = self._experiments.get(name)
        if cached:
            return cached
        try:
            found = await self._stub.GetExperiment(pb.GetExperimentRequest(name=name), timeout=self._timeout_s,
                                                   metadata=self._metadata)
            experiment_id = found.experiment.experiment_id
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise dependency_error("tracking", "GetExperiment", exc) from None
            try:
                created = await self._stub.CreateExperiment(pb.CreateExperimentRequest(name=name),
                                                            timeout=self._timeout_s, metadata=self._metadata)
                experiment_id = created.experiment.experiment_id
            except grpc.aio.AioRpcError as exc2:
                if exc2.code() != grpc.StatusCode.ALREADY_EXISTS:  # another replica won the race
                    raise dependency_error("tracking", "CreateExperiment", exc2) from None
                again = await self._call("GetExperiment", pb.GetExperimentRequest(name=name))
                experiment_id = again.experiment.experiment_id  # type: ignore[attr-defined]
        self._experiments[name] = experiment_id
        return experiment_id

    async def _create_run(self, experiment_id: str, run_id: str, run_name: str, tags: Mapping[str, str]) -> None:
        request = pb.CreateRunRequest(experiment_id=experiment_id, run_id=run_id, run_name=run_name, user=USER,
                                      tags=[ev.Tag(key=k, value=v) for k, v in tags.items()])
        request.start_time.FromDatetime(datetime.now(UTC))
        await self._call("CreateRun", request)

    async def _log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        if not metrics:
            return
        now = datetime.now(UTC)
        points = []
        for key, value in metrics.items():
            point = ev.Metric(key=key, value=value, step=step)
            point.timestamp.FromDatetime(now)
            points.append(point)
        await self._call("LogMetrics", pb.LogMetricsRequest(run_id=run_id, metrics=points))

    async def _log_history(self, run_id: str, trial: TrialResult) -> None:
        # Learning curves: one point per metric and epoch, step = epoch, stamped when the epoch ended.
        points = []
        for epoch in trial.history:
            for key, value in epoch.metrics.items():
                point = ev.Metric(key=key, value=value, step=epoch.epoch)
                point.timestamp.FromDatetime(epoch.at)
                points.append(point)
        for start in range(0, len(points), _METRICS_PER_CALL):
            await self._call("LogMetrics", pb.LogMetricsRequest(run_id=run_id,
                                                                metrics=points[start:start + _METRICS_PER_CALL]))

    async def _set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        if tags:
            await self._call("SetTags", pb.SetTagsRequest(run_id=run_id,
                                                          tags=[ev.Tag(key=k, value=v) for k, v in tags.items()]))

    async def _end(self, run_id: str, succeeded: bool) -> None:
        request = pb.UpdateRunRequest(run_id=run_id,
                                      status=ev.RUN_STATUS_FINISHED if succeeded else ev.RUN_STATUS_FAILED)
        request.end_time.FromDatetime(datetime.now(UTC))
        await self._call("UpdateRun", request)

    async def start_search(self, *, experiment: str, run_id: str, run_name: str,
                           tags: Mapping[str, str]) -> SearchRun:
        experiment_id = await self._experiment_id(experiment)
        await self._create_run(experiment_id, run_id, run_name, tags)
        return SearchRun(experiment_id, run_id)

    async def log_trial(self, search: SearchRun, *, run_id: str, trial: TrialResult,
                        tags: Mapping[str, str]) -> str:
        all_tags = dict(tags)
        if trial.error:
            all_tags["gyre.error"] = trial.error[:5000]
        await self._create_run(search.experiment_id, run_id, f"trial-{trial.number}", all_tags)
        params = [ev.Param(key=k, value=v) for k, v in params_as_strings(trial.params).items()]
        for start in range(0, len(params), _PARAMS_PER_CALL):
            await self._call("LogParams", pb.LogParamsRequest(run_id=run_id,
                                                              params=params[start:start + _PARAMS_PER_CALL]))
        curves = {name for epoch in trial.history for name in epoch.metrics}
        metrics = {f"val_{k}": v for k, v in trial.metrics.items() if f"val_{k}" not in curves}
        metrics["trial_duration_s"] = trial.duration_s
        await self._log_metrics(run_id, metrics)
        await self._log_history(run_id, trial)
        # The parent run gets the objective's trajectory: one point per trial, step = trial number.
        if trial.ok:
            await self._log_metrics(search.run_id, {"trial_loss": trial.loss}, step=trial.number)
        await self._end(run_id, trial.ok)
        return run_id

    async def finish_search(self, search: SearchRun, *, succeeded: bool, best_run_id: str,
                            metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
        holdout = {f"holdout_{k}": v for k, v in metrics.items()}
        parent_tags = dict(tags)
        if best_run_id:
            parent_tags["gyre.best_run_id"] = best_run_id
        await self._log_metrics(search.run_id, holdout)
        await self._set_tags(search.run_id, parent_tags)
        if succeeded and best_run_id:
            await self._log_metrics(best_run_id, holdout)
            await self._set_tags(best_run_id, {**dict(tags), "gyre.best": "true"})
        await self._end(search.run_id, succeeded)
