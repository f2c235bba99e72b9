"""The tritonclient environment of the serving compatibility tests (tests only).

tritonclient (every release) requires protobuf<7 and Gyre's generated contracts need protobuf 7, so
tritonclient cannot live in ``.venv``. It gets its own virtualenv, ``.bench-envs/tritonclient``,
installed from PyPI with the pins of ``tests/support/tritonclient-requirements.txt`` the first time
a test needs it (and again when the pins change). The benchmarks may use the same environment.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = Path(__file__).with_name("tritonclient-requirements.txt")
CLIENT_SCRIPT = Path(__file__).with_name("triton_client.py")
ENV_DIR = REPO_ROOT / ".bench-envs" / "tritonclient"


def tritonclient_python() -> Path:
    """The environment's python, created or refreshed when the pins changed.

    Raises:
        subprocess.CalledProcessError: pip could not install the pins (e.g. no access to PyPI).
    """
    python = ENV_DIR / "bin" / "python"
    stamp = ENV_DIR / ".requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(ENV_DIR)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
                    str(REQUIREMENTS)], check=True, stdout=sys.stderr)
    stamp.write_text(digest)
    return python


def run_plan(plan: dict[str, Any], timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """Run ``plan`` (see ``triton_client.py``) with tritonclient in a subprocess; its answers.

    Raises:
        AssertionError: the client script failed (its stderr is in the message).
    """
    done = subprocess.run([str(tritonclient_python()), str(CLIENT_SCRIPT)], input=json.dumps(plan),
                          capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"tritonclient script failed ({done.returncode}):\n{done.stderr}"
    answers: list[dict[str, Any]] = json.loads(done.stdout)
    return answers
