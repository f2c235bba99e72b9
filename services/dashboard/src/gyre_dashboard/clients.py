"""Every call the dashboard makes to another service, one method per upstream route.

The other services answer in the proto3 JSON mapping, some with camelCase names (registry), some
with the proto names (monitor, trainer); int64 arrives as a string, enums as their full name, and a
field at its default value is left out. The parsers here accept all of that and fill what is
missing with defaults, so a field added or renamed upstream costs a blank cell, never the page.

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
from typing import Any
from urllib.parse import quote

import httpx

from gyre_dashboard.model import (
    AlertSummary,
    FeatureDriftRow,
    Health,
    ModelDrift,
    ModelQuality,
    ModelSummary,
    RunOrigin,
    RunSummary,
    ServiceHealth,
    TrainingJobSummary,
    UpstreamError,
    VersionQuality,
    VersionSummary,
)

MAX_ERROR_CHARS = 200
"""Longest upstream error text kept (the page shows it; a whole HTML error page would not help)."""

_REGISTRY_PAGE_SIZE = 100

_TRACKING_PAGE_SIZE = 1000
"""Experiments per page of tracking's list (its maximum)."""

MAX_EXPERIMENTS = 10_000
"""Most experiments whose runs are searched: the first by id (tracking lists them by id)."""

KEY_METRICS = 4
"""Metrics shown per run (the page has room for a few; ``metric_count`` says how many there are)."""


# -- tolerant field access ------------------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _get(data: Mapping[str, Any], name: str) -> Any:
    """``data[name]`` under its proto name or its lowerCamelCase JSON name; None when absent."""
    if name in data:
        return data[name]
    return data.get(_camel(name))


def _obj(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = _get(data, name)
    return value if isinstance(value, Mapping) else {}


def _list(data: Mapping[str, Any], name: str) -> list[Any]:
    value = _get(data, name)
    return value if isinstance(value, list) else []


def _str(data: Mapping[str, Any], name: str) -> str:
    value = _get(data, name)
    return value if isinstance(value, str) else "" if value is None else str(value)


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _int(data: Mapping[str, Any], name: str) -> int:
    return _as_int(_get(data, name))


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # also proto3 JSON's "NaN"/"Infinity" would parse; anything else is absent


def _float(data: Mapping[str, Any], name: str, default: float = 0.0) -> float:
    value = _as_float(_get(data, name))
    return default if value is None else value


def _optional_float(data: Mapping[str, Any], name: str) -> float | None:
    return _as_float(_get(data, name))


def _bool(data: Mapping[str, Any], name: str) -> bool:
    value = _get(data, name)
    return value if isinstance(value, bool) else str(value).lower() == "true"


def _time(data: Mapping[str, Any], name: str) -> datetime | None:
    value = _get(data, name)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None  # proto timestamps are always UTC-marked


def _enum(data: Mapping[str, Any], name: str, prefix: str) -> str:
    """An enum's name without its prefix: ``TRAINING_STATUS_FAILED`` -> ``FAILED``."""
    value = _str(data, name)
    return value.removeprefix(prefix) if value else ""


def _metrics(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        return {}
    metrics = {}
    for key, raw in value.items():
        number = _as_float(raw)
        if number is not None:
            metrics[str(key)] = number
    return metrics


# -- parsers (pure; unit-tested with partial and odd payloads) ----------------------------------------


def parse_registered_model(data: Mapping[str, Any]) -> ModelSummary:
    """A registry ``RegisteredModel`` (JSON) without its versions."""
    aliases = {str(alias): _as_int(version) for alias, version in _obj(data, "aliases").items()}
    return ModelSummary(
        name=_str(data, "name"),
        description=_str(data, "description"),
        latest_version=_int(data, "latest_version"),
        aliases=dict(sorted(aliases.items())),
        updated_at=_time(data, "updated_at"),
    )


def parse_model_version(data: Mapping[str, Any]) -> VersionSummary:
    """A registry ``ModelVersion`` (JSON)."""
    lineage = _obj(data, "lineage")
    return VersionSummary(
        version=_int(data, "version"),
        status=_enum(data, "status", "MODEL_VERSION_STATUS_"),
        aliases=tuple(sorted(str(a) for a in _list(data, "aliases"))),
        created_at=_time(data, "created_at"),
        created_by=_str(data, "created_by"),
        primary_metric=_str(_obj(data, "evaluation"), "primary_metric"),
        metrics=_metrics(_get(lineage, "metrics")),
        run_id=_str(lineage, "run_id"),
    )


def parse_feature_drift(data: Mapping[str, Any]) -> FeatureDriftRow:
    """A ``FeatureDrift`` (JSON)."""
    return FeatureDriftRow(
        feature=_str(data, "feature"),
        test_name=_str(data, "test_name"),
        statistic=_float(data, "statistic"),
        p_value=_optional_float(data, "p_value"),
        threshold=_float(data, "threshold"),
        drifted=_bool(data, "drifted"),
    )


def parse_drift(data: Mapping[str, Any], model_name: str) -> ModelDrift:
    """The monitor's latest-window ``DriftReport`` (JSON) of ``model_name``."""
    return ModelDrift(
        model_name=_str(data, "model_name") or model_name,
        model_version=_int(data, "model_version"),
        window_start=_time(data, "window_start"),
        window_end=_time(data, "window_end"),
        current_rows=_int(data, "current_rows"),
        drift_share=_float(data, "drift_share"),
        dataset_drift=_bool(data, "dataset_drift"),
        features=tuple(parse_feature_drift(f) for f in _list(data, "feature_drifts") if isinstance(f, Mapping)),
    )


def parse_quality(data: Mapping[str, Any], model_name: str) -> ModelQuality:
    """The feedback service's ``GetQualityResponse`` (JSON) of ``model_name``."""
    versions = []
    for item in _list(data, "versions"):
        if not isinstance(item, Mapping):
            continue
        versions.append(VersionQuality(
            model_version=_int(item, "model_version"),
            predictions=_int(item, "predictions"),
            feedback_count=_int(item, "feedback_count"),
            labelled_count=_int(item, "labelled_count"),
            accuracy=_optional_float(item, "accuracy"),
            mean_stars=_optional_float(item, "mean_stars"),
            thumbs_up_rate=_optional_float(item, "thumbs_up_rate"),
            mean_score=_optional_float(item, "mean_score"),
            bleu=_optional_float(item, "bleu"),
            rouge_l=_optional_float(item, "rouge_l"),
        ))
    versions.sort(key=lambda v: v.model_version, reverse=True)
    return ModelQuality(
        model_name=_str(data, "model_name") or model_name,
        window_start=_time(data, "window_start"),
        window_end=_time(data, "window_end"),
        versions=tuple(versions),
    )


def parse_training_job(data: Mapping[str, Any]) -> TrainingJobSummary:
    """A trainer ``TrainingJob`` (JSON)."""
    request = _obj(data, "request")
    # The TrainingJob contract: status UNSPECIFIED (left out of the JSON) means queued.
    status = _enum(data, "status", "TRAINING_STATUS_")
    return TrainingJobSummary(
        job_id=_str(data, "job_id"),
        request_id=_str(request, "request_id"),
        model_name=_str(request, "model_name"),
        status="QUEUED" if status in ("", "UNSPECIFIED") else status,
        reason=_enum(request, "reason", "TRAINING_REASON_"),
        requested_by=_str(request, "requested_by"),
        created_at=_time(data, "created_at") or _time(request, "requested_at"),
        finished_at=_time(data, "finished_at"),
        trials_completed=_int(data, "trials_completed"),
        model_version=_int(data, "model_version"),
        promoted=_bool(data, "promoted"),
        error=_str(data, "error"),
    )


def parse_alert(data: Mapping[str, Any]) -> AlertSummary:
    """A ``MonitorAlert`` (JSON)."""
    drifts = [parse_feature_drift(f) for f in _list(data, "feature_drifts") if isinstance(f, Mapping)]
    return AlertSummary(
        alert_id=_str(data, "alert_id"),
        kind=_enum(data, "kind", "ALERT_KIND_"),
        model_name=_str(data, "model_name"),
        model_version=_int(data, "model_version"),
        detected_at=_time(data, "detected_at"),
        drift_share=_float(data, "drift_share"),
        drifted_features=tuple(d.feature for d in drifts if d.drifted),
    )


def _pairs(value: Any) -> dict[str, Any]:
    """``[{"key": k, "value": v}, ...]`` (tracking's tags and metrics) or a plain mapping as a dict."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    pairs: dict[str, Any] = {}
    if isinstance(value, list):
        for item in value:
            if isinstance(item, Mapping) and isinstance(item.get("key"), str):
                pairs[item["key"]] = item.get("value")
    return pairs


def _origin(tags: Mapping[str, str]) -> tuple[RunOrigin, str]:
    """Who logged a run, and a short "where from", told by its tags."""
    job_id = tags.get("gyre.job_id", "")
    if job_id or any(key.startswith("gyre.") for key in tags):
        trial = tags.get("gyre.trial", "")
        where = f"trial {trial}" if trial else "search"
        return RunOrigin.TRAINER, f"job {job_id[:8]}, {where}" if job_id else where
    if "mlflow.user" in tags or any(key.startswith("mlflow.source.") for key in tags):
        source = tags.get("mlflow.source.name", "")
        # A path to a script or notebook: its last part says enough in a table cell.
        return RunOrigin.MLFLOW, source.rstrip("/").rsplit("/", 1)[-1][:80]
    return RunOrigin.OTHER, ""


def _key_metrics(metrics: Mapping[str, float], objective: str) -> dict[str, float]:
    """The :data:`KEY_METRICS` most telling metrics: the objective's, holdout, validation, the rest."""
    objective_keys = {objective, f"holdout_{objective}", f"val_{objective}"} if objective else set()

    def rank(key: str) -> tuple[int, str]:
        if key in objective_keys:
            return 0, key
        if key.startswith("holdout_"):
            return 1, key
        if key.startswith("val_"):
            return 2, key
        return 3, key

    return {key: metrics[key] for key in sorted(metrics, key=rank)[:KEY_METRICS]}


def parse_run(data: Mapping[str, Any], experiment_names: Mapping[str, str] | None = None) -> RunSummary:
    """A tracking ``Run`` (JSON), its experiment named from ``experiment_names`` (id -> name)."""
    info = _obj(data, "info")
    run_data = _obj(data, "data")
    tags = {key: str(value) for key, value in _pairs(_get(run_data, "tags")).items() if value is not None}
    metrics = {key: number for key, raw in _pairs(_get(run_data, "metrics")).items()
               if (number := _as_float(raw)) is not None}
    origin, detail = _origin(tags)
    status = _enum(info, "status", "RUN_STATUS_")
    experiment_id = _str(info, "experiment_id")
    return RunSummary(
        run_id=_str(info, "run_id"),
        run_name=_str(info, "run_name") or tags.get("mlflow.runName", ""),
        experiment_id=experiment_id,
        experiment_name=(experiment_names or {}).get(experiment_id, ""),
        status="" if status == "UNSPECIFIED" else status,
        start_time=_time(info, "start_time"),
        end_time=_time(info, "end_time"),
        user=_str(info, "user") or tags.get("mlflow.user", ""),
        origin=origin,
        origin_detail=detail,
        parent_run_id=tags.get("mlflow.parentRunId", ""),
        metrics=_key_metrics(metrics, tags.get("gyre.objective_metric", "")),
        metric_count=len(metrics),
    )


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
            body = await self._get_json("registry", "/api/v1/registered-models", params)
            if not isinstance(body, Mapping):
                raise UpstreamError("registry", "registered models: not a JSON object")
            models.extend(parse_registered_model(m) for m in _list(body, "registered_models")
                          if isinstance(m, Mapping))
            token = _str(body, "next_page_token")
            if not token:
                break
        return [m for m in models if m.name][:limit]

    async def registry_versions(self, model_name: str, limit: int) -> list[VersionSummary]:
        """The ``limit`` newest versions of ``model_name`` (archived ones too), newest first."""
        body = await self._get_json("registry", f"/api/v1/registered-models/{quote(model_name, safe='')}/versions",
                                    {"page_size": limit, "include_archived": "true"})
        if not isinstance(body, Mapping):
            raise UpstreamError("registry", "model versions: not a JSON object")
        versions = [parse_model_version(v) for v in _list(body, "model_versions") if isinstance(v, Mapping)]
        return sorted(versions, key=lambda v: v.version, reverse=True)[:limit]

    async def monitor_latest_drift(self, model_name: str) -> ModelDrift | None:
        """Drift per feature of the monitor's latest evaluated window of ``model_name``; None if none yet."""
        body = await self._get_json("monitor", f"/api/v1/models/{quote(model_name, safe='')}/drift", missing_ok=True)
        if body is None:
            return None
        if not isinstance(body, Mapping):
            raise UpstreamError("monitor", "drift: not a JSON object")
        return parse_drift(body, model_name)

    async def monitor_alerts(self, limit: int) -> list[AlertSummary]:
        """The ``limit`` newest monitor alerts, newest first."""
        body = await self._get_json("monitor", "/api/v1/alerts", {"limit": limit})
        if not isinstance(body, Mapping):
            raise UpstreamError("monitor", "alerts: not a JSON object")
        return [parse_alert(a) for a in _list(body, "alerts") if isinstance(a, Mapping)][:limit]

    async def feedback_quality(self, model_name: str, window_start: datetime) -> ModelQuality | None:
        """Quality per version of ``model_name`` over predictions since ``window_start`` (UTC);
        None when the feedback service has seen no prediction of the model."""
        body = await self._get_json(
            "feedback", f"/api/v1/models/{quote(model_name, safe='')}/quality",
            {"window_start": window_start.isoformat().replace("+00:00", "Z")}, missing_ok=True)
        if body is None:
            return None
        if not isinstance(body, Mapping):
            raise UpstreamError("feedback", "quality: not a JSON object")
        return parse_quality(body, model_name)

    async def trainer_jobs(self, limit: int) -> list[TrainingJobSummary]:
        """The ``limit`` newest training jobs (each answers one retraining request), newest first."""
        body = await self._get_json("trainer", "/v1/jobs", {"page_size": limit})
        if not isinstance(body, Mapping):
            raise UpstreamError("trainer", "jobs: not a JSON object")
        return [parse_training_job(j) for j in _list(body, "jobs") if isinstance(j, Mapping)][:limit]

    async def tracking_experiments(self) -> dict[str, str]:
        """Active experiments of tracking, id -> name, by id (at most :data:`MAX_EXPERIMENTS`)."""
        names: dict[str, str] = {}
        token = ""
        while len(names) < MAX_EXPERIMENTS:
            params: dict[str, str | int] = {"page_size": _TRACKING_PAGE_SIZE}
            if token:
                params["page_token"] = token
            body = await self._get_json("tracking", "/api/v1/experiments", params)
            if not isinstance(body, Mapping):
                raise UpstreamError("tracking", "experiments: not a JSON object")
            for item in _list(body, "experiments"):
                if isinstance(item, Mapping) and (experiment_id := _str(item, "experiment_id")):
                    names[experiment_id] = _str(item, "name")
            token = _str(body, "next_page_token")
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
        if not isinstance(body, Mapping):
            raise UpstreamError("tracking", "runs: not a JSON object")
        runs = [parse_run(r, experiments) for r in _list(body, "runs") if isinstance(r, Mapping)]
        # Tracking sorts already; sorting again (stable, unknown start last) keeps "newest first"
        # true whatever the upstream does.
        runs.sort(key=lambda r: r.start_time.timestamp() if r.start_time else float("-inf"), reverse=True)
        return runs[:limit]


def _failing_detail(body: Mapping[str, Any], failing: tuple[str, ...]) -> str:
    """``database: ConnectionRefusedError ...; broker: ...`` from a ``/readyz`` body."""
    checks = body.get("checks")
    parts = []
    for name in failing:
        check = checks.get(name) if isinstance(checks, Mapping) else None
        detail = check.get("detail") if isinstance(check, Mapping) else None
        parts.append(f"{name}: {detail}" if detail else name)
    return "; ".join(parts)[:MAX_ERROR_CHARS] or "not ready"
