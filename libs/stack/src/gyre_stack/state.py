"""What `gyre-stack up` started, kept on disk under the state folder (``GYRE_HOME``).

Layout of the folder::

    state.json       what is running: one record per process, with its pid and start time
    pids/<name>.pid  the pid alone, for humans and shell tools (`kill $(cat .gyre/pids/broker.pid)`)
    logs/<name>.log  output of every process (kept by `down`)
    postgres/        data of the embedded PostgreSQL (kept by `down`)
    stack.lock       held while `up` or `down` runs, so two of them never interleave

``state.json`` is the source of truth. A record also keeps the process's start time, so a pid
that the system has since given to an unrelated process is never taken for ours (and never
signalled by `down`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

STATE_VERSION = 1
Kind = Literal["broker", "postgres", "service"]

# psutil derives start times from clock ticks since boot; two reads of one process agree far
# closer than this, while a reused pid belongs to a process started at another moment.
_START_TIME_TOLERANCE_S = 0.5


@dataclass
class ProcessRecord:
    """One process that `up` started.

    Attributes:
        name: component name (``broker``, ``postgres`` or the service name); names the log file.
        kind: what the process is, which decides how it is stopped and checked.
        pid: process id.
        create_time: the process's start time (seconds since the epoch, as psutil reports it).
        log: path of its log file.
        endpoints: what it serves, e.g. ``{"kafka": "127.0.0.1:9092"}`` or
            ``{"http": "http://127.0.0.1:7100", "grpc": "127.0.0.1:7101"}``.
        ready_url: URL answering 200 when the process is ready (services only).
        data_dir: data folder (embedded PostgreSQL only).
        port: main TCP port.
    """

    name: str
    kind: Kind
    pid: int
    create_time: float
    log: str
    endpoints: dict[str, str] = field(default_factory=dict)
    ready_url: str | None = None
    data_dir: str | None = None
    port: int | None = None

    def alive(self) -> bool:
        """Whether the recorded process still runs: same pid, same start time, not a zombie."""
        return process_matches(self.pid, self.create_time)


@dataclass
class StackState:
    """Everything `up` started, and where the services were told to find the broker and database.

    Attributes:
        bootstrap_servers: the broker the services use.
        database_url: the database the services use, without its password.
        external_database: True when the database came from ``GYRE_DATABASE_URL`` (not started here).
        processes: records by name, in start order.
    """

    bootstrap_servers: str | None = None
    database_url: str | None = None
    external_database: bool = False
    processes: dict[str, ProcessRecord] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = STATE_VERSION
        data["processes"] = [asdict(record) for record in self.processes.values()]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackState:
        records = [ProcessRecord(**item) for item in data.get("processes", [])]
        return cls(
            bootstrap_servers=data.get("bootstrap_servers"),
            database_url=data.get("database_url"),
            external_database=bool(data.get("external_database", False)),
            processes={record.name: record for record in records},
        )


def process_start_time(pid: int) -> float:
    """Start time of process ``pid`` (seconds since the epoch); raises psutil.NoSuchProcess if gone."""
    return float(psutil.Process(pid).create_time())


def process_matches(pid: int, create_time: float) -> bool:
    """Whether ``pid`` runs and is the process that started at ``create_time`` (zombies count as gone)."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) > _START_TIME_TOLERANCE_S:
            return False
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


class StateFolder:
    """The state folder: reads and writes ``state.json`` and the pid files, and holds the lock."""

    def __init__(self, home: Path) -> None:
        self.home = home

    @property
    def state_path(self) -> Path:
        return self.home / "state.json"

    @property
    def pids_dir(self) -> Path:
        return self.home / "pids"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def postgres_dir(self) -> Path:
        return self.home / "postgres"

    def pid_path(self, name: str) -> Path:
        return self.pids_dir / f"{name}.pid"

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def create(self) -> None:
        """Create the folder and its pids/ and logs/ subfolders."""
        for folder in (self.home, self.pids_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def load(self) -> StackState:
        """The saved state; an empty one when nothing was saved.

        Raises:
            ValueError: the state file exists but is not valid (its path is in the message).
        """
        try:
            text = self.state_path.read_text()
        except FileNotFoundError:
            return StackState()
        try:
            return StackState.from_json(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{self.state_path} is damaged ({exc}); remove it after checking "
                             f"that no process listed in {self.pids_dir} still runs") from exc

    def save(self, state: StackState) -> None:
        """Write ``state.json`` atomically and make pids/ mirror its records."""
        self.create()
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
        os.replace(tmp, self.state_path)
        for record in state.processes.values():
            self.pid_path(record.name).write_text(f"{record.pid}\n")
        for pid_file in self.pids_dir.glob("*.pid"):
            if pid_file.stem not in state.processes:
                pid_file.unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget everything: remove ``state.json`` and every pid file (logs and data stay)."""
        self.state_path.unlink(missing_ok=True)
        if self.pids_dir.is_dir():
            for pid_file in self.pids_dir.glob("*.pid"):
                pid_file.unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``stack.lock`` (blocking) so concurrent `up`/`down` runs take turns."""
        self.create()
        with open(self.home / "stack.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def drop_stale(state: StackState) -> list[ProcessRecord]:
    """Remove the records whose process is gone from ``state``; return them."""
    stale = [record for record in state.processes.values() if not record.alive()]
    for record in stale:
        del state.processes[record.name]
    return stale
