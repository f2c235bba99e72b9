"""A local, append-only disk spool of inference events, for while the broker is away.

Layout of the spool directory (one per serving process: two processes must not share one):

* ``<seq>.seg`` (``seq`` zero-padded to 20 digits): segment files, written in order and only ever
  appended to. A segment is closed once it exceeds ``segment_bytes`` and a new one is started.
* ``cursor``: ``"<seq> <offset>"``, the first record not yet acknowledged by the broker. It is
  replaced atomically (write to a temporary file, then rename) after each acknowledged chunk.
  Segments entirely before the cursor are deleted.

One record is ``length`` (4 bytes, big-endian), ``crc32`` of the payload (4 bytes, big-endian) and
the payload: ``ce_id`` length (2 bytes, big-endian), ``ce_id`` (UTF-8), then the serialized
``gyre.events.v1.InferenceEvent``. The ``ce_id`` is kept so that an event re-sent after a crash or
a failed acknowledgement carries the same CloudEvents id: consumers dedupe on it (at-least-once).

Durability (the fsync policy): each append is a single ``write(2)`` of whole records, so once
:meth:`DiskSpool.append` returns the records are in the operating system's page cache and survive
a crash of the serving process. ``fsync`` runs on an append when ``fsync_interval_s`` has passed
since the last one, and when a segment is closed and the spool is closed; so a crash of the whole
machine loses at most the last ``fsync_interval_s`` of spooled events (0 fsyncs every append).
On open, a torn record at the end of the newest segment (a machine crash mid-write) is set aside
and cut off.

Failures (each counted in ``gyre_serving_inference_event_spool_errors{operation}``, never raised
into a prediction):

* A short ``write(2)`` is continued until every byte is written (counted as ``short_write``).
  A write that fails part-way (a full disk: ENOSPC) is rolled back with ``ftruncate`` to the last
  whole record and raises :class:`OSError`, so the caller drops those events and counts them;
  if even the rollback fails, the next append starts a new segment and the torn bytes are set
  aside when read.
* A failed fsync is logged and counted: the records are in the page cache already.
* A cursor that cannot be saved is logged and counted; the position is kept in memory, so at
  worst events are re-sent after a restart (consumers dedupe on ``ce_id``).
* Reading checks every record's CRC. A record that fails it, does not decode, or runs past the
  end of its segment is *set aside*: the bytes from it up to the next record that passes (found
  by scanning, so the rest of the segment still drains) are copied to
  ``quarantine/<seq>-<offset>.bad`` and counted in
  ``gyre_serving_inference_event_spool_quarantined{reason}`` (``crc``, ``truncated``,
  ``undecodable``). Scanning reads the rest of that segment into memory (at most ``segment_bytes``).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gyre_serving import metrics

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
_ID_LENGTH = struct.Struct(">H")
_SUFFIX = ".seg"
_CURSOR = "cursor"
_READ_BLOCK = 1 << 20
_QUARANTINE = "quarantine"


@dataclass(frozen=True, slots=True)
class SpooledEvent:
    """One spooled event: its CloudEvents id and the serialized ``InferenceEvent``."""

    ce_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpoolChunk:
    """Events read from the spool, oldest first, and the position just after them.

    Hand it back to :meth:`DiskSpool.commit` once the broker acknowledged every event in it.
    """

    events: list[SpooledEvent]
    end: tuple[int, int]


class SpoolFullError(RuntimeError):
    """The spool holds ``max_bytes`` already; the events were not written."""


def encode_record(ce_id: str, payload: bytes) -> bytes:
    """One record (header + ce_id + payload) as written to a segment."""
    key = ce_id.encode()
    body = _ID_LENGTH.pack(len(key)) + key + payload
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def _decode_body(body: bytes) -> SpooledEvent | None:
    """The event in a record's body; None when the body cannot be one (too short, bad ce_id)."""
    if len(body) < _ID_LENGTH.size:
        return None
    (n,) = _ID_LENGTH.unpack_from(body)
    if _ID_LENGTH.size + n > len(body):
        return None
    try:
        return SpooledEvent(body[2:2 + n].decode(), body[2 + n:])
    except UnicodeDecodeError:
        return None


def _record_at(data: bytes | memoryview, pos: int) -> tuple[SpooledEvent | None, int, str]:
    """The record at ``pos`` of ``data``: (event, end offset, "") when whole and sound, else
    (None, pos, reason) with reason ``truncated`` (runs past the end of ``data``), ``crc`` or
    ``undecodable``."""
    if pos + _HEADER.size > len(data):
        return None, pos, "truncated"
    length, crc = _HEADER.unpack_from(data, pos)
    end = pos + _HEADER.size + length
    if end > len(data):
        return None, pos, "truncated"
    body = bytes(data[pos + _HEADER.size:end])
    if zlib.crc32(body) != crc:
        return None, pos, "crc"
    event = _decode_body(body)
    if event is None:
        return None, pos, "undecodable"
    return event, end, ""


def _next_record(data: bytes, start: int) -> int:
    """The first offset from ``start`` on where a sound record begins; ``len(data)`` if none."""
    for pos in range(start, len(data) - _HEADER.size + 1):
        if _record_at(data, pos)[0] is not None:
            return pos
    return len(data)


class DiskSpool:
    """FIFO of serialized events on local disk; one writer and one reader, on the event loop.

    Args:
        directory: where segments and the cursor live (created if missing).
        segment_bytes: size after which a segment is closed and a new one started.
        max_bytes: most bytes kept on disk; appends beyond it raise :class:`SpoolFullError`.
        fsync_interval_s: longest time between fsyncs of appended data (see the module docstring).

    Raises:
        OSError: the directory cannot be created or read.
    """

    def __init__(self, directory: str | Path, *, segment_bytes: int = 64 << 20, max_bytes: int = 1 << 30,
                 fsync_interval_s: float = 1.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.fsync_interval_s = fsync_interval_s
        self._cursor = self._read_cursor()
        self._set_aside_paths: set[Path] = set()
        self._pending = 0
        self._bytes = 0
        self._recover()
        self._write_seq = max(self._segments(), default=self._cursor[0])
        self._fd = os.open(self._path(self._write_seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._write_size = os.fstat(self._fd).st_size
        self._last_sync = time.monotonic()
        self._dirty = False
        self._lock_fd = -1

    # -- state -----------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Events written and not yet committed (acknowledged)."""
        return self._pending

    @property
    def size_bytes(self) -> int:
        """Bytes on disk in segments not yet deleted (including committed records of the oldest)."""
        return self._bytes

    # -- writing ---------------------------------------------------------------------------------

    def append(self, events: Iterable[tuple[str, bytes]]) -> int:
        """Append ``(ce_id, serialized event)`` pairs as one write; returns how many.

        Either every record is written or none is (a failed write is rolled back, see the module
        docstring); a failing fsync does not fail the append.

        Raises:
            SpoolFullError: the spool already holds ``max_bytes``.
            OSError: the disk refused the write (e.g. ENOSPC, full); nothing of it stays.
        """
        data = b"".join(encode_record(ce_id, payload) for ce_id, payload in events)
        if not data:
            return 0
        if self._bytes + len(data) > self.max_bytes:
            raise SpoolFullError(f"the inference event spool in {self.directory} holds {self._bytes} bytes; "
                                 f"at most {self.max_bytes}")
        count = 0
        offset = 0
        while offset < len(data):  # count records without decoding them
            length, _ = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size + length
            count += 1
        if self._fd < 0 or self._write_size >= self.segment_bytes:
            self._roll()
        start = self._write_size
        try:
            self._write_all(data)
        except OSError:
            self._roll_back(start)
            raise
        self._write_size += len(data)
        self._bytes += len(data)
        self._pending += count
        self._dirty = True
        if time.monotonic() - self._last_sync >= self.fsync_interval_s:
            try:
                self.sync()
            except OSError as exc:  # the records are in the page cache: only a machine crash loses them
                _error("fsync", exc)
        return count

    def _write_all(self, data: bytes) -> None:
        """Write all of ``data``, continuing after short writes."""
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            if written <= 0:
                raise OSError(errno.EIO, f"write to the spool segment made no progress ({written})")
            if written < len(view):
                metrics.EVENT_SPOOL_ERRORS.labels("short_write").inc()
            view = view[written:]

    def _roll_back(self, size: int) -> None:
        """Cut a failed write off the write segment, back to ``size`` bytes (whole records)."""
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:
            # The torn bytes stay: start a new segment, and the reader sets them aside.
            _error("rollback", exc)
            self._write_size = self.segment_bytes

    def sync(self) -> None:
        """fsync what was appended since the last sync.

        Raises:
            OSError: fsync failed.
        """
        self._last_sync = time.monotonic()
        if self._dirty and self._fd >= 0:
            self._dirty = False
            os.fsync(self._fd)

    def close(self) -> None:
        """fsync and close the write segment (the spool is reopened by constructing it again)."""
        if self._fd >= 0:
            try:
                self.sync()
            except OSError as exc:
                _error("fsync", exc)
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- reading ---------------------------------------------------------------------------------

    def read(self, max_events: int) -> SpoolChunk:
        """Up to ``max_events`` events from the cursor on, oldest first (empty when none).

        Reading does not move the cursor: until :meth:`commit`, the same events are read again.
        Unsound records on the way are set aside (module docstring) and skipped; a chunk may then
        hold no events yet end past them, so commit it anyway.

        Raises:
            OSError: a segment could not be read.
        """
        events: list[SpooledEvent] = []
        seq, offset = self._cursor
        while True:
            offset, complete = self._read_segment(seq, offset, max_events, events)
            if len(events) >= max_events or seq >= self._write_seq or not complete:
                break
            seq, offset = seq + 1, 0
        if not events and seq >= self._write_seq and complete:
            self._pending = 0  # whatever was counted turned out unsound and was set aside
        return SpoolChunk(events, (seq, offset))

    def _read_segment(self, seq: int, offset: int, max_events: int, events: list[SpooledEvent]) -> tuple[int, bool]:
        """Append records of segment ``seq`` from ``offset`` to ``events``; (new offset, reached its end)."""
        try:
            segment = open(self._path(seq), "rb")  # closed by the with below
        except FileNotFoundError:
            return offset, True
        with segment:
            size = os.fstat(segment.fileno()).st_size
            segment.seek(offset)
            buffer = b""  # the bytes of the segment from ``offset`` on, as far as read
            while len(events) < max_events:
                pos = 0
                while len(events) < max_events and pos + _HEADER.size <= len(buffer):
                    length, _crc = _HEADER.unpack_from(buffer, pos)
                    if pos + _HEADER.size + length > len(buffer) and offset + pos + _HEADER.size + length <= size:
                        break  # whole on disk, not yet in the buffer: read on
                    event, end, reason = _record_at(buffer, pos)
                    if event is None:
                        resume = self._set_aside(segment, seq, offset + pos, size, reason)
                        segment.seek(resume)
                        offset, buffer, pos = resume, b"", 0
                        continue
                    events.append(event)
                    pos = end
                offset += pos
                buffer = buffer[pos:]
                if len(events) >= max_events:
                    break
                block = segment.read(_READ_BLOCK)
                if not block:
                    if buffer:  # a few bytes, less than a header, at the end
                        offset = self._set_aside(segment, seq, offset, size, "truncated")
                    return offset, True
                buffer += block
        return offset, False

    def _set_aside(self, segment: BinaryIO, seq: int, start: int, size: int, reason: str) -> int:
        """Copy the unsound bytes from ``start`` up to the next sound record of the segment to the
        quarantine folder (once per position), count and log them; returns where reading resumes."""
        segment.seek(start)
        rest = segment.read(size - start)
        resume = start + _next_record(rest, 1)
        target = self.directory / _QUARANTINE / f"{seq:020d}-{start:020d}.bad"
        if target in self._set_aside_paths or target.exists():
            return resume
        self._set_aside_paths.add(target)
        metrics.EVENT_SPOOL_QUARANTINED.labels(reason).inc()
        log.error("inference event spool: %d unreadable bytes (%s) at %s offset %d set aside in %s; reading on "
                  "after them", resume - start, reason, self._path(seq).name, start, target)
        try:
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(rest[:resume - start])
        except OSError as exc:  # keeping a copy is a courtesy: draining the rest matters more
            _error("quarantine", exc)
        return resume

    def commit(self, chunk: SpoolChunk) -> None:
        """Mark ``chunk``'s events delivered: move the cursor past them and delete used-up segments.

        Never raises: a cursor or deletion the disk refuses is logged and counted, and the position
        is kept in memory (after a restart those events may be sent again; consumers dedupe).
        """
        if chunk.end == self._cursor:
            return
        self._cursor = chunk.end
        self._pending = max(0, self._pending - len(chunk.events))
        self._save_cursor(chunk.end)
        for seq in self._segments():
            if seq < chunk.end[0]:
                self._delete(seq)
        if self._pending == 0 and chunk.end[0] == self._write_seq:
            # Everything delivered: start afresh so the directory does not keep a large empty-in-effect segment.
            try:
                self._roll()
            except OSError as exc:
                _error("roll", exc)
                return
            self._cursor = (self._write_seq, 0)
            self._save_cursor(self._cursor)
            for seq in self._segments():
                if seq < self._write_seq:
                    self._delete(seq)
            self._bytes = 0

    def _save_cursor(self, cursor: tuple[int, int]) -> None:
        tmp = self.directory / f"{_CURSOR}.tmp"
        try:
            tmp.write_text(f"{cursor[0]} {cursor[1]}\n")
            os.replace(tmp, self.directory / _CURSOR)
        except OSError as exc:
            _error("cursor", exc)

    def _delete(self, seq: int) -> None:
        path = self._path(seq)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            _error("delete", exc)
            return
        self._bytes = max(0, self._bytes - size)

    # -- internals -------------------------------------------------------------------------------

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}{_SUFFIX}"

    def _segments(self) -> list[int]:
        return sorted(int(p.name[: -len(_SUFFIX)]) for p in self.directory.glob(f"*{_SUFFIX}")
                      if p.name[: -len(_SUFFIX)].isdigit())

    def _read_cursor(self) -> tuple[int, int]:
        try:
            seq, offset = (self.directory / _CURSOR).read_text().split()
            return int(seq), int(offset)
        except (FileNotFoundError, ValueError):
            segments = self._segments()
            return (segments[0] if segments else 0), 0

    def _recover(self) -> None:
        """Count pending records, drop segments before the cursor, set aside and cut a torn tail off
        the last segment. Unsound records elsewhere are left for :meth:`read` to set aside."""
        segments = self._segments()
        cursor_seq, cursor_offset = self._cursor
        if segments and cursor_seq < segments[0]:
            self._cursor = cursor_seq, cursor_offset = segments[0], 0
        for seq in segments:
            path = self._path(seq)
            if seq < cursor_seq:
                path.unlink()
                continue
            data = path.read_bytes()
            pos = cursor_offset if seq == cursor_seq else 0
            good = pos
            while pos < len(data):
                event, end, _reason = _record_at(data, pos)
                if event is None:
                    pos = _next_record(data, pos + 1)
                    continue
                self._pending += 1
                pos = good = end
            if good < len(data) and seq == segments[-1]:
                log.warning("inference event spool: cutting %d unreadable bytes off %s (a write torn by a crash)",
                            len(data) - good, path.name)
                with open(path, "r+b") as segment:
                    self._set_aside(segment, seq, good, len(data), "truncated")
                    segment.truncate(good)
                data = data[:good]
            self._bytes += len(data)
        if self._pending:
            log.info("inference event spool: %d events from a previous run wait for the broker", self._pending)

    def _roll(self) -> None:
        """Close the write segment and start the next one.

        Raises:
            OSError: the new segment could not be created (the next append tries again).
        """
        if self._fd >= 0:
            try:
                self.sync()
            except OSError as exc:
                _error("fsync", exc)
            os.close(self._fd)
            self._fd = -1
        self._write_seq += 1
        self._write_size = 0
        self._fd = os.open(self._path(self._write_seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def _error(operation: str, exc: OSError) -> None:
    metrics.EVENT_SPOOL_ERRORS.labels(operation).inc()
    log.error("inference event spool: %s failed: %s", operation, exc)


def open_spool(parent: str | Path, *, slots: int = 64, **options: float) -> DiskSpool:
    """The spool in the first free slot ``<parent>/<n>``: one whose ``lock`` no live process holds.

    The lock (``flock``) is held until the process exits, so replicas on one host never share a
    spool, and a process started after one died takes over its slot and drains what it left.

    Raises:
        OSError: the folder cannot be created, or all ``slots`` are taken.
    """
    root = Path(parent)
    root.mkdir(parents=True, exist_ok=True)
    for n in range(slots):
        directory = root / str(n)
        directory.mkdir(exist_ok=True)
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        spool = DiskSpool(directory, **options)  # type: ignore[arg-type]
        spool._lock_fd = fd
        return spool
    raise OSError(f"all {slots} spool slots under {root} are taken by running processes")
