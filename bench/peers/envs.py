"""Virtual environments for the peers a benchmark compares Gyre with, under ``.bench-envs/<name>``.

Each peer gets its own Python 3.11 venv installed from PyPI with every package pinned in
``bench/peers/<name>-requirements.txt``, never into the development ``.venv``. Creating one is
idempotent: a stamp holding the requirements' sha256 says it is up to date, so the benchmarks call
:func:`ensure_env` on every run and only the first pays for the install.

    .venv/bin/python bench/peers/envs.py mlserver     # create or update it by hand
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ENVS = ROOT / ".bench-envs"
PEERS = ("mlserver",)
"""Peers that have a requirements file here."""


def _base_python() -> str:
    """A Python 3.11 interpreter to build the venv from (the peers are pinned for 3.11)."""
    for candidate in ("python3.11", sys.executable):
        path = shutil.which(candidate) if not Path(candidate).is_absolute() else candidate
        if path is None:
            continue
        version = subprocess.run([path, "-c", "import sys; print(sys.version_info[:2] == (3, 11))"],
                                 capture_output=True, text=True, check=False).stdout.strip()
        if version == "True":
            return path
    raise RuntimeError("the peer environments need a Python 3.11 interpreter (python3.11 on PATH)")


def ensure_env(name: str) -> Path:
    """Create or update ``.bench-envs/<name>`` from its requirements file; return its ``python``.

    Raises:
        ValueError: no requirements file for ``name``.
        subprocess.CalledProcessError: venv creation or pip failed (pip's output is shown).
    """
    requirements = HERE / f"{name}-requirements.txt"
    if not requirements.is_file():
        raise ValueError(f"unknown peer {name!r}: no {requirements.name} in {HERE}")
    env = ENVS / name
    python = env / "bin" / "python"
    stamp = env / ".requirements-sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    print(f"setting up the {name} peer environment in {env} (first use; a minute or two)", flush=True)
    if not python.exists():
        subprocess.run([_base_python(), "-m", "venv", str(env)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    # --no-deps is not used: the file pins the whole tree, so pip checks it is consistent.
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)
    stamp.write_text(digest + "\n")
    return python


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=list(PEERS), help=f"peers to set up (default: {', '.join(PEERS)})")
    for name in parser.parse_args().names:
        print(ensure_env(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
