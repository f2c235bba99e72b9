"""The stack's state folder: state.json, pid files, stale records, log tails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gyre_stack.logtail import size, tail
from gyre_stack.state import ProcessRecord, StackState, StateFolder, drop_stale, process_start_time


def record(name: str, pid: int, create_time: float, kind: str = "service") -> ProcessRecord:
    return ProcessRecord(name=name, kind=kind, pid=pid, create_time=create_time,  # type: ignore[arg-type]
                         log=f"/tmp/{name}.log", endpoints={"http": "http://127.0.0.1:1"},
                         ready_url="http://127.0.0.1:1/readyz", port=1)


def unused_pid() -> int:
    """A pid no process can have: above the kernel's maximum."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def test_state_round_trips_and_pid_files_mirror_it(tmp_path: Path) -> None:
    folder = StateFolder(tmp_path / "home")
    state = StackState(bootstrap_servers="127.0.0.1:1", database_url="postgresql://u@h/db",
                       processes={"broker": record("broker", 11, 1.5, "broker"), "api": record("api", 12, 2.5)})
    folder.save(state)

    assert folder.load() == state
    assert (folder.pids_dir / "broker.pid").read_text() == "11\n"
    assert (folder.pids_dir / "api.pid").read_text() == "12\n"

    del state.processes["api"]
    folder.save(state)
    assert sorted(p.name for p in folder.pids_dir.iterdir()) == ["broker.pid"]

    folder.clear()
    assert folder.load() == StackState()
    assert list(folder.pids_dir.iterdir()) == []


def test_missing_state_is_empty(tmp_path: Path) -> None:
    assert StateFolder(tmp_path).load() == StackState()


def test_damaged_state_names_the_file(tmp_path: Path) -> None:
    folder = StateFolder(tmp_path)
    folder.state_path.write_text("{not json")
    with pytest.raises(ValueError, match=r"state\.json is damaged"):
        folder.load()


def test_stale_records_are_dropped_and_live_ones_kept() -> None:
    me = os.getpid()
    started = process_start_time(me)
    state = StackState(processes={
        "alive": record("alive", me, started),
        "gone": record("gone", unused_pid(), started),
        # Same pid, other start time: the pid was given to another process since.
        "reused": record("reused", me, started - 3600),
    })

    stale = drop_stale(state)

    assert sorted(r.name for r in stale) == ["gone", "reused"]
    assert list(state.processes) == ["alive"]


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(5000)))  # several read blocks
    assert tail(log, 3) == "line 4997\nline 4998\nline 4999"
    assert tail(log, 0) == ""
    log.write_text("only\n")
    assert tail(log, 10) == "only"
    log.write_bytes(b"bad \xff byte")
    assert tail(log, 1) == "bad \ufffd byte"
    assert tail(tmp_path / "missing.log", 5) == ""


def test_tail_since_an_offset_shows_only_the_current_run(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("old 1\nold 2\n")
    offset = size(log)
    with open(log, "a") as handle:
        handle.write("new 1\nnew 2\n")
    assert tail(log, 10, since=offset) == "new 1\nnew 2"
    assert tail(log, 1, since=offset) == "new 2"
    assert size(tmp_path / "missing.log") == 0
