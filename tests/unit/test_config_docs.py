"""docs/configuration.md is generated from the settings classes: it must be current and complete."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from gyre_common.service import ServiceSpec, discover_services
from gyre_common.settings import GyreSettings, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> ModuleType:
    path = ROOT / "scripts" / "generate_config_docs.py"
    spec = importlib.util.spec_from_file_location("generate_config_docs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
SECTIONS = gen.all_sections()


def test_reference_is_current() -> None:
    expected = gen.render(SECTIONS)
    current = gen.OUTPUT.read_text(encoding="utf-8") if gen.OUTPUT.exists() else ""
    assert current == expected, "docs/configuration.md is stale: run `make docs`"
    assert gen.main(["--check"]) == 0


def test_reference_covers_shared_stack_and_services() -> None:
    documented = {section.settings.__name__ for section in SECTIONS}
    assert {"KafkaSettings", "DatabaseSettings", "TelemetrySettings"} <= documented
    # Base classes carry no prefix of their own and are documented through their subclasses.
    assert not documented & {"GyreSettings", "ServiceSettings"}
    if importlib.util.find_spec("gyre_stack.settings") is not None:
        assert "StackSettings" in documented
    services = [section.service.name for section in SECTIONS if section.service is not None]
    assert services == [spec.name for spec in discover_services()]


@pytest.mark.parametrize("section", SECTIONS, ids=lambda section: section.settings.__name__)
def test_every_setting_has_a_docstring(section: object) -> None:
    assert gen.undocumented(section) == []


def test_every_variable_is_declared_once() -> None:
    owners: dict[str, str] = {}
    for section in SECTIONS:
        for env in gen.env_names(section).values():
            assert env not in owners, f"{env} is declared by {owners[env]} and {section.settings.__name__}"
            owners[env] = section.settings.__name__


def test_service_prefix_is_its_name() -> None:
    wrong = {spec.name: spec.settings.model_config.get("env_prefix") for spec in discover_services()
             if spec.settings.model_config.get("env_prefix") != f"GYRE_{spec.name.upper()}_"}
    assert wrong == {}


# --- the generator itself, on a toy service that is not installed ---------------------------------------


class _ToySettings(ServiceSettings):
    """A toy service."""

    model_config = SettingsConfigDict(env_prefix="GYRE_TOY_")

    token: str
    """Bearer token | kept secret."""

    tags: list[str] = Field(default_factory=lambda: ["a", "b"])
    """Tags."""

    enabled: bool = True
    """Whether it runs."""

    undocumented_knob: int = 3


def _toy_section() -> object:
    spec = ServiceSpec(name="toy", settings=_ToySettings, module="gyre_toy", consumes=("inference.events",))
    return gen.SettingsSection(gen.SERVICES_GROUP, _ToySettings, spec)


def test_an_undocumented_setting_is_reported() -> None:
    assert gen.undocumented(_toy_section()) == ["GYRE_TOY_UNDOCUMENTED_KNOB"]

    class Bare(GyreSettings):
        model_config = SettingsConfigDict(env_prefix="GYRE_BARE_")

    bare = gen.SettingsSection("Shared settings", Bare)
    assert gen.undocumented(bare) == [f"class {Bare.__module__}.{Bare.__qualname__}"]


def test_rendered_rows() -> None:
    text = gen.render([_toy_section()])
    assert "| `GYRE_TOY_TOKEN` | `str` | *required* | Bearer token \\| kept secret. |" in text
    assert '| `GYRE_TOY_TAGS` | `list[str]` | `["a", "b"]` | Tags. |' in text
    assert "| `GYRE_TOY_ENABLED` | `bool` | `true` | Whether it runs. |" in text
    assert "| `GYRE_TOY_HTTP_HOST` | `str` | `127.0.0.1` |" in text  # inherited from ServiceSettings
    assert "Runs as `python -m gyre_toy`. Consumes `inference.events`." in text
    assert gen.render([_toy_section()]) == text


def test_type_spelling() -> None:
    from typing import Literal

    assert gen.format_type(str | None) == "str | None"
    assert gen.format_type(Literal["a", "b"]) == '"a" | "b"'
    assert gen.format_type(dict[str, int]) == "dict[str, int]"
