"""The operator page rendered from fixed overviews: content, escaping, unknown parts, refresh."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from gyre_dashboard.domain.health import Health, ServiceHealth
from gyre_dashboard.domain.models import (
    AlertSummary,
    FeatureDriftRow,
    ModelDrift,
    ModelQuality,
    ModelSummary,
    VersionQuality,
    VersionSummary,
)
from gyre_dashboard.domain.overview import Overview, Section
from gyre_dashboard.domain.training import RunOrigin, RunSummary, TrainingJobSummary
from gyre_dashboard.render import fmt_number, fmt_share, fmt_time, render_page

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EVIL = "<script>alert('x')</script>"


def overview(**parts: object) -> Overview:
    defaults: dict[str, object] = {
        "generated_at": NOW,
        "services": (ServiceHealth("registry", "http://127.0.0.1:7400", Health.READY, latency_ms=3.2),
                     ServiceHealth("monitor", "http://127.0.0.1:7700", Health.NOT_READY, ("broker",), "broker: down"),
                     ServiceHealth("trainer", "http://127.0.0.1:7300", Health.DOWN, detail="unreachable")),
        "models": Section("registry", (
            ModelSummary("churn", "who leaves", 2, {"challenger": 2, "production": 1}, NOW,
                         (VersionSummary(2, "READY", ("challenger",), NOW, "trainer", "holdout_accuracy",
                                         {"holdout_accuracy": 0.9132}),
                          VersionSummary(1, "READY", ("production",), NOW - timedelta(days=1), "trainer"))),)),
        "drift": Section("monitor", (
            ModelDrift("churn", 1, NOW - timedelta(minutes=5), NOW, 300, 0.5, True,
                       (FeatureDriftRow("tenure_months", "ks", 0.41, 0.0012, 0.05, True),
                        FeatureDriftRow("plan", "chisquare", 1.1, 0.6, 0.05, False))),)),
        "quality": Section("feedback", (
            ModelQuality("churn", NOW - timedelta(hours=24), NOW,
                         (VersionQuality(2, 40, 6, 5, accuracy=0.8, mean_stars=4.25),
                          VersionQuality(1, 100, 10, 8, accuracy=0.625))),)),
        "training_jobs": Section("trainer", (
            TrainingJobSummary("j1", "r1", "churn", "SUCCEEDED", "DRIFT", "monitor", NOW, NOW, 12, 2, True),
            TrainingJobSummary("j2", "r2", "churn", "FAILED", "MANUAL", "alice", NOW, NOW, 0, 0, False,
                               "no rows in window"))),
        "alerts": Section("monitor", (AlertSummary("a1", "DRIFT", "churn", 1, NOW, 0.5, ("tenure_months",)),)),
        "runs": Section("tracking", (
            RunSummary("0123456789abcdef" * 2, "trial-3", "1", "gyre/churn", "FINISHED", NOW, NOW, "gyre-trainer",
                       RunOrigin.TRAINER, "job j1, trial 3", metrics={"val_f1": 0.71234, "val_accuracy": 0.8},
                       metric_count=5),
            RunSummary("fedcba9876543210" * 2, "bold-owl", "0", "", "RUNNING", NOW - timedelta(minutes=1), None,
                       "alice", RunOrigin.MLFLOW, "train.py", metrics={"rmse": 0.5}, metric_count=1))),
    }
    defaults.update(parts)
    return Overview(**defaults)  # type: ignore[arg-type]


class _Checker(HTMLParser):
    """Collects the tags and the text of a page (and fails on nothing: HTMLParser is lenient)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.scripts += tag == "script"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def text_of(page: str) -> str:
    checker = _Checker()
    checker.feed(page)
    return " ".join(" ".join(checker.text).split())


def test_the_page_shows_services_models_aliases_drift_quality_and_retraining() -> None:
    page = render_page(overview(), refresh_s=5)
    text = text_of(page)
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "Services (1/3 ready)" in text
    assert re.search(r"registry ready .* 3\.2 ms", text)
    assert "monitor not ready broker: down" in text and "trainer down unreachable" in text
    assert "churn latest v2 challenger → v2 production → v1" in text
    assert "v2 READY challenger 2025-03-01 12:00:00Z trainer holdout_accuracy = 0.9132" in text
    assert "drifted: tenure_months" in text and "50.0%" in text and "dataset drift" in text
    assert '<tr class="drifted"><td>tenure_months</td>' in page
    assert "v2 40 6 5 80.0% 4.25" in text and "62.5%" in text
    assert "churn DRIFT monitor SUCCEEDED 12 v2 promoted" in text
    assert "FAILED 0 — no rows in window" in text
    assert "DRIFT churn v1 50.0% tenure_months" in text
    assert ("2025-03-01 12:00:00Z trial-3 01234567 gyre/churn trainer job j1, trial 3 FINISHED gyre-trainer "
            "val_f1 = 0.7123 val_accuracy = 0.8 (+3 more)") in text
    assert "2025-03-01 11:59:00Z bold-owl fedcba98 #0 mlflow train.py RUNNING alice rmse = 0.5" in text


def test_user_strings_are_escaped_everywhere() -> None:
    evil_model = ModelSummary(EVIL, description=EVIL, latest_version=1, aliases={EVIL: 1},
                              versions=(VersionSummary(1, EVIL, (EVIL,), created_by=EVIL, primary_metric=EVIL),),
                              versions_error=EVIL)
    page = render_page(overview(
        services=(ServiceHealth(EVIL, EVIL, Health.DOWN, detail=EVIL),),
        models=Section("registry", (evil_model,), EVIL),
        drift=Section("monitor", (ModelDrift(EVIL, 1, features=(FeatureDriftRow(EVIL, EVIL, drifted=True),)),)),
        quality=Section("feedback", (ModelQuality(EVIL),)),
        training_jobs=Section("trainer", (TrainingJobSummary(EVIL, EVIL, EVIL, EVIL, EVIL, EVIL, error=EVIL),)),
        alerts=Section("monitor", (AlertSummary(EVIL, EVIL, EVIL, drifted_features=(EVIL,)),)),
        runs=Section("tracking", (RunSummary(EVIL, EVIL, EVIL, EVIL, EVIL, user=EVIL, origin_detail=EVIL,
                                             metrics={EVIL: 1.0}),
                                  RunSummary(EVIL, experiment_id=EVIL)), EVIL),
    ))
    checker = _Checker()
    checker.feed(page)
    assert checker.scripts == 0 and "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert EVIL in " ".join(checker.text)  # shown as text, not run


def test_unreachable_sources_show_as_unknown_and_partial_ones_say_so() -> None:
    page = render_page(overview(
        models=Section("registry", (), "registry: unreachable (connection refused)"),
        drift=Section("monitor", (), "needs the model list from the registry, which is unavailable"),
        training_jobs=Section("trainer", (TrainingJobSummary("j1", model_name="churn"),), "trainer: slow"),
        runs=Section("tracking", (), "tracking: unreachable (connection refused)"),
    ))
    text = text_of(page)
    assert "Models unknown: registry: unreachable (connection refused)" in text
    assert "Drift unknown: needs the model list from the registry" in text
    assert "Retraining partly unknown: trainer: slow" in text
    assert "Recent runs Runs unknown: tracking: unreachable (connection refused)" in text
    assert "Monitor alerts detected (UTC) kind model" in text  # the rest of the page still renders
    assert "No registered model yet" not in text


def test_empty_but_available_sections_say_there_is_nothing_yet() -> None:
    text = text_of(render_page(overview(models=Section("registry"), drift=Section("monitor"),
                                        quality=Section("feedback"), training_jobs=Section("trainer"),
                                        alerts=Section("monitor"), runs=Section("tracking"))))
    for line in ("No registered model yet.", "No drift window evaluated yet.", "No prediction with feedback yet.",
                 "No training request yet.", "No alert yet.", "No tracking run yet."):
        assert line in text


def test_refresh_can_be_turned_off() -> None:
    assert "http-equiv" not in render_page(overview(), refresh_s=0)


def test_formatting() -> None:
    assert fmt_time(None) == "—" and fmt_time(NOW) == "2025-03-01 12:00:00Z"
    assert (fmt_number(None), fmt_number(0.5), fmt_number(2.0), fmt_number(-0.0001)) == ("—", "0.5", "2", "0")
    assert (fmt_share(None), fmt_share(0.125)) == ("—", "12.5%")
