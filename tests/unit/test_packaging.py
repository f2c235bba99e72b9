"""Packaging rules: one place pins every version, heavy ML stays in the trainer, the venv matches the pins.

Read from the files (tomllib), not from what happens to be installed, so the rules hold for packages
the dev environment lacks too; the last checks compare the installed environment with the pins.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from gyre_common.service import discover_services

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints.txt"
DEV_REQUIREMENTS = ROOT / "requirements-dev.txt"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

TRAINER = canonicalize_name("gyre-trainer")
ML = canonicalize_name("gyre-ml")
TORCH = canonicalize_name("torch")
#: Heavy ML dependencies only the trainer may bring in.
TRAINER_ONLY = {canonicalize_name("hyperopt")}
#: torch comes only through gyre-ml, which only the trainer requires; another service may offer it
#: behind an optional extra (serving's and the monitor's text models), never by default.
#: What deploy/Dockerfile installs next to a service: a service may depend on these of our libs only.
SERVICE_IMAGE_LIBS = {canonicalize_name("gyre-contracts"), canonicalize_name("gyre-common")}


@dataclass
class OwnPackage:
    """One of our pyproject.toml packages."""

    name: NormalizedName
    path: Path
    requires: list[Requirement]
    extras: dict[str, list[Requirement]] = field(default_factory=dict)
    entry_points: dict[str, dict[str, str]] = field(default_factory=dict)

    def all_requirements(self) -> list[Requirement]:
        return self.requires + [req for reqs in self.extras.values() for req in reqs]


def _own_packages() -> dict[NormalizedName, OwnPackage]:
    packages: dict[NormalizedName, OwnPackage] = {}
    for path in sorted([*ROOT.glob("libs/*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml")]):
        project = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
        name = canonicalize_name(project["name"])
        assert name not in packages, f"{name} is declared twice"
        packages[name] = OwnPackage(
            name=name,
            path=path.parent,
            requires=[Requirement(text) for text in project.get("dependencies", [])],
            extras={extra: [Requirement(text) for text in reqs]
                    for extra, reqs in project.get("optional-dependencies", {}).items()},
            entry_points=project.get("entry-points", {}),
        )
    return packages


def _pins() -> dict[NormalizedName, Version]:
    pins: dict[NormalizedName, Version] = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        req = Requirement(text)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"constraints.txt: {line!r} is not an exact pin"
        name = canonicalize_name(req.name)
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = Version(specs[0].version)
    return pins


def _dev_requirements() -> list[Requirement]:
    text = DEV_REQUIREMENTS.read_text(encoding="utf-8")
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


PACKAGES = _own_packages()
PINS = _pins()


def _is_own(req: Requirement) -> bool:
    return canonicalize_name(req.name) in PACKAGES


def test_every_dependency_is_pinned() -> None:
    problems = []
    sources = [(str(pkg.path.relative_to(ROOT)), pkg.all_requirements()) for pkg in PACKAGES.values()]
    sources.append(("requirements-dev.txt", _dev_requirements()))
    for source, requirements in sources:
        for req in requirements:
            if _is_own(req):
                continue
            name = canonicalize_name(req.name)
            if name not in PINS:
                problems.append(f"{source}: {req.name} has no == pin in constraints.txt")
            elif not req.specifier.contains(PINS[name], prereleases=True):
                problems.append(f"{source}: {req} excludes the pinned {name}=={PINS[name]}")
    assert not problems, "\n".join(problems)


def test_own_dependencies_exist() -> None:
    for pkg in PACKAGES.values():
        for req in pkg.all_requirements():
            if canonicalize_name(req.name).startswith("gyre-"):
                assert _is_own(req), f"{pkg.name} depends on {req.name}, which no libs/ or services/ declares"


def _closure(root: OwnPackage) -> dict[NormalizedName, list[str]]:
    """Every distribution ``root`` pulls in (with all of its own extras), mapped to one path that leads there.

    Our packages are followed through their pyproject.toml (with the extras each requirement asks
    for); third-party ones through their installed metadata when installed here.
    """
    paths: dict[NormalizedName, list[str]] = {}
    todo: list[tuple[Requirement, list[str]]] = [(req, [root.name]) for req in root.all_requirements()]
    while todo:
        req, via = todo.pop()
        name = canonicalize_name(req.name)
        if name in paths:
            continue
        paths[name] = [*via, name]
        if name in PACKAGES:
            own = PACKAGES[name]
            reqs = own.requires + [r for extra in req.extras for r in own.extras.get(extra, [])]
            todo += [(r, paths[name]) for r in reqs]
            continue
        try:
            declared = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: only its name is known
        for text in declared:
            dep = Requirement(text)
            wanted = ["", *sorted(req.extras)]
            if dep.marker is None or any(dep.marker.evaluate({"extra": extra}) for extra in wanted):
                todo.append((dep, paths[name]))
    return paths


def test_heavy_ml_stays_in_the_trainer() -> None:
    """Nothing but the trainer may pull hyperopt; torch only through gyre-ml, by default only in the
    trainer (others behind an optional extra), even through our own libraries."""
    offenders = []
    for pkg in PACKAGES.values():
        if pkg.name in (TRAINER, ML):
            continue
        closure = _closure(pkg)
        offenders += [" -> ".join(closure[name]) for name in sorted(TRAINER_ONLY & set(closure))]
        if TORCH in closure and closure[TORCH][1] != ML:
            offenders.append(" -> ".join(closure[TORCH]) + " (torch only through gyre-ml)")
        default = _closure(OwnPackage(pkg.name, pkg.path, pkg.requires))
        if TORCH in default:
            offenders.append(" -> ".join(default[TORCH]) + " (without an extra)")
    assert not offenders, "trainer-only dependencies pulled in by: " + "; ".join(offenders)


def test_services_need_only_what_their_image_installs() -> None:
    """deploy/Dockerfile installs libs/contracts, libs/common and the service; nothing else of ours.
    Built with EXTRAS it also installs libs/ml, so an optional extra may need gyre-ml (serving's
    and the monitor's `text`), never another of our libraries."""
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    assert 'pip install -c constraints.txt libs/contracts libs/common "services/${SERVICE}"' in dockerfile
    assert 'libs/contracts libs/common libs/ml "services/${SERVICE}${EXTRAS:+[${EXTRAS}]}"' in dockerfile
    # A service that requires gyre-ml itself (the trainer) gets libs/ml without EXTRAS.
    assert '! python -c "$NEEDS_ML" "services/${SERVICE}/pyproject.toml"' in dockerfile
    for pkg in PACKAGES.values():
        if pkg.path.parent.name != "services":
            continue
        default = {name for name in _closure(OwnPackage(pkg.name, pkg.path, pkg.requires)) if name in PACKAGES}
        if any(canonicalize_name(req.name) == ML for req in pkg.requires):
            default -= {ML}
        extra = sorted(default - SERVICE_IMAGE_LIBS)
        assert not extra, f"{pkg.name} needs {extra}, which deploy/Dockerfile does not install"
        with_extras = {name for name in _closure(pkg) if name in PACKAGES}
        extra = sorted(with_extras - SERVICE_IMAGE_LIBS - {ML})
        assert not extra, f"{pkg.name}'s extras need {extra}, which deploy/Dockerfile does not install"


def test_every_service_folder_is_an_installed_service() -> None:
    """services/<name> is package gyre-<name> with one `gyre.services` entry point <name>, installed here.

    The compose, docs and stack tests iterate over the installed services; a folder that is not
    installed would make them pass vacuously.
    """
    discovered = {spec.name: spec for spec in discover_services()}
    for pkg in PACKAGES.values():
        if pkg.path.parent.name != "services":
            continue
        folder = pkg.path.name
        assert pkg.name == canonicalize_name(f"gyre-{folder}"), f"services/{folder}: name it gyre-{folder}"
        assert list(pkg.entry_points.get("gyre.services", {})) == [folder], (
            f"services/{folder}/pyproject.toml: [project.entry-points.\"gyre.services\"] {folder} = ...:SPEC"
        )
        assert folder in discovered, f"services/{folder} is not installed: run `make install`"
        assert discovered[folder].module == f"gyre_{folder}", "deploy/Dockerfile runs `python -m gyre_<name>`"


def test_installed_versions_match_pins() -> None:
    drift = []
    for name, pinned in sorted(PINS.items()):
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue  # e.g. a trainer-only dependency in an environment without the trainer
        if Version(installed.public) != pinned:  # torch's local label: 2.13.0+cpu is the pinned 2.13.0
            drift.append(f"{name}: installed {installed}, pinned {pinned}")
    assert not drift, "run `make install` (or fix constraints.txt): " + "; ".join(drift)


def test_what_the_workspace_needs_is_installed() -> None:
    """Every dependency of our installed packages, and every dev tool, is installed (at its pin, above)."""
    needed = list(_dev_requirements())
    for pkg in PACKAGES.values():
        try:
            metadata.version(pkg.name)
        except metadata.PackageNotFoundError:
            continue
        needed += [req for req in pkg.requires if not _is_own(req)]
    missing = []
    for req in needed:
        try:
            metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(req.name)
    assert not missing, f"not installed (run `make install`): {sorted(set(missing))}"
