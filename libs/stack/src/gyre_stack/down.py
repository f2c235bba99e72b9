"""`gyre-stack down`: stop exactly what `up` started, and nothing else.

Services first (SIGTERM together, then up to ``stop_timeout_s`` for them to finish their work,
then SIGKILL), then the broker, then the embedded PostgreSQL with ``pg_ctl stop -m fast``. Only
processes recorded in the state folder are touched, and only while their pid still names the
process that was started (same start time). Logs and PostgreSQL data stay.
"""

from __future__ import annotations

from typing import TextIO

from gyre_stack.components import stop_postgres_process
from gyre_stack.errors import StackError
from gyre_stack.processes import terminate
from gyre_stack.settings import StackSettings
from gyre_stack.state import ProcessRecord, StateFolder, drop_stale


def down(settings: StackSettings, out: TextIO) -> int:
    """Stop what `up` recorded; print what was stopped; return the exit code.

    Raises:
        StackError: the embedded PostgreSQL would not stop (its pid stays recorded so that a later
            `down` can try again).
    """
    folder = StateFolder(settings.home_dir)
    if not folder.home.is_dir():
        print(f"Nothing to stop (no state folder {folder.home}).", file=out)
        return 0
    with folder.lock():
        try:
            state = folder.load()
        except ValueError as exc:
            raise StackError(str(exc)) from exc
        for record in drop_stale(state):
            print(f"{record.name} was not running (pid {record.pid} gone); removed its pid file", file=out)
        if not state.processes:
            folder.clear()
            print("Nothing to stop.", file=out)
            return 0
        records = list(state.processes.values())
        _stop(records, "service", settings, out)
        _stop(records, "broker", settings, out)
        for record in records:
            if record.kind == "postgres":
                if not stop_postgres_process(record, settings, folder):
                    folder.save(state.__class__(processes={record.name: record}))
                    raise StackError(f"PostgreSQL (pid {record.pid}) did not stop; see {record.log}")
                print(f"stopped postgres (pid {record.pid})", file=out)
        folder.clear()
    print(f"Gyre stack is down. Logs and data stay in {folder.home}.", file=out)
    return 0


def _stop(records: list[ProcessRecord], kind: str, settings: StackSettings, out: TextIO) -> None:
    chosen = [record for record in records if record.kind == kind]
    if not chosen:
        return
    killed = set(terminate(chosen, settings.stop_timeout_s))
    for record in chosen:
        how = f"killed after {settings.stop_timeout_s:.0f}s" if record.name in killed else "stopped"
        print(f"{how} {record.name} (pid {record.pid})", file=out)
