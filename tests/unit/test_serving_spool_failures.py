"""The spool under disk trouble and corruption: short writes, a full disk, failed rollbacks, bad CRCs,
mangled lengths and truncated records; and the emitter's drainer restarted after a failure."""

from __future__ import annotations

import errno
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_serving_emitter import World, batch, emitter, wait_until

from gyre_serving import metrics, spool
from gyre_serving.emitter import DroppingOverflow, SpoolingOverflow
from gyre_serving.spool import DiskSpool, SpoolChunk, encode_record


def events(start: int, stop: int) -> list[tuple[str, bytes]]:
    return [(f"id-{i}", f"payload-{i}".encode()) for i in range(start, stop)]


def drain(box: DiskSpool, batch_size: int = 3) -> list[str]:
    seen: list[str] = []
    for _ in range(1000):
        chunk = box.read(batch_size)
        seen.extend(e.ce_id for e in chunk.events)
        box.commit(chunk)
        if not chunk.events and box.pending == 0:
            return seen
    raise AssertionError("the spool never drained")


def count(metric: Any, label: str) -> float:
    return float(metric.labels(label)._value.get())


def quarantined(directory: Path) -> list[Path]:
    return sorted((directory / "quarantine").glob("*.bad"))


def test_short_writes_are_continued_and_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    monkeypatch.setattr(spool.os, "write", lambda fd, data: real_write(fd, bytes(data[:5])))
    before = count(metrics.EVENT_SPOOL_ERRORS, "short_write")
    box = DiskSpool(tmp_path, fsync_interval_s=0)
    assert box.append(events(0, 4)) == 4
    assert count(metrics.EVENT_SPOOL_ERRORS, "short_write") > before
    assert drain(box) == [f"id-{i}" for i in range(4)]


def test_a_full_disk_mid_write_leaves_no_torn_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = DiskSpool(tmp_path)
    box.append(events(0, 2))
    segment = next(tmp_path.glob("*.seg"))
    size = segment.stat().st_size
    real_write = os.write

    def half_then_enospc(fd: int, data: Any) -> int:
        if len(data) > 10:
            return real_write(fd, bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool.os, "write", half_then_enospc)
    with pytest.raises(OSError, match="No space"):
        box.append(events(2, 5))
    assert segment.stat().st_size == size and box.pending == 2
    monkeypatch.setattr(spool.os, "write", real_write)
    box.append(events(5, 6))
    assert drain(box) == ["id-0", "id-1", "id-5"]
    assert quarantined(tmp_path) == []


def test_a_failed_rollback_moves_on_to_a_new_segment_and_the_torn_bytes_are_set_aside(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = DiskSpool(tmp_path)
    box.append(events(0, 2))
    real_write = os.write
    monkeypatch.setattr(spool.os, "write", lambda fd, data: (real_write(fd, bytes(data[:7])), _enospc())[0])
    monkeypatch.setattr(spool.os, "ftruncate", lambda fd, size: _enospc())
    with pytest.raises(OSError):
        box.append(events(2, 3))
    monkeypatch.undo()
    box.append(events(3, 5))
    assert len(list(tmp_path.glob("*.seg"))) == 2
    before = count(metrics.EVENT_SPOOL_QUARANTINED, "truncated")
    assert drain(box) == ["id-0", "id-1", "id-3", "id-4"]
    assert count(metrics.EVENT_SPOOL_QUARANTINED, "truncated") == before + 1
    assert [len(p.read_bytes()) for p in quarantined(tmp_path)] == [7]


def _enospc() -> int:
    raise OSError(errno.ENOSPC, "No space left on device")


def _corrupt(directory: Path, record: int, at: int, value: bytes) -> None:
    """Overwrite bytes of the ``record``-th record (0-based) of the only segment."""
    segment = next(directory.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    offset = sum(len(encode_record(c, p)) for c, p in events(0, record))
    data[offset + at:offset + at + len(value)] = value
    segment.write_bytes(bytes(data))


def test_a_bad_crc_is_set_aside_once_and_the_rest_drains(tmp_path: Path) -> None:
    box = DiskSpool(tmp_path)
    box.append(events(0, 6))
    _corrupt(tmp_path, 2, 12, b"X")  # a payload byte of id-2
    before = count(metrics.EVENT_SPOOL_QUARANTINED, "crc")
    assert [e.ce_id for e in box.read(10).events] == ["id-0", "id-1", "id-3", "id-4", "id-5"]
    assert [e.ce_id for e in box.read(10).events] == ["id-0", "id-1", "id-3", "id-4", "id-5"]  # not committed
    assert count(metrics.EVENT_SPOOL_QUARANTINED, "crc") == before + 1
    assert len(quarantined(tmp_path)) == 1
    assert len(quarantined(tmp_path)[0].read_bytes()) == len(encode_record("id-2", b"payload-2"))
    box.close()
    reopened = DiskSpool(tmp_path)  # the count on open skips it too
    assert reopened.pending == 5
    assert drain(reopened) == ["id-0", "id-1", "id-3", "id-4", "id-5"]
    assert count(metrics.EVENT_SPOOL_QUARANTINED, "crc") == before + 1 and reopened.pending == 0


def test_a_mangled_length_does_not_swallow_the_records_after_it(tmp_path: Path) -> None:
    box = DiskSpool(tmp_path)
    box.append(events(0, 5))
    _corrupt(tmp_path, 1, 0, b"\xff\xff\xff\x00")  # id-1 claims ~4 GB
    assert drain(box, batch_size=2) == ["id-0", "id-2", "id-3", "id-4"]
    assert len(quarantined(tmp_path)) == 1


def test_a_truncated_record_in_an_older_segment_is_set_aside(tmp_path: Path) -> None:
    box = DiskSpool(tmp_path, segment_bytes=60)
    for i in range(6):
        box.append(events(i, i + 1))
    box.close()
    first = sorted(tmp_path.glob("*.seg"))[0]
    first.write_bytes(first.read_bytes()[:-4])
    reopened = DiskSpool(tmp_path, segment_bytes=60)
    # 23-byte records: the first segment holds id-0..id-2 (rolled at 60 bytes); id-2 lost its tail.
    assert drain(reopened) == ["id-0", "id-1", "id-3", "id-4", "id-5"]
    assert len(quarantined(tmp_path)) == 1


def test_a_spool_on_a_full_disk_drops_and_counts_without_raising(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fallback = DroppingOverflow()
    overflow = SpoolingOverflow(DiskSpool(tmp_path), fallback)
    monkeypatch.setattr(spool.os, "write", lambda fd, data: _enospc())
    before = count(metrics.EVENTS_DROPPED, "disk_full"), count(metrics.EVENT_SPOOL_ERRORS, "write")
    overflow.spill(batch("r", rows=3), "broker_error")
    assert fallback.dropped == {"disk_full": 3} and overflow.backlog == 0
    assert (count(metrics.EVENTS_DROPPED, "disk_full"), count(metrics.EVENT_SPOOL_ERRORS, "write")) == \
        (before[0] + 3, before[1] + 1)


def test_a_cursor_the_disk_refuses_is_kept_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = DiskSpool(tmp_path)
    box.append(events(0, 4))
    monkeypatch.setattr(spool.os, "replace", lambda *args: _enospc())
    box.commit(box.read(2))  # does not raise
    monkeypatch.undo()
    assert [e.ce_id for e in box.read(10).events] == ["id-2", "id-3"]


class FlakySpool(SpoolingOverflow):
    """Reading fails with a bug the first ``failures`` times."""

    def __init__(self, box: DiskSpool, failures: int) -> None:
        super().__init__(box)
        self.failures = failures

    def read(self, max_events: int) -> SpoolChunk:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("a bug in reading")
        return super().read(max_events)


async def test_the_drainer_is_restarted_after_a_failure_and_still_drains(tmp_path: Path) -> None:
    world = World()
    world.failing = True
    overflow = FlakySpool(DiskSpool(tmp_path), failures=2)
    emit = emitter(world, overflow=overflow)
    before = metrics.EVENT_DRAINER_RESTARTS._value.get()
    await emit.start()
    emit.emit(replace(batch("s", rows=2), event_id="e1"))
    await wait_until(lambda: overflow.backlog == 2)
    world.failing = False
    await wait_until(lambda: world.sent[-2:] == ["s:0", "s:1"])
    assert emit.stats.restarts == 2 and metrics.EVENT_DRAINER_RESTARTS._value.get() == before + 2
    assert emit.emit(batch("t"))
    await wait_until(lambda: world.sent[-1] == "t")
    await emit.stop()
