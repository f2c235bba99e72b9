"""The docs and the code agree where a test can tell: the topics named in docs/architecture.md and
the service skeleton of docs/runtime.md (the files every service has, so knowing one means knowing all)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gyre_common import topics
from gyre_common.service import ServiceSpec, discover_services

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(path for path in (ROOT / "services").iterdir() if (path / "pyproject.toml").exists())

SKELETON = ("service.py", "__main__.py", "settings.py", "bootstrap.py", "api_http.py", "api_grpc.py", "handlers.py")
"""Files every service has (docs/runtime.md, "The service skeleton")."""

WITHOUT_GRPC = {"dashboard"}
"""Services with no gRPC API of their own, so no api_grpc.py: the dashboard only serves web pages
built from the other services' APIs (DESIGN.md, "Services")."""


def _package(service_dir: Path) -> Path:
    return service_dir / "src" / f"gyre_{service_dir.name}"


def _spec(name: str) -> ServiceSpec:
    return {spec.name: spec for spec in discover_services()}[name]


def test_every_topic_constant_is_in_the_architecture_page() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    names = [value for name, value in vars(topics).items() if name.isupper() and isinstance(value, str)
             and name != "DEAD_LETTER_SUFFIX"]
    assert names, "gyre_common.topics names no topic"
    missing = [name for name in names if f"`{name}`" not in page and name not in page]
    assert not missing, f"docs/architecture.md does not name the topics {missing}"
    assert topics.DEAD_LETTER_SUFFIX in page, "docs/architecture.md does not say how dead-letter topics are named"


@pytest.mark.parametrize("service_dir", SERVICES, ids=lambda path: path.name)
def test_every_service_has_the_skeleton(service_dir: Path) -> None:
    package = _package(service_dir)
    spec = _spec(service_dir.name)
    expected = [name for name in SKELETON if not (name == "api_grpc.py" and service_dir.name in WITHOUT_GRPC)]
    missing = [name for name in expected if not (package / name).is_file()]
    if not (package / "domain" / "__init__.py").is_file():
        missing.append("domain/ (a package)")
    if spec.schema:
        if not ((package / "store.py").is_file() or (package / "store" / "__init__.py").is_file()):
            missing.append("store.py or store/")
        if not (package / "migrations" / "__init__.py").is_file():
            missing.append("migrations/ (a package)")
    assert not missing, f"services/{service_dir.name} lacks {missing} (docs/runtime.md, the service skeleton)"
