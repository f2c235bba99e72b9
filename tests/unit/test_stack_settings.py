"""Settings of the embedded stack and how it plans the services it starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import SettingsConfigDict

from gyre_common.service import ServiceSpec
from gyre_common.settings import ServiceSettings, SettingsError, load_settings
from gyre_stack import services as services_module
from gyre_stack.errors import StackError
from gyre_stack.prepare import dead_letter_groups
from gyre_stack.services import load_extra_service, plan_service
from gyre_stack.settings import StackSettings
from gyre_stack.state import ProcessRecord, StackState
from gyre_stack.up import check_same_database, external_database_url


class DemoSettings(ServiceSettings):
    """Settings of a demo service."""

    model_config = SettingsConfigDict(env_prefix="GYRE_DEMO_")

    http_port: int = 7900
    """HTTP port."""

    grpc_port: int = 7901
    """gRPC port."""


DEMO = ServiceSpec(name="demo", settings=DemoSettings, module="demo", consumes=("features.events",))
NOT_A_SPEC = "just a string"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GYRE_HOME", "GYRE_DATABASE_URL", "GYRE_DEMO_HTTP_PORT", "GYRE_DEMO_GRPC_PORT",
                 "GYRE_DEMO_HTTP_HOST", "GYRE_STACK_POSTGRES_PORT", "GYRE_STACK_SERVICES"):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = StackSettings()
    assert (settings.home, settings.broker_port, settings.postgres_port) == (Path(".gyre"), 9092, 7432)
    assert settings.home_dir == Path.cwd() / ".gyre"
    assert settings.service_selection() is None and settings.extra_service_refs() == []


def test_home_comes_from_gyre_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GYRE_HOME", str(tmp_path))
    assert StackSettings().home_dir == tmp_path
    assert StackSettings.env_name("home") == "GYRE_HOME"
    assert StackSettings.env_name("broker_port") == "GYRE_STACK_BROKER_PORT"


def test_postgres_never_takes_5432(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GYRE_STACK_POSTGRES_PORT", "5432")
    with pytest.raises(SettingsError, match="GYRE_STACK_POSTGRES_PORT"):
        load_settings(StackSettings)


def test_database_name_must_be_a_plain_identifier() -> None:
    with pytest.raises(SettingsError, match="GYRE_STACK_DATABASE"):
        load_settings(StackSettings, database="gyre'; DROP")


@pytest.mark.parametrize(("value", "chosen"), [("all", None), ("none", set()), (" a, b ,", {"a", "b"})])
def test_service_selection(value: str, chosen: set[str] | None) -> None:
    assert StackSettings(services=value).service_selection() == chosen


def test_extra_service_refs() -> None:
    assert StackSettings(extra_services=" a.b:SPEC, ,c:X").extra_service_refs() == ["a.b:SPEC", "c:X"]


def test_external_database_only_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert external_database_url() is None
    monkeypatch.setenv("GYRE_DATABASE_URL", "postgresql://me:secret@db:5432/gyre")
    assert external_database_url() == "postgresql://me:secret@db:5432/gyre"


def test_plan_uses_the_service_settings_and_passes_broker_and_database() -> None:
    plan = plan_service(DEMO, "127.0.0.1:1234", "postgresql://postgres@127.0.0.1:5555/gyre")
    assert (plan.http_url, plan.grpc_address) == ("http://127.0.0.1:7900", "127.0.0.1:7901")
    assert plan.ready_url == "http://127.0.0.1:7900/readyz"
    assert plan.env_overrides["GYRE_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:1234"
    assert plan.env_overrides["GYRE_DATABASE_URL"] == "postgresql://postgres@127.0.0.1:5555/gyre"
    assert "GYRE_DEMO_HTTP_PORT" not in plan.env_overrides


def test_plan_honours_env_ports_and_fills_port_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GYRE_DEMO_HTTP_PORT", "8111")
    monkeypatch.setenv("GYRE_DEMO_GRPC_PORT", "0")
    monkeypatch.setenv("GYRE_DEMO_HTTP_HOST", "0.0.0.0")
    monkeypatch.setattr(services_module, "free_port", lambda: 45678)
    plan = plan_service(DEMO, "b:1", "postgresql://d")
    assert plan.http_url == "http://127.0.0.1:8111"
    assert plan.grpc_port == 45678 and plan.env_overrides["GYRE_DEMO_GRPC_PORT"] == "45678"


def test_extra_service_is_loaded_by_reference() -> None:
    assert load_extra_service(f"{__name__}:DEMO") is DEMO


@pytest.mark.parametrize(("ref", "message"), [
    ("no_colon", "must look like"),
    ("no_such_module_xyz:SPEC", "cannot load"),
    (f"{__name__}:MISSING", "cannot load"),
    (f"{__name__}:NOT_A_SPEC", "not a ServiceSpec"),
])
def test_bad_extra_service_is_a_clear_error(ref: str, message: str) -> None:
    with pytest.raises(StackError, match=message):
        load_extra_service(ref)


def test_only_consuming_services_get_dead_letter_topics() -> None:
    producer = ServiceSpec(name="producer", settings=DemoSettings, module="p", produces=("features.events",))
    assert dead_letter_groups([DEMO, producer]) == ["demo"]


def _running(database_url: str, external: bool) -> StackState:
    broker = ProcessRecord(name="broker", kind="broker", pid=1, create_time=0.0, log="x")
    return StackState(database_url=database_url, external_database=external, processes={"broker": broker})


def test_a_running_stack_keeps_its_database() -> None:
    embedded = _running("postgresql://postgres@127.0.0.1:7432/gyre", external=False)
    check_same_database(embedded, None)
    with pytest.raises(StackError, match="run `gyre-stack down` first"):
        check_same_database(embedded, "postgresql://me@db/gyre")

    external = _running("postgresql://me:***@db/gyre", external=True)
    check_same_database(external, "postgresql://me:secret@db/gyre")
    with pytest.raises(StackError, match="embedded PostgreSQL"):
        check_same_database(external, None)
    with pytest.raises(StackError, match="other"):
        check_same_database(external, "postgresql://me:secret@other/gyre")
    check_same_database(StackState(), "postgresql://anything")
