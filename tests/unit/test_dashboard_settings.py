"""Dashboard settings: the documented defaults, URL checks, and the environment names."""

from __future__ import annotations

import pytest

from gyre_common.settings import SettingsError, load_settings
from gyre_dashboard.service import SPEC
from gyre_dashboard.settings import UPSTREAMS, DashboardSettings


def test_defaults_follow_the_design_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in UPSTREAMS:
        monkeypatch.delenv(DashboardSettings.env_name(f"{name}_url"), raising=False)
    settings = DashboardSettings()
    assert (settings.http_port, settings.grpc_port) == (7000, 7001)
    assert settings.upstream_urls() == {
        "tracking": "http://127.0.0.1:7100", "features": "http://127.0.0.1:7200",
        "trainer": "http://127.0.0.1:7300", "registry": "http://127.0.0.1:7400",
        "serving": "http://127.0.0.1:8080", "feedback": "http://127.0.0.1:7600",
        "monitor": "http://127.0.0.1:7700"}
    assert settings.recent_runs == 20
    assert SPEC.schema is None and SPEC.consumes == () and SPEC.produces == ()


def test_urls_come_from_the_environment_without_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GYRE_DASHBOARD_REGISTRY_URL", " http://registry:7400/ ")
    assert load_settings(DashboardSettings).registry_url == "http://registry:7400"


def test_a_url_without_scheme_stops_start_up_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GYRE_DASHBOARD_MONITOR_URL", "monitor:7700")
    with pytest.raises(SettingsError, match="GYRE_DASHBOARD_MONITOR_URL"):
        load_settings(DashboardSettings)


def test_the_runs_limit_comes_from_the_environment_within_tracking_page_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GYRE_DASHBOARD_RECENT_RUNS", "50")
    assert load_settings(DashboardSettings).recent_runs == 50
    monkeypatch.setenv("GYRE_DASHBOARD_RECENT_RUNS", "1001")
    with pytest.raises(SettingsError, match="GYRE_DASHBOARD_RECENT_RUNS"):
        load_settings(DashboardSettings)
