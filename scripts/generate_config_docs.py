#!/usr/bin/env python3
"""Write docs/configuration.md from Gyre's settings classes; ``--check`` fails when it is stale.

Sources, in this order:

* shared settings: every ``GyreSettings`` subclass with its own env prefix defined in ``gyre_common``
  (Kafka, database, telemetry, artifacts, ...);
* the embedded stack's settings from ``gyre_stack`` (``StackSettings``), when that package is installed;
* every installed service's settings class, found through ``gyre_common.service.discover_services``.

The table text comes from the field docstrings (``use_attribute_docstrings``), so the documentation
cannot drift from the code. Output depends only on the installed packages, never on the environment
or the clock, so ``--check`` is deterministic.

Usage::

    python scripts/generate_config_docs.py            # rewrite docs/configuration.md
    python scripts/generate_config_docs.py --check    # exit 1 when the file differs
"""

from __future__ import annotations

import argparse
import ast
import enum
import importlib
import importlib.util
import inspect
import json
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from gyre_common.service import ServiceSpec, discover_services
from gyre_common.settings import GyreSettings, ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "configuration.md"

#: Library packages scanned for settings classes, with the heading their classes go under.
LIBRARY_GROUPS: tuple[tuple[str, str], ...] = (
    ("gyre_common", "Shared settings"),
    ("gyre_stack", "Embedded development stack (`make up`)"),
)
SERVICES_GROUP = "Services"


@dataclass(frozen=True)
class SettingsSection:
    """One settings class as it appears in the reference.

    Attributes:
        group: heading the class is listed under (shared, stack or services).
        settings: the settings class.
        service: the service that owns the class, for service settings; None otherwise.
    """

    group: str
    settings: type[GyreSettings]
    service: ServiceSpec | None = None

    @property
    def prefix(self) -> str:
        return str(self.settings.model_config.get("env_prefix") or "")

    @property
    def title(self) -> str:
        if self.service is not None:
            return f"{self.service.name} (`{self.settings.__name__}`)"
        return f"`{self.settings.__name__}`"


def _defines_settings_class(path: Path) -> bool:
    """Whether the module at ``path`` defines a class deriving from a ``*Settings`` class.

    Read with ``ast`` rather than imported so that we import only the modules that matter.
    """
    source = path.read_text(encoding="utf-8")
    if "Settings" not in source:
        return False
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                if name.endswith("Settings"):
                    return True
    return False


def _package_modules(package: str) -> Iterator[str]:
    """Names of the modules of ``package`` that define settings classes, sorted; none if not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return
    names: set[str] = set()
    for location in spec.submodule_search_locations:
        base = Path(location)
        for path in base.rglob("*.py"):
            if _defines_settings_class(path):
                parts = path.relative_to(base).with_suffix("").parts
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                names.add(".".join((package, *parts)))
    # The package's own settings module first: it holds the classes every process uses.
    yield from sorted(names, key=lambda name: (name != f"{package}.settings", name))


def _is_documented_library_class(obj: object, module: str) -> bool:
    """A concrete settings class of a library: own env prefix, not a service's base class."""
    return (
        inspect.isclass(obj)
        and issubclass(obj, GyreSettings)
        and obj.__module__ == module
        and not issubclass(obj, ServiceSettings)
        # GyreSettings itself only carries the generic "GYRE_" prefix.
        and obj.model_config.get("env_prefix") not in (None, "", "GYRE_")
    )


def library_sections() -> list[SettingsSection]:
    """Settings classes of the shared libraries, in module order then source order."""
    sections: list[SettingsSection] = []
    for package, group in LIBRARY_GROUPS:
        for module_name in _package_modules(package):
            module = importlib.import_module(module_name)
            classes = [obj for obj in vars(module).values() if _is_documented_library_class(obj, module_name)]
            classes.sort(key=lambda cls: inspect.getsourcelines(cls)[1])
            sections.extend(SettingsSection(group, cls) for cls in classes)
    return sections


def service_sections() -> list[SettingsSection]:
    """One section per installed service, sorted by service name."""
    return [SettingsSection(SERVICES_GROUP, spec.settings, spec) for spec in discover_services()]


def all_sections() -> list[SettingsSection]:
    """Every settings class the reference documents."""
    return library_sections() + service_sections()


def env_names(section: SettingsSection) -> dict[str, str]:
    """Field name -> environment variable, for every field of the section's class."""
    return {name: section.settings.env_name(name) for name in section.settings.model_fields}


def format_type(annotation: Any) -> str:
    """A short, readable spelling of a field's type (``str | None``, ``'a' | 'b'``, ``list[str]``)."""
    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(format_type(arg) for arg in args)
    if origin is typing.Literal:
        return " | ".join(json.dumps(arg) for arg in args)
    if origin is typing.Annotated:
        return format_type(args[0])
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return " | ".join(json.dumps(member.value) for member in annotation)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(format_type(arg) for arg in args)}]"
    if inspect.isclass(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def format_default(field: FieldInfo) -> str:
    """The default as it would be written in the environment, or *required*."""
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "*required*"
    else:
        value = field.default
    if value is None:
        return "*unset*"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        text = json.dumps(sorted(value) if isinstance(value, (set, frozenset)) else value)
    else:
        text = str(value)
    if text == "":
        return '`""`'
    return f"`{text}`"


def _cell(text: str) -> str:
    """Text made safe for one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def field_description(field: FieldInfo) -> str:
    """The field's docstring (its pydantic description), whitespace collapsed."""
    return " ".join((field.description or "").split())


def undocumented(section: SettingsSection) -> list[str]:
    """Environment variables of the section whose field has no docstring (plus the class, if it has none)."""
    missing = [env for name, env in env_names(section).items()
               if not field_description(section.settings.model_fields[name])]
    # ``__doc__`` is never inherited by a class, so this sees the class's own docstring only.
    if not (section.settings.__doc__ or "").strip():
        missing.insert(0, f"class {section.settings.__module__}.{section.settings.__qualname__}")
    return missing


def render_section(section: SettingsSection) -> list[str]:
    cls = section.settings
    lines = [f"### {section.title}", ""]
    doc = " ".join(inspect.cleandoc(cls.__doc__ or "").split())
    if doc:
        lines += [doc, ""]
    spec = section.service
    if spec is not None:
        facts = [f"Runs as `python -m {spec.module}`."]
        if spec.schema:
            facts.append(f"Owns the PostgreSQL schema `{spec.schema}`.")
        if spec.consumes:
            facts.append("Consumes " + ", ".join(f"`{topic}`" for topic in spec.consumes) + ".")
        if spec.produces:
            facts.append("Produces " + ", ".join(f"`{topic}`" for topic in spec.produces) + ".")
        lines += [" ".join(facts), ""]
    lines += ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
    names = env_names(section)
    for name, field in cls.model_fields.items():
        env = names[name]
        cells = [f"`{env}`", f"`{_cell(format_type(field.annotation))}`", _cell(format_default(field)),
                 _cell(field_description(field))]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


INTRO = """\
<!-- Generated by scripts/generate_config_docs.py from the settings classes. Do not edit by hand:
     change the field docstrings and run `make docs`. -->

# Configuration reference

Every Gyre process is configured through environment variables, read by pydantic-settings classes.
Each variable below is declared once, in code, with the docstring under its field; this page is
generated from those classes (`make docs`) and a unit test fails when it is stale.

How the names are built:

* Settings every process shares have their own prefix, so one value serves all services:
  `GYRE_KAFKA_*` (the broker and topics), `GYRE_DATABASE_*` (PostgreSQL), `GYRE_TELEMETRY_*`
  (traces, metrics, logs) and the other shared classes below.
* Each service has one prefix, `GYRE_<SERVICE>_`, e.g. `GYRE_SERVING_HTTP_PORT`. Every service has
  the settings of `ServiceSettings` (`HTTP_HOST`, `HTTP_PORT`, `GRPC_PORT`, ...) plus its own.
* Names are case-insensitive; booleans accept `true`/`false`/`1`/`0`; an invalid or missing required
  value stops start-up with a message that names the variable.

The OpenTelemetry SDK's standard variables apply as well, for example `OTEL_SERVICE_NAME` (defaults
to the service's name), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and
`OTEL_EXPORTER_OTLP_HEADERS`. `GYRE_TELEMETRY_OTLP_ENDPOINT` turns on trace export.

Deployment examples that set these variables: `docker-compose.yml` and `deploy/k8s/`
(see [deployment.md](deployment.md)).
"""


def render(sections: list[SettingsSection]) -> str:
    """The whole reference page for ``sections``."""
    lines = INTRO.splitlines()
    groups = [group for _, group in LIBRARY_GROUPS] + [SERVICES_GROUP]
    for group in groups:
        members = [section for section in sections if section.group == group]
        if not members and group != SERVICES_GROUP:
            continue
        if lines[-1]:
            lines.append("")
        lines += [f"## {group}", ""]
        if not members:
            lines += ["No service is installed yet; each one adds its section here when it is.", ""]
        for section in members:
            lines += render_section(section)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the file is out of date instead of writing it")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"file to write (default: {OUTPUT})")
    args = parser.parse_args(argv)

    sections = all_sections()
    missing = [name for section in sections for name in undocumented(section)]
    if missing:
        # An undocumented setting would leave a blank row in the reference: refuse instead.
        print("settings without a docstring: " + ", ".join(missing), file=sys.stderr)
        return 1
    text = render(sections)
    output: Path = args.output
    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            print(f"{output} is stale: run `make docs` (scripts/generate_config_docs.py)", file=sys.stderr)
            return 1
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
