"""Starting and stopping the stack's infrastructure: the Tansu broker and the embedded PostgreSQL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psutil

from gyre_stack.broker import start_broker
from gyre_stack.errors import StackError
from gyre_stack.logtail import size, tail
from gyre_stack.ports import port_open
from gyre_stack.postgres import Postgres
from gyre_stack.processes import wait_gone
from gyre_stack.settings import StackSettings
from gyre_stack.state import ProcessRecord, StateFolder, process_start_time

BROKER = "broker"
POSTGRES = "postgres"


def port_holder(port: int) -> str:
    """Who listens on TCP ``port`` (e.g. ``pid 123 (redis-server)``), or "" when it cannot be told."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return ""
    for connection in connections:
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port:
            if connection.pid is None:
                return ""
            try:
                return f"pid {connection.pid} ({psutil.Process(connection.pid).name()})"
            except psutil.Error:
                return f"pid {connection.pid}"
    return ""


def ensure_port_free(host: str, port: int, what: str, setting: str) -> None:
    """Raise StackError naming the holder and the setting to change when host:port is taken."""
    if not port_open(host, port):
        return
    holder = port_holder(port)
    by = f" by {holder}" if holder else " by another process"
    raise StackError(f"{what} port {port} on {host} is already in use{by}, which this stack did not "
                     f"start. Stop it, or choose another port with {setting}=<port>.")


def with_log(message: str, log: Path, lines: int, since: int = 0) -> str:
    """``message`` followed by the last ``lines`` lines of ``log`` written after byte ``since``."""
    text = tail(log, lines, since)
    if not text:
        return f"{message}\n(nothing in {log})"
    return f"{message}\nlast lines of {log}:\n{text}"


def start_broker_process(settings: StackSettings, folder: StateFolder) -> ProcessRecord:
    """Start Tansu in the background on ``settings.broker_port`` and wait until it accepts connections.

    Raises:
        StackError: the port is taken, or the broker did not come up (the log tail is included).
    """
    host, port = settings.host, settings.broker_port
    ensure_port_free(host, port, "broker", "GYRE_STACK_BROKER_PORT")
    log = folder.log_path(BROKER)
    since = size(log)
    try:
        broker = start_broker(port, log, host=host, detach=True, timeout=settings.start_timeout_s)
    except (TimeoutError, RuntimeError, OSError) as exc:
        raise StackError(with_log(f"the Tansu broker failed to start: {exc}", log,
                                  settings.log_tail_lines, since)) from exc
    pid = broker.process.pid
    return ProcessRecord(name=BROKER, kind="broker", pid=pid, create_time=process_start_time(pid),
                         log=str(log), endpoints={"kafka": broker.bootstrap_servers}, port=port)


def embedded_postgres(settings: StackSettings, folder: StateFolder, port: int | None = None) -> Postgres:
    """The embedded PostgreSQL of this state folder (data in ``postgres/``, log in ``logs/``)."""
    return Postgres(folder.postgres_dir, port or settings.postgres_port, settings.host,
                    log_file=folder.log_path(POSTGRES))


def start_postgres_process(settings: StackSettings, folder: StateFolder) -> tuple[ProcessRecord, str]:
    """Start (or adopt, if its server already runs) the embedded PostgreSQL and create the database.

    Returns:
        The process record and the URL of ``settings.database``.

    Raises:
        StackError: the port is taken, or the server did not start (the log tail is included).
    """
    server = embedded_postgres(settings, folder)
    log = server.log_path
    try:
        running_port = server.postmaster_port() if server.running() else None
        if running_port is not None:
            # Our own data folder's server outlived its state file (e.g. state.json removed): reuse it.
            server = embedded_postgres(settings, folder, running_port)
        else:
            ensure_port_free(settings.host, settings.postgres_port, "PostgreSQL", "GYRE_STACK_POSTGRES_PORT")
            server.start(timeout=int(settings.start_timeout_s))
        server.create_database(settings.database)
    except subprocess.CalledProcessError as exc:
        raise StackError(with_log(f"embedded PostgreSQL failed: {' '.join(map(str, exc.cmd[:1]))} "
                                  f"exited with {exc.returncode}: {exc.stderr}", log,
                                  settings.log_tail_lines)) from exc
    except RuntimeError as exc:
        # Postgres.start already put the log tail in the message.
        raise StackError(str(exc)) from exc
    pid = server.postmaster_pid()
    if pid is None:
        raise StackError(with_log("embedded PostgreSQL runs but wrote no postmaster.pid", log,
                                  settings.log_tail_lines))
    url = server.url(settings.database)
    record = ProcessRecord(name=POSTGRES, kind="postgres", pid=pid, create_time=process_start_time(pid),
                           log=str(log), endpoints={"postgresql": url}, data_dir=str(server.data_dir),
                           port=server.port)
    return record, url


def stop_postgres_process(record: ProcessRecord, settings: StackSettings, folder: StateFolder) -> bool:
    """Stop the embedded PostgreSQL with ``pg_ctl stop -m fast``; True when its process is gone."""
    server = Postgres(Path(record.data_dir or folder.postgres_dir), record.port or settings.postgres_port,
                      settings.host, log_file=Path(record.log))
    server.stop()
    if not record.alive():
        return True
    try:
        process = psutil.Process(record.pid)
    except psutil.NoSuchProcess:
        return True
    return not wait_gone([process], settings.stop_timeout_s)
