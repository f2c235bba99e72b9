"""Create (or reuse) the MLflow peer environment for the benchmarks: ``.bench-envs/mlflow``.

``mlflow server`` from PyPI with a PostgreSQL driver, pinned in ``mlflow-requirements.txt`` (and,
once resolved, every transitive version in ``mlflow-constraints.txt``). Never installed into the
dev virtualenv ``.venv``: MLflow's full server pulls pandas, scipy, scikit-learn, sqlalchemy,
alembic, flask and gunicorn, none of which Gyre's services may depend on by accident.

Usage: ``.venv/bin/python bench/peers/mlflow_env.py`` prints the environment's python path.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ENV_DIR = ROOT / ".bench-envs" / "mlflow"
REQUIREMENTS = HERE / "mlflow-requirements.txt"
CONSTRAINTS = HERE / "mlflow-constraints.txt"
MARKER = ENV_DIR / ".installed"


def _python() -> Path:
    return ENV_DIR / "bin" / "python"


def _wanted() -> str:
    text = REQUIREMENTS.read_text()
    return text + (CONSTRAINTS.read_text() if CONSTRAINTS.exists() else "")


def ensure() -> Path:
    """The peer environment's python, installing it first when missing or out of date.

    Raises:
        subprocess.CalledProcessError: pip could not install the pinned versions.
    """
    if MARKER.exists() and MARKER.read_text() == _wanted() and _python().exists():
        return _python()
    if not _python().exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(ENV_DIR)
    command = [str(_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", str(REQUIREMENTS)]
    if CONSTRAINTS.exists():
        command += ["-c", str(CONSTRAINTS)]
    subprocess.run(command, check=True)
    MARKER.write_text(_wanted())
    return _python()


def freeze() -> None:
    """Write every resolved version into ``mlflow-constraints.txt`` (run once after an upgrade)."""
    out = subprocess.run([str(_python()), "-m", "pip", "freeze", "--disable-pip-version-check"],
                         check=True, capture_output=True, text=True).stdout
    CONSTRAINTS.write_text("# Resolved by bench/peers/mlflow_env.py --freeze; the peer env installs exactly these.\n"
                           + out)


if __name__ == "__main__":
    print(ensure())
    if "--freeze" in sys.argv:
        freeze()
        MARKER.write_text(_wanted())
