"""`gyre-stack up`: start the broker, the database and every service, and wait until they are ready.

Order: broker, then PostgreSQL (or the external database from ``GYRE_DATABASE_URL``), topics,
migrations, services (in parallel), readiness. What already runs (recorded in the state folder and
still alive) is kept, so `up` on a running stack starts nothing; a record whose process is gone is
dropped and that component is started again.

On failure `up` stops what *this* run started, newest first, and keeps the logs; the error shows
the failing component's log tail. ``keep_on_failure`` leaves everything running for inspection.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import TextIO

from gyre_common.db import redact_url
from gyre_common.service import ServiceSpec
from gyre_common.settings import DatabaseSettings, KafkaSettings, SettingsError, load_settings
from gyre_stack.components import (
    BROKER,
    POSTGRES,
    ensure_port_free,
    start_broker_process,
    start_postgres_process,
    stop_postgres_process,
    with_log,
)
from gyre_stack.errors import StackError
from gyre_stack.logtail import size
from gyre_stack.prepare import apply_migrations, create_topics
from gyre_stack.processes import spawn, terminate
from gyre_stack.readiness import http_ready, postgres_ready
from gyre_stack.services import ServicePlan, all_services, plan_service
from gyre_stack.settings import StackSettings
from gyre_stack.state import ProcessRecord, StackState, StateFolder, drop_stale, process_start_time
from gyre_stack.status import collect, render

# Pause between two rounds of readiness checks.
_POLL_S = 0.2


def external_database_url() -> str | None:
    """The database named by ``GYRE_DATABASE_URL``, or None when it is not set (use the embedded one)."""
    settings = load_settings(DatabaseSettings)
    return settings.url if "url" in settings.model_fields_set else None


@dataclass
class _Run:
    """One `up` invocation: the settings, the state being built, and what this run started."""

    settings: StackSettings
    folder: StateFolder
    state: StackState
    out: TextIO
    started: list[ProcessRecord] = field(default_factory=list)
    spawned: dict[str, tuple[subprocess.Popen[bytes], ServicePlan]] = field(default_factory=dict)
    log_offsets: dict[str, int] = field(default_factory=dict)
    """Size of each service's log before this run started it: error messages show only what follows."""

    def record(self, record: ProcessRecord) -> None:
        self.state.processes[record.name] = record
        self.started.append(record)
        # Saved after every start, so that `down` can stop it even if this run dies right after.
        self.folder.save(self.state)

    def say(self, message: str) -> None:
        print(message, file=self.out, flush=True)


def up(settings: StackSettings, out: TextIO, keep_on_failure: bool = False) -> int:
    """Bring the stack up (see the module docstring); print the endpoints; return the exit code.

    Raises:
        StackError: something could not start or become ready; the message says what and shows
            the relevant log tail, and says whether what was started has been stopped.
    """
    folder = StateFolder(settings.home_dir)
    folder.create()
    with folder.lock():
        try:
            state = folder.load()
        except ValueError as exc:
            raise StackError(str(exc)) from exc
        run = _Run(settings, folder, state, out)
        for record in drop_stale(state):
            run.say(f"removed the stale pid file of {record.name} (pid {record.pid} is gone)")
        try:
            specs = all_services(settings.extra_service_refs(), settings.service_selection())
            external_url = external_database_url()
        except SettingsError as exc:
            raise StackError(str(exc)) from exc
        # Settings errors are the commonest failure: report them before starting anything.
        _check_service_settings([spec for spec in specs if spec.name not in state.processes])
        check_same_database(state, external_url)
        wanted = [BROKER, *([] if external_url else [POSTGRES]), *(spec.name for spec in specs)]
        if all(name in state.processes for name in wanted):
            folder.save(state)
            run.say(f"Gyre stack is already up; nothing to start (state folder {folder.home}).")
            render(collect(state), state, out)
            return 0
        try:
            _bring_up(run, specs, external_url)
        except BaseException as exc:
            # Also on Ctrl-C: half a stack left behind would hold the ports of the next `up`.
            note = _after_failure(run, keep_on_failure)
            if isinstance(exc, StackError):
                raise StackError(f"{exc}\n\n{note}") from exc
            run.say(note)
            raise
        folder.save(state)
        run.say(f"\nGyre stack is up (state folder {folder.home})")
        render(collect(state), state, out)
        run.say("\nLogs: gyre-stack logs [NAME] (make logs SERVICE=NAME)   Stop: gyre-stack down (make down)")
        return 0


def _check_service_settings(specs: list[ServiceSpec]) -> None:
    problems = []
    for spec in specs:
        try:
            load_settings(spec.settings)
        except SettingsError as exc:
            problems.append(f"service {spec.name}: {exc}")
    if problems:
        raise StackError("\n".join(problems) + "\nNothing was started.")


def check_same_database(state: StackState, external_url: str | None) -> None:
    """Refuse to mix services on two databases: switching needs a `down` first."""
    if not state.processes or state.database_url is None:
        return
    wanted = redact_url(external_url) if external_url else "the embedded PostgreSQL"
    if external_url is None and not state.external_database:
        return
    same_external = external_url is not None and state.database_url == redact_url(external_url)
    if state.external_database and same_external:
        return
    raise StackError(f"the running stack uses the database {state.database_url}, but this `up` would use "
                     f"{wanted}; run `gyre-stack down` first to switch")


def _bring_up(run: _Run, specs: list[ServiceSpec], external_url: str | None) -> None:
    settings, state = run.settings, run.state
    if BROKER not in state.processes:
        record = start_broker_process(settings, run.folder)
        run.record(record)
        run.say(f"started the broker (Tansu, pid {record.pid}) on {record.endpoints['kafka']}")
    bootstrap_servers = state.processes[BROKER].endpoints["kafka"]
    state.bootstrap_servers = bootstrap_servers

    if external_url is not None:
        ready, why = postgres_ready(external_url)
        if not ready:
            raise StackError(f"cannot reach the database of GYRE_DATABASE_URL ({redact_url(external_url)}): "
                             f"{why}")
        database_url = external_url
        state.external_database = True
        run.say(f"using the external database {redact_url(external_url)} (no embedded PostgreSQL)")
    elif POSTGRES not in state.processes:
        record, database_url = start_postgres_process(settings, run.folder)
        state.external_database = False
        run.record(record)
        run.say(f"started PostgreSQL (pid {record.pid}) on port {record.port}, database {settings.database}")
    else:
        database_url = state.processes[POSTGRES].endpoints["postgresql"]
    state.database_url = redact_url(database_url)
    run.folder.save(state)

    kafka = load_settings(KafkaSettings, bootstrap_servers=bootstrap_servers)
    created, applied = asyncio.run(_prepare(kafka, database_url, specs))
    run.say(f"topics: {len(created)} created" + (f" ({', '.join(created)})" if created else " (all existed)"))
    for name, files in applied.items():
        if files:
            run.say(f"migrations of {name}: applied {', '.join(files)}")

    for spec in specs:
        if spec.name not in state.processes:
            _start_service(run, spec, bootstrap_servers, database_url)
    if run.spawned:
        _wait_ready(run)


async def _prepare(kafka: KafkaSettings, database_url: str,
                   specs: list[ServiceSpec]) -> tuple[list[str], dict[str, list[str]]]:
    return await create_topics(kafka, specs), await apply_migrations(database_url, specs)


def _start_service(run: _Run, spec: ServiceSpec, bootstrap_servers: str, database_url: str) -> None:
    try:
        plan = plan_service(spec, bootstrap_servers, database_url)
    except SettingsError as exc:
        raise StackError(f"service {spec.name}: {exc}") from exc
    prefix = spec.settings.env_name("")
    ensure_port_free(plan.http_host, plan.http_port, f"{spec.name} HTTP", f"{prefix}HTTP_PORT")
    ensure_port_free(plan.grpc_host, plan.grpc_port, f"{spec.name} gRPC", f"{prefix}GRPC_PORT")
    log = run.folder.log_path(spec.name)
    run.log_offsets[spec.name] = size(log)
    # The service inherits this process's environment (so GYRE_* settings reach it) plus the stack's.
    process = spawn(spec.module, {**os.environ, **plan.env_overrides}, log)
    run.spawned[spec.name] = (process, plan)
    run.record(ProcessRecord(
        name=spec.name, kind="service", pid=process.pid, create_time=process_start_time(process.pid),
        log=str(log), endpoints={"http": plan.http_url, "grpc": plan.grpc_address}, ready_url=plan.ready_url,
        port=plan.http_port,
    ))
    run.say(f"started {spec.name} (pid {process.pid}): python -m {spec.module}")


def _wait_ready(run: _Run) -> None:
    """Poll every started service's ``/readyz`` until all answer 200; fail fast when one exits."""
    timeout = run.settings.ready_timeout_s
    deadline = time.monotonic() + timeout
    pending = dict(run.spawned)
    last: dict[str, str] = {}
    run.say(f"waiting for {', '.join(pending)} to be ready (up to {timeout:.0f}s)")
    while pending:
        for name, (process, plan) in list(pending.items()):
            code = process.poll()
            if code is not None:
                raise StackError(with_log(f"service {name} exited with code {code} before it was ready",
                                          run.folder.log_path(name), run.settings.log_tail_lines,
                                          run.log_offsets[name]))
            ready, last[name] = http_ready(plan.ready_url)
            if ready:
                del pending[name]
                run.say(f"{name} is ready")
        if not pending:
            return
        if time.monotonic() >= deadline:
            name = next(iter(pending))
            raise StackError(with_log(
                f"service {name} was not ready within {timeout:.0f}s (GET {pending[name][1].ready_url}: "
                f"{last.get(name)}); raise GYRE_STACK_READY_TIMEOUT_S if it is only slow",
                run.folder.log_path(name), run.settings.log_tail_lines, run.log_offsets[name]))
        time.sleep(_POLL_S)


def _after_failure(run: _Run, keep_on_failure: bool) -> str:
    """Undo this run's starts (unless asked to keep them); say what happened to them."""
    if not run.started:
        return f"Nothing was started by this run; logs are in {run.folder.logs_dir}."
    names = ", ".join(record.name for record in run.started)
    if keep_on_failure:
        return (f"Left running as asked: {names}. `gyre-stack down` stops them; "
                f"logs are in {run.folder.logs_dir}.")
    settings = run.settings
    newest_first = list(reversed(run.started))
    terminate([r for r in newest_first if r.kind == "service"], settings.stop_timeout_s)
    terminate([r for r in newest_first if r.kind == "broker"], settings.stop_timeout_s)
    for record in newest_first:
        if record.kind == "postgres":
            stop_postgres_process(record, settings, run.folder)
    for record in run.started:
        run.state.processes.pop(record.name, None)
    if run.state.processes:
        run.folder.save(run.state)
    else:
        run.folder.clear()
    return f"Stopped what this run had started: {names}. Logs are kept in {run.folder.logs_dir}."
