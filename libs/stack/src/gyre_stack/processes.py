"""Starting and stopping the stack's background processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import psutil

from gyre_stack.state import ProcessRecord, process_matches


def spawn(module: str, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Run ``python -m module`` with this interpreter in the background, in its own session.

    The process gets its own session so that it outlives `gyre-stack up` and a Ctrl-C in the
    terminal does not reach it; its stdout and stderr are appended to ``log_path``.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # Logs are appended across runs; a marker line shows where this run begins.
        started = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"=== gyre-stack: python -m {module} starting at {started} ===\n".encode())
        log.flush()
        return subprocess.Popen(
            [sys.executable, "-m", module],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def terminate(records: Iterable[ProcessRecord], timeout: float) -> list[str]:
    """SIGTERM every recorded process that is still ours, wait up to ``timeout`` s, SIGKILL the rest.

    Processes are signalled together, so services shut down in parallel. A record whose pid is
    gone or now belongs to another process is skipped: nothing but what we started is signalled.

    Returns:
        Names of the processes that had to be killed with SIGKILL.
    """
    targets: dict[int, str] = {}
    processes: list[psutil.Process] = []
    for record in records:
        if not process_matches(record.pid, record.create_time):
            continue
        try:
            process = psutil.Process(record.pid)
            process.terminate()
        except psutil.NoSuchProcess:
            continue
        targets[record.pid] = record.name
        processes.append(process)
    alive = wait_gone(processes, timeout)
    killed = []
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
        killed.append(targets[process.pid])
    wait_gone(alive, 5.0)
    return killed


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited (zombies count as exited); return those still running.

    psutil's own wait treats a zombie as running, and a process we did not start stays a zombie
    until whoever adopted it reaps it, so we poll the status instead. Our own children are reaped.
    """
    deadline = time.monotonic() + timeout
    pending = list(processes)
    while pending:
        pending = [process for process in pending if _running(process)]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return pending


def _running(process: psutil.Process) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(process.pid, os.WNOHANG)
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
