"""`gyre-stack status`: each component, whether it runs, whether it is ready, and where it listens."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TextIO

from gyre_common.db import redact_url
from gyre_stack.readiness import broker_ready, http_ready, postgres_ready
from gyre_stack.settings import StackSettings
from gyre_stack.state import ProcessRecord, StackState, StateFolder

DASHBOARD = "dashboard"


@dataclass(frozen=True)
class ComponentStatus:
    """One line of the status table.

    Attributes:
        name: component name.
        pid: its pid, or None for an external database.
        running: whether the process runs (always True for an external database).
        ready: whether it serves (broker accepts connections, database answers, ``/readyz`` is 200).
        detail: the state in words: ``ready``, ``not ready (HTTP 503)``, ``exited`` ...
        endpoints: where it listens, in words.
    """

    name: str
    pid: int | None
    running: bool
    ready: bool
    detail: str
    endpoints: str


def describe_endpoints(record: ProcessRecord) -> str:
    """The endpoints of a record as one line, e.g. ``http://127.0.0.1:7100  grpc 127.0.0.1:7101``."""
    parts = []
    for kind, address in record.endpoints.items():
        parts.append(address if kind in ("http", "postgresql") else f"{kind} {address}")
    return "  ".join(parts)


def check_record(record: ProcessRecord) -> ComponentStatus:
    """Whether the process of ``record`` runs and is ready."""
    endpoints = describe_endpoints(record)
    if not record.alive():
        return ComponentStatus(record.name, record.pid, False, False, "exited (stale pid file)", endpoints)
    if record.kind == "broker":
        host, _, port = record.endpoints["kafka"].rpartition(":")
        ready, why = broker_ready(host, int(port)), "no connection"
    elif record.kind == "postgres":
        ready, why = postgres_ready(record.endpoints["postgresql"])
    else:
        ready, why = http_ready(record.ready_url) if record.ready_url else (True, "")
    detail = "ready" if ready else f"not ready ({why})"
    return ComponentStatus(record.name, record.pid, True, ready, detail, endpoints)


def check_external_database(state: StackState) -> ComponentStatus:
    """The external database, checked with ``GYRE_DATABASE_URL`` when it still names the same one."""
    shown = state.database_url or "?"
    url = os.environ.get("GYRE_DATABASE_URL")
    if url is None or redact_url(url) != state.database_url:
        return ComponentStatus("database", None, True, True, "external (not checked: GYRE_DATABASE_URL "
                               "differs here)", shown)
    ready, why = postgres_ready(url)
    return ComponentStatus("database", None, True, ready, "external, ready" if ready else
                           f"external, not ready ({why})", shown)


def collect(state: StackState) -> list[ComponentStatus]:
    """The status of every component of ``state``, infrastructure first."""
    order = {"broker": 0, "postgres": 1, "service": 2}
    records = sorted(state.processes.values(), key=lambda record: (order[record.kind], record.name))
    statuses = [check_record(record) for record in records]
    if state.external_database and statuses:
        statuses.insert(1 if records and records[0].kind == "broker" else 0, check_external_database(state))
    return statuses


def render(statuses: list[ComponentStatus], state: StackState, out: TextIO) -> None:
    """Print the status table, then the dashboard address when there is one."""
    header = ("NAME", "PID", "STATE", "ENDPOINTS")
    rows = [(s.name, "-" if s.pid is None else str(s.pid), s.detail, s.endpoints) for s in statuses]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
              + "  " + row[3], file=out)
    dashboard = state.processes.get(DASHBOARD)
    if dashboard and "http" in dashboard.endpoints:
        print(f"\nDashboard: {dashboard.endpoints['http']}", file=out)


def status(settings: StackSettings, out: TextIO) -> int:
    """Print what `up` started and whether each part is ready (read-only: changes no file).

    Returns:
        0 when nothing was started or everything is ready, 1 when a component is down or not ready.
    """
    folder = StateFolder(settings.home_dir)
    state = folder.load()
    if not state.processes:
        print(f"Gyre stack is not running (state folder {folder.home}).", file=out)
        return 0
    statuses = collect(state)
    all_ready = all(s.ready for s in statuses)
    print(f"Gyre stack {'is up' if all_ready else 'is NOT fully up'} (state folder {folder.home})", file=out)
    render(statuses, state, out)
    if not all_ready:
        print("\nSee `gyre-stack logs NAME`; `gyre-stack up` restarts what has exited.", file=out)
    return 0 if all_ready else 1
