"""Every call the dashboard makes to another service, one method per upstream route.

The answers are contract messages in proto3 JSON; :mod:`gyre_dashboard.convert` reads them into
messages and then into the dashboard's plain values (see there which message each route answers).

Routes read (from each service's ``api_http.py``):

* every service: ``GET /readyz`` (200 ready, 503 ``{"failing": [...]}``);
* registry: ``GET /api/v1/registered-models``, ``GET /api/v1/registered-models/{name}/versions``;
* monitor: ``GET /api/v1/models/{name}/drift`` (404: no window evaluated yet), ``GET /api/v1/alerts``;
* feedback: ``GET /api/v1/models/{name}/quality`` (404: no prediction seen yet);
* trainer: ``GET /v1/jobs``;
* tracking: ``GET /api/v1/experiments`` (paged), then ``POST /api/v1/runs/search`` over all of them
  (the search needs experiment ids; a POST body has no URL length limit however many there are).

Errors: every method raises :class:`UpstreamError` (unreachable, timeout, unexpected status, not
JSON) except :meth:`UpstreamClient.readiness`, which turns any failure into a DOWN verdict.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from google.protobuf.message import Message

from gyre_contracts.gyre.feedback.v1 import feedback_service_pb2 as fb
from gyre_contracts.gyre.monitor.v1 import monitor_service_pb2 as mon
from gyre_contracts.gyre.registry.v1 import registry_service_pb2 as reg
from gyre_contracts.gyre.tracking.v1 import tracking_service_pb2 as trk
from gyre_contracts.gyre.trainer.v1 import trainer_service_pb2 as tr
from gyre_dashboard.convert import (
    alert_summary,
    drift_summary,
    model_version_summary,
    parse_message,
    quality_summary,
    registered_model_summary,
    run_summary,
    training_job_summary,
)
from gyre_dashboard.domain.health import Health, ServiceHealth, UpstreamError
from gyre_dashboard.domain.models import AlertSummary, ModelDrift, ModelQuality, ModelSummary, VersionSummary
from gyre_dashboard.domain.training import RunSummary, TrainingJobSummary

M = TypeVar("M", bound=Message)

MAX_ERROR_CHARS = 200
"""Longest upstream error text kept (the page shows it; a whole HTML error page would not help)."""

_REGISTRY_PAGE_SIZE = 100

_TRACKING_PAGE_SIZE = 1000
"""Experiments per page of tracking's list (its maximum)."""

MAX_EXPERIMENTS = 10_000
"""Most experiments whose runs are searched: the first by id (tracking lists them by id)."""


def _error_text(response: httpx.Response) -> str:
    """The useful part of an error answer: ``error.message`` (registry), ``detail`` (FastAPI), or text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message: Any = None
    if isinstance(body, Mapping):
        error = body.get("error")
        message = error.get("message") if isinstance(error, Mapping) else error
        message = message or body.get("detail")
    text = str(message) if message else response.text
    return " ".join(text.split())[:MAX_ERROR_CHARS]


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"unreachable ({exc or type(exc).__name__})"[:MAX_ERROR_CHARS]
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


class UpstreamClient:
    """Calls the other services' REST APIs through one shared ``httpx.AsyncClient``.

    Args:
        http: the client (its timeout applies to every call; the caller closes it).
        urls: base URL of each service by name (``registry`` -> ``http://127.0.0.1:7400``).
    """

    def __init__(self, http: httpx.AsyncClient, urls: Mapping[str, str]) -> None:
        self._http = http
        self._urls = dict(urls)

    async def _get_json(self, service: str, path: str, params: Mapping[str, str | int] | None = None,
                        *, missing_ok: bool = False) -> Any:
        """GET ``path`` of ``service`` as JSON; None on 404 when ``missing_ok``.

        Raises:
            UpstreamError: unreachable, timeout, another non-2xx status, or a body that is not JSON.
        """
        return await self._request_json("GET", service, path, params=params, missing_ok=missing_ok)

    async def _request_json(self, method: str, service: str, path: str, *,
                            params: Mapping[str, str | int] | None = None, body: Any = None,
                            missing_ok: bool = False) -> Any:
        """``method`` ``path`` of ``service`` (with a JSON ``body`` if given) as JSON; None on 404
        when ``missing_ok``.

        Raises:
            UpstreamError: unreachable, timeout, another non-2xx status, or a body that is not JSON.
        """
        url = self._urls.get(service)
        if url is None:
            raise UpstreamError(service, "no address configured")
        try:
            response = await self._http.request(method, url + path, params=params, json=body)
        except httpx.HTTPError as exc:
            raise UpstreamError(service, _describe(exc)) from exc
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 300:
            raise UpstreamError(service, f"{method} {path} answered {response.status_code}: {_error_text(response)}")
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamError(service, f"{method} {path} answered something that is not JSON") from exc

    async def _get_message(self, service: str, path: str, message: M, what: str,
                           params: Mapping[str, str | int] | None = None, *, missing_ok: bool = False) -> M | None:
        """GET ``path`` of ``service`` parsed into ``message`` (see :func:`convert.parse_message`);
        None on 404 when ``missing_ok``.

        Raises:
            UpstreamError: as :meth:`_get_json`, or the answer is not a JSON object (``what`` names it).
        """
        body = await self._get_json(service, path, params, missing_ok=missing_ok)
        if body is None and missing_ok:
            return None
        return _message(service, what, body, message)

    async def readiness(self, service: str) -> ServiceHealth:
        """``GET /readyz`` of ``service``: READY (200), NOT_READY (503 with the failing checks) or DOWN.

        Never raises: a service that cannot be asked is DOWN, with the reason in ``detail``.
        """
        url = self._urls.get(service, "")
        started = time.perf_counter()
        try:
            response = await self._http.get(url + "/readyz")
        except httpx.HTTPError as exc:
            return ServiceHealth(service, url, Health.DOWN, detail=_describe(exc))
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200:
            return ServiceHealth(service, url, Health.READY, latency_ms=latency_ms)
        if response.status_code == 503 and isinstance(body, Mapping):
            failing = tuple(str(name) for name in body.get("failing") or () if name)
            detail = "stopping" if body.get("stopping") else _failing_detail(body, failing)
            return ServiceHealth(service, url, Health.NOT_READY, failing, detail, latency_ms)
        return ServiceHealth(service, url, Health.DOWN,
                             detail=f"/readyz answered {response.status_code}: {_error_text(response)}",
                             latency_ms=latency_ms)

    async def registry_models(self, limit: int) -> list[ModelSummary]:
        """Registered models by name (at most ``limit``), with aliases but without versions."""
        models: list[ModelSummary] = []
        token = ""
        while len(models) < limit:
            params: dict[str, str | int] = {"page_size": min(limit - len(models), _REGISTRY_PAGE_SIZE)}
            if token:
                params["page_token"] = token
            page = await self._get_message("registry", "/api/v1/registered-models",
                                           reg.ListRegisteredModelsResponse(), "registered models", params)
            assert page is not None
            models.extend(registered_model_summary(m) for m in page.registered_models)
            token = page.next_page_token
            if not token:
                break
        return [m for m in models if m.name][:limit]

    async def registry_versions(self, model_name: str, limit: int) -> list[VersionSummary]:
        """The ``limit`` newest versions of ``model_name`` (archived ones too), newest first."""
        page = await self._get_message(
            "registry", f"/api/v1/registered-models/{quote(model_name, safe='')}/versions",
            reg.ListModelVersionsResponse(), "model versions", {"page_size": limit, "include_archived": "true"})
        assert page is not None
        versions = [model_version_summary(v) for v in page.model_versions]
        return sorted(versions, key=lambda v: v.version, reverse=True)[:limit]

    async def monitor_latest_drift(self, model_name: str) -> ModelDrift | None:
        """Drift per feature of the monitor's latest evaluated window of ``model_name``; None if none yet."""
        report = await self._get_message("monitor", f"/api/v1/models/{quote(model_name, safe='')}/drift",
                                         mon.DriftReport(), "drift", missing_ok=True)
        return None if report is None else drift_summary(report, model_name)

    async def monitor_alerts(self, limit: int) -> list[AlertSummary]:
        """The ``limit`` newest monitor alerts, newest first."""
        page = await self._get_message("monitor", "/api/v1/alerts", mon.ListAlertsResponse(), "alerts",
                                       {"limit": limit})
        assert page is not None
        return [alert_summary(a) for a in page.alerts][:limit]

    async def feedback_quality(self, model_name: str, window_start: datetime) -> ModelQuality | None:
        """Quality per version of ``model_name`` over predictions since ``window_start`` (UTC);
        None when the feedback service has seen no prediction of the model."""
        quality = await self._get_message(
            "feedback", f"/api/v1/models/{quote(model_name, safe='')}/quality", fb.GetQualityResponse(), "quality",
            {"window_start": window_start.isoformat().replace("+00:00", "Z")}, missing_ok=True)
        return None if quality is None else quality_summary(quality, model_name)

    async def trainer_jobs(self, limit: int) -> list[TrainingJobSummary]:
        """The ``limit`` newest training jobs (each answers one retraining request), newest first."""
        page = await self._get_message("trainer", "/v1/jobs", tr.ListTrainingJobsResponse(), "jobs",
                                       {"page_size": limit})
        assert page is not None
        return [training_job_summary(j) for j in page.jobs][:limit]

    async def tracking_experiments(self) -> dict[str, str]:
        """Active experiments of tracking, id -> name, by id (at most :data:`MAX_EXPERIMENTS`)."""
        names: dict[str, str] = {}
        token = ""
        while len(names) < MAX_EXPERIMENTS:
            params: dict[str, str | int] = {"page_size": _TRACKING_PAGE_SIZE}
            if token:
                params["page_token"] = token
            page = await self._get_message("tracking", "/api/v1/experiments", trk.ListExperimentsResponse(),
                                           "experiments", params)
            assert page is not None
            for experiment in page.experiments:
                if experiment.experiment_id:
                    names[experiment.experiment_id] = experiment.name
            token = page.next_page_token
            if not token:
                break
        return dict(list(names.items())[:MAX_EXPERIMENTS])

    async def tracking_runs(self, limit: int) -> list[RunSummary]:
        """The ``limit`` newest runs (by start time) of every active experiment, newest first:
        trainer searches and trials and MLflow-client runs alike, told apart by ``origin``.

        Two calls in a row: the experiments (the search needs their ids, and the page their
        names), then one search over all of them.
        """
        experiments = await self.tracking_experiments()
        if not experiments:
            return []
        body = await self._request_json("POST", "tracking", "/api/v1/runs/search", body={
            "experiment_ids": list(experiments), "order_by": ["attributes.start_time DESC"], "page_size": limit})
        found = _message("tracking", "runs", body, trk.SearchRunsResponse())
        runs = [run_summary(r, experiments) for r in found.runs]
        # Tracking sorts already; sorting again (stable, unknown start last) keeps "newest first"
        # true whatever the upstream does.
        runs.sort(key=lambda r: r.start_time.timestamp() if r.start_time else float("-inf"), reverse=True)
        return runs[:limit]


def _message(service: str, what: str, body: Any, message: M) -> M:
    """``body`` parsed into ``message``.

    Raises:
        UpstreamError: ``body`` is not a JSON object.
    """
    if not isinstance(body, Mapping):
        raise UpstreamError(service, f"{what}: not a JSON object")
    return parse_message(body, message)


def _failing_detail(body: Mapping[str, Any], failing: tuple[str, ...]) -> str:
    """``database: ConnectionRefusedError ...; broker: ...`` from a ``/readyz`` body."""
    checks = body.get("checks")
    parts = []
    for name in failing:
        check = checks.get(name) if isinstance(checks, Mapping) else None
        detail = check.get("detail") if isinstance(check, Mapping) else None
        parts.append(f"{name}: {detail}" if detail else name)
    return "; ".join(parts)[:MAX_ERROR_CHARS] or "not ready"
