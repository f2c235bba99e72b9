"""The operator page: an :class:`Overview` rendered as one self-contained HTML document.

Plain string building with :func:`html.escape` on every value that came from elsewhere (model
names, descriptions, feature names, error texts are user or upstream data). No script: the page
reloads itself with ``<meta http-equiv="refresh">``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from gyre_dashboard.domain.health import Health, ServiceHealth
from gyre_dashboard.domain.models import AlertSummary, ModelDrift, ModelQuality, ModelSummary
from gyre_dashboard.domain.overview import Overview, Section
from gyre_dashboard.domain.training import RunOrigin, RunSummary, TrainingJobSummary

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#1d2330;background:#f7f8fa}
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}h3{font-size:1rem;margin:1rem 0 .3rem}
.meta{color:#667;font-size:.85rem}
table{border-collapse:collapse;background:#fff;margin:.3rem 0 .8rem;min-width:30rem}
th,td{border:1px solid #dde1e8;padding:.25rem .55rem;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;border-radius:.7rem;padding:0 .55rem;font-size:.8rem;font-weight:600;
 margin:0 .15rem .1rem 0}
.ready,.ok{background:#d6f5dd;color:#17602a}.not_ready,.warn{background:#fff0c2;color:#7a5600}
.down,.bad{background:#fbd9d9;color:#8a1c1c}.alias{background:#e3e9ff;color:#26408b}.muted{color:#889}
.unknown{background:#fff;border:1px dashed #c9a227;padding:.4rem .7rem;color:#7a5600;margin:.3rem 0}
tr.drifted td{background:#fff4f4}
"""

_HEALTH_LABEL = {Health.READY: "ready", Health.NOT_READY: "not ready", Health.DOWN: "down"}


def e(value: object) -> str:
    """``value`` as text safe inside HTML elements and attribute values."""
    return html.escape(str(value), quote=True)


def fmt_time(value: datetime | None) -> str:
    """``2025-03-01 12:00:05Z`` (UTC, seconds), or an em dash for no time."""
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else "—"


def fmt_number(value: float | None, digits: int = 3) -> str:
    """A number with at most ``digits`` decimals (trailing zeros dropped), or an em dash."""
    if value is None:
        return "—"
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def fmt_share(value: float | None) -> str:
    """A share in [0, 1] as a percentage, or an em dash."""
    return "—" if value is None else f"{value * 100:.1f}%"


def _badge(text: str, kind: str) -> str:
    return f'<span class="badge {e(kind)}">{e(text)}</span>'


def _table(headers: Sequence[str], rows: Iterable[str]) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _cells(*cells: str, numeric: Sequence[int] = ()) -> str:
    """A row of already-escaped cells; indexes in ``numeric`` are right-aligned."""
    return "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                            for i, c in enumerate(cells)) + "</tr>"


def _problem(section: Section[Any], what: str) -> str:
    """The notice of a section that could not be (fully) read; empty when all is well."""
    if not section.error:
        return ""
    lead = "partly unknown" if section.items else "unknown"
    return f'<p class="unknown">{e(what)} {lead}: {e(section.error)}</p>'


def render_services(services: Sequence[ServiceHealth]) -> str:
    """The readiness table."""
    rows = []
    for s in services:
        detail = e(s.detail) if s.detail else '<span class="muted">—</span>'
        latency = fmt_number(s.latency_ms, 1) + " ms" if s.latency_ms is not None else "—"
        rows.append(_cells(f"<strong>{e(s.name)}</strong>", _badge(_HEALTH_LABEL[s.health], s.health.value),
                           detail, latency, f'<span class="muted">{e(s.url)}</span>', numeric=(3,)))
    return _table(["service", "readiness", "detail", "latency", "address"], rows)


def _aliases(aliases: Iterable[str]) -> str:
    return "".join(_badge(a, "alias") for a in aliases) or '<span class="muted">—</span>'


def render_models(section: Section[ModelSummary]) -> str:
    """Models with their aliases and newest versions."""
    parts = [_problem(section, "Models")]
    if section.available and not section.items:
        parts.append('<p class="muted">No registered model yet.</p>')
    for model in section.items:
        alias_text = " ".join(_badge(f"{alias} → v{version}", "alias") for alias, version in model.aliases.items())
        parts.append(f"<h3>{e(model.name)} <span class='muted'>latest v{model.latest_version}</span> {alias_text}</h3>")
        if model.description:
            parts.append(f"<p class='muted'>{e(model.description)}</p>")
        if model.versions_error:
            parts.append(f'<p class="unknown">Versions unknown: {e(model.versions_error)}</p>')
        rows = []
        for v in model.versions:
            metric = v.metrics.get(v.primary_metric) if v.primary_metric else None
            metric_text = f"{e(v.primary_metric)} = {fmt_number(metric, 4)}" if v.primary_metric else "—"
            rows.append(_cells(f"v{v.version}", e(v.status or "—"), _aliases(v.aliases), e(fmt_time(v.created_at)),
                               e(v.created_by or "—"), metric_text))
        if rows:
            parts.append(_table(["version", "status", "aliases", "registered (UTC)", "by", "holdout"], rows))
    return "".join(parts)


def render_drift(section: Section[ModelDrift]) -> str:
    """The latest drift window per model, one row per feature (drifted ones highlighted)."""
    parts = [_problem(section, "Drift")]
    if section.available and not section.items:
        parts.append('<p class="muted">No drift window evaluated yet.</p>')
    for d in section.items:
        verdict = _badge("dataset drift", "bad") if d.dataset_drift else _badge("no dataset drift", "ok")
        drifted = ", ".join(e(f) for f in d.drifted_features) or "none"
        parts.append(
            f"<h3>{e(d.model_name)} v{d.model_version} {verdict}</h3>"
            f"<p class='meta'>window {e(fmt_time(d.window_start))} to {e(fmt_time(d.window_end))}, "
            f"{d.current_rows} predictions, drifted share {fmt_share(d.drift_share)}; drifted: {drifted}</p>")
        rows = []
        for f in d.features:
            cells = _cells(e(f.feature), e(f.test_name or "—"), fmt_number(f.statistic, 4), fmt_number(f.p_value, 4),
                           fmt_number(f.threshold, 4), _badge("drifted", "bad") if f.drifted else _badge("ok", "ok"),
                           numeric=(2, 3, 4))
            rows.append(cells.replace("<tr>", '<tr class="drifted">', 1) if f.drifted else cells)
        if rows:
            parts.append(_table(["feature", "test", "statistic", "p-value", "threshold", "verdict"], rows))
    return "".join(parts)


def render_quality(section: Section[ModelQuality]) -> str:
    """Feedback quality per model version."""
    parts = [_problem(section, "Feedback quality")]
    if section.available and not section.items:
        parts.append('<p class="muted">No prediction with feedback yet.</p>')
    for q in section.items:
        parts.append(f"<h3>{e(q.model_name)}</h3><p class='meta'>predictions from {e(fmt_time(q.window_start))} "
                     f"to {e(fmt_time(q.window_end))}</p>")
        rows = [_cells(f"v{v.model_version}", str(v.predictions), str(v.feedback_count), str(v.labelled_count),
                       fmt_share(v.accuracy), fmt_number(v.mean_stars, 2), fmt_share(v.thumbs_up_rate),
                       fmt_number(v.mean_score), fmt_number(v.bleu), fmt_number(v.rouge_l),
                       numeric=tuple(range(1, 10)))
                for v in q.versions]
        parts.append(_table(["version", "predictions", "feedback", "labelled", "accuracy", "mean stars",
                             "thumbs up", "mean score", "BLEU", "ROUGE-L"], rows))
    return "".join(parts)


def _job_status(job: TrainingJobSummary) -> str:
    kind = {"SUCCEEDED": "ok", "FAILED": "bad", "CANCELLED": "bad"}.get(job.status, "warn")
    return _badge(job.status or "unknown", kind)


def render_jobs(section: Section[TrainingJobSummary]) -> str:
    """Recent training jobs, i.e. retraining requests and their outcome, newest first."""
    parts = [_problem(section, "Retraining")]
    if section.available and not section.items:
        parts.append('<p class="muted">No training request yet.</p>')
    rows = []
    for j in section.items:
        outcome = f"v{j.model_version}" + (" " + _badge("promoted", "ok") if j.promoted else "") \
            if j.model_version else "—"
        rows.append(_cells(e(fmt_time(j.created_at)), e(j.model_name), e(j.reason or "—"), e(j.requested_by or "—"),
                           _job_status(j), str(j.trials_completed), outcome, e(j.error) if j.error else "",
                           numeric=(5,)))
    if rows:
        parts.append(_table(["requested (UTC)", "model", "reason", "by", "status", "trials", "new version", "error"],
                            rows))
    return "".join(parts)


_RUN_STATUS_KIND = {"FINISHED": "ok", "FAILED": "bad", "KILLED": "bad"}
_ORIGIN_KIND = {RunOrigin.TRAINER: "alias", RunOrigin.MLFLOW: "ok", RunOrigin.OTHER: "warn"}


def render_runs(section: Section[RunSummary]) -> str:
    """Recent tracking runs of every experiment, newest first: trainer and MLflow-client runs alike."""
    parts = [_problem(section, "Runs")]
    if section.available and not section.items:
        parts.append('<p class="muted">No tracking run yet.</p>')
    rows = []
    for r in section.items:
        run = f"{e(r.run_name or '—')} <span class='muted'>{e(r.run_id[:8])}</span>"
        experiment = e(r.experiment_name) if r.experiment_name else f"<span class='muted'>#{e(r.experiment_id)}</span>"
        origin = _badge(r.origin.value, _ORIGIN_KIND[r.origin]) + (
            f" <span class='muted'>{e(r.origin_detail)}</span>" if r.origin_detail else "")
        status = _badge(r.status or "unknown", _RUN_STATUS_KIND.get(r.status, "warn"))
        metrics = "<br>".join(f"{e(key)} = {fmt_number(value, 4)}" for key, value in r.metrics.items()) or "—"
        if r.metric_count > len(r.metrics):
            metrics += f" <span class='muted'>(+{r.metric_count - len(r.metrics)} more)</span>"
        rows.append(_cells(e(fmt_time(r.start_time)), run, experiment, origin, status, e(r.user or "—"), metrics))
    if rows:
        parts.append(_table(["started (UTC)", "run", "experiment", "origin", "status", "user", "key metrics"], rows))
    return "".join(parts)


def render_alerts(section: Section[AlertSummary]) -> str:
    """Recent monitor alerts, newest first."""
    parts = [_problem(section, "Alerts")]
    if section.available and not section.items:
        parts.append('<p class="muted">No alert yet.</p>')
    rows = [_cells(e(fmt_time(a.detected_at)), _badge(a.kind or "unknown", "bad"), e(a.model_name),
                   f"v{a.model_version}", fmt_share(a.drift_share) if a.kind == "DRIFT" else "—",
                   ", ".join(e(f) for f in a.drifted_features) or "—")
            for a in section.items]
    if rows:
        parts.append(_table(["detected (UTC)", "kind", "model", "version", "drifted share", "drifted features"], rows))
    return "".join(parts)


def render_page(overview: Overview, refresh_s: int = 5) -> str:
    """The whole operator page; ``refresh_s`` > 0 makes the browser reload it every that many seconds."""
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s > 0 else ""
    ready = sum(s.health is Health.READY for s in overview.services)
    refresh_note = f", refreshes every {int(refresh_s)} s" if refresh_s > 0 else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"{refresh}<title>Gyre dashboard ({ready}/{len(overview.services)} ready)</title><style>{_CSS}</style>"
        "</head><body>"
        "<h1>Gyre operator dashboard</h1>"
        f"<p class='meta'>as of {e(fmt_time(overview.generated_at))} (gathered in "
        f"{fmt_number(overview.duration_ms, 0)} ms{refresh_note}) · "
        "<a href='/api/v1/overview'>JSON</a></p>"
        f"<h2>Services ({ready}/{len(overview.services)} ready)</h2>{render_services(overview.services)}"
        f"<h2>Models</h2>{render_models(overview.models)}"
        f"<h2>Latest drift per feature</h2>{render_drift(overview.drift)}"
        f"<h2>Feedback quality per version</h2>{render_quality(overview.quality)}"
        f"<h2>Retraining requests</h2>{render_jobs(overview.training_jobs)}"
        f"<h2>Recent runs</h2>{render_runs(overview.runs)}"
        f"<h2>Monitor alerts</h2>{render_alerts(overview.alerts)}"
        "</body></html>"
    )
