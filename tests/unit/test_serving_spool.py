"""The inference-event disk spool: FIFO across segments, commit semantics, restart, torn tails, bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from gyre_serving.spool import DiskSpool, SpoolFullError


def events(start: int, stop: int) -> list[tuple[str, bytes]]:
    return [(f"id-{i}", f"payload-{i}".encode()) for i in range(start, stop)]


def drain(spool: DiskSpool, batch: int = 7) -> list[str]:
    seen = []
    while True:
        chunk = spool.read(batch)
        if not chunk.events:
            return seen
        seen.extend(e.ce_id for e in chunk.events)
        spool.commit(chunk)


def test_reads_in_order_across_segments_and_deletes_used_segments(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, segment_bytes=200, fsync_interval_s=0)
    for i in range(0, 50, 5):
        assert spool.append(events(i, i + 5)) == 5
    assert spool.pending == 50
    assert len(list(tmp_path.glob("*.seg"))) > 3
    assert drain(spool) == [f"id-{i}" for i in range(50)]
    assert spool.pending == 0 and spool.size_bytes == 0
    assert len(list(tmp_path.glob("*.seg"))) == 1
    spool.close()


def test_read_without_commit_rereads_the_same_events(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.append(events(0, 3))
    first = spool.read(2)
    assert [e.payload for e in first.events] == [b"payload-0", b"payload-1"]
    assert [e.ce_id for e in spool.read(2).events] == ["id-0", "id-1"]
    spool.commit(first)
    spool.append(events(3, 4))
    assert [e.ce_id for e in spool.read(10).events] == ["id-2", "id-3"]


def test_survives_a_restart_from_the_committed_cursor(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, segment_bytes=100)
    spool.append(events(0, 20))
    spool.commit(spool.read(8))
    spool.close()
    reopened = DiskSpool(tmp_path, segment_bytes=100)
    assert reopened.pending == 12
    reopened.append(events(20, 22))
    assert drain(reopened) == [f"id-{i}" for i in range(8, 22)]


def test_a_torn_tail_is_cut_off_on_open(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.append(events(0, 4))
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    segment.write_bytes(segment.read_bytes()[:-3])  # the last record half-written
    reopened = DiskSpool(tmp_path)
    assert reopened.pending == 3
    reopened.append(events(4, 5))
    assert drain(reopened) == ["id-0", "id-1", "id-2", "id-4"]


def test_refuses_appends_beyond_max_bytes(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=100)
    spool.append(events(0, 3))
    with pytest.raises(SpoolFullError):
        spool.append(events(3, 10))
    assert spool.pending == 3
