"""Settings: env prefixes, and start-up errors that name the environment variable to fix."""

from __future__ import annotations

import pytest
from pydantic_settings import SettingsConfigDict

from gyre_common.settings import (
    DatabaseSettings,
    KafkaSettings,
    ServiceSettings,
    SettingsError,
    TelemetrySettings,
    load_settings,
)


class WidgetSettings(ServiceSettings):
    """A service's settings with one required field."""

    model_config = SettingsConfigDict(env_prefix="GYRE_WIDGET_")

    api_token: str
    """Token the widget service presents to its upstream."""

    batch_size: int = 10
    """Records per batch."""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GYRE_WIDGET_API_TOKEN", "GYRE_WIDGET_BATCH_SIZE", "GYRE_WIDGET_HTTP_PORT",
                 "GYRE_HTTP_PORT", "GYRE_KAFKA_BOOTSTRAP_SERVERS", "GYRE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_missing_required_setting_names_the_variable_and_its_purpose() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(WidgetSettings)
    message = str(caught.value)
    assert "missing required setting GYRE_WIDGET_API_TOKEN" in message
    assert "Token the widget service presents" in message
    assert isinstance(caught.value, SystemExit)


def test_invalid_value_names_the_variable_and_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GYRE_WIDGET_API_TOKEN", "t")
    monkeypatch.setenv("GYRE_WIDGET_BATCH_SIZE", "many")
    with pytest.raises(SettingsError) as caught:
        load_settings(WidgetSettings)
    message = str(caught.value)
    assert "invalid setting GYRE_WIDGET_BATCH_SIZE='many'" in message
    assert "Records per batch" in message


def test_service_prefix_applies_to_inherited_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GYRE_WIDGET_API_TOKEN", "t")
    monkeypatch.setenv("GYRE_WIDGET_HTTP_PORT", "7123")
    monkeypatch.setenv("GYRE_HTTP_PORT", "9999")  # the base prefix must not leak into a service
    settings = load_settings(WidgetSettings)
    assert settings.http_port == 7123
    assert WidgetSettings.env_name("grpc_port") == "GYRE_WIDGET_GRPC_PORT"


def test_shared_settings_have_their_own_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GYRE_KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
    monkeypatch.setenv("GYRE_DATABASE_URL", "postgresql://db/gyre")
    assert load_settings(KafkaSettings).bootstrap_servers == "broker:9092"
    assert load_settings(DatabaseSettings).url == "postgresql://db/gyre"
    assert DatabaseSettings.env_name("url") == "GYRE_DATABASE_URL"
    assert TelemetrySettings.env_name("otlp_endpoint") == "GYRE_TELEMETRY_OTLP_ENDPOINT"


def test_every_setting_is_documented() -> None:
    for cls in (ServiceSettings, KafkaSettings, DatabaseSettings, TelemetrySettings, WidgetSettings):
        for name, info in cls.model_fields.items():
            assert (info.description or "").strip(), f"{cls.__name__}.{name} has no docstring"
