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
On open, a torn record at the end of the newest segment (a machine crash mid-write) is cut off.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
_ID_LENGTH = struct.Struct(">H")
_SUFFIX = ".seg"
_CURSOR = "cursor"
_READ_BLOCK = 1 << 20


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


def _decode_body(body: bytes) -> SpooledEvent:
    (n,) = _ID_LENGTH.unpack_from(body)
    return SpooledEvent(body[2:2 + n].decode(), body[2 + n:])


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

        Raises:
            SpoolFullError: the spool already holds ``max_bytes``.
            OSError: the disk refused the write (e.g. full).
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
        if self._write_size >= self.segment_bytes:
            self._roll()
        os.write(self._fd, data)
        self._write_size += len(data)
        self._bytes += len(data)
        self._pending += count
        self._dirty = True
        if time.monotonic() - self._last_sync >= self.fsync_interval_s:
            self.sync()
        return count

    def sync(self) -> None:
        """fsync what was appended since the last sync."""
        if self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """fsync and close the write segment (the spool is reopened by constructing it again)."""
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- reading ---------------------------------------------------------------------------------

    def read(self, max_events: int) -> SpoolChunk:
        """Up to ``max_events`` events from the cursor on, oldest first (empty when none).

        Reading does not move the cursor: until :meth:`commit`, the same events are read again.
        """
        events: list[SpooledEvent] = []
        seq, offset = self._cursor
        while True:
            offset, complete = self._read_segment(seq, offset, max_events, events)
            if len(events) >= max_events or seq >= self._write_seq or not complete:
                break
            seq, offset = seq + 1, 0
        return SpoolChunk(events, (seq, offset))

    def _read_segment(self, seq: int, offset: int, max_events: int, events: list[SpooledEvent]) -> tuple[int, bool]:
        """Append records of segment ``seq`` from ``offset`` to ``events``; (new offset, reached its end)."""
        try:
            segment = open(self._path(seq), "rb")  # closed by the with below
        except FileNotFoundError:
            return offset, True
        with segment:
            segment.seek(offset)
            buffer = b""
            while len(events) < max_events:
                block = segment.read(_READ_BLOCK)
                if not block:
                    return offset, not buffer
                buffer += block
                pos = 0
                while pos + _HEADER.size <= len(buffer) and len(events) < max_events:
                    length, _crc = _HEADER.unpack_from(buffer, pos)
                    end = pos + _HEADER.size + length
                    if end > len(buffer):
                        break
                    events.append(_decode_body(buffer[pos + _HEADER.size:end]))
                    pos = end
                offset += pos
                buffer = buffer[pos:]
        return offset, False

    def commit(self, chunk: SpoolChunk) -> None:
        """Mark ``chunk``'s events delivered: move the cursor past them and delete used-up segments."""
        if not chunk.events:
            return
        self._cursor = chunk.end
        self._pending = max(0, self._pending - len(chunk.events))
        tmp = self.directory / f"{_CURSOR}.tmp"
        tmp.write_text(f"{chunk.end[0]} {chunk.end[1]}\n")
        os.replace(tmp, self.directory / _CURSOR)
        for seq in self._segments():
            if seq < chunk.end[0]:
                path = self._path(seq)
                self._bytes -= path.stat().st_size
                path.unlink()
        if self._pending == 0 and chunk.end[0] == self._write_seq:
            # Everything delivered: start afresh so the directory does not keep a large empty-in-effect segment.
            self._roll()
            self._cursor = (self._write_seq, 0)
            tmp.write_text(f"{self._write_seq} 0\n")
            os.replace(tmp, self.directory / _CURSOR)
            for seq in self._segments():
                if seq < self._write_seq:
                    self._path(seq).unlink()
            self._bytes = 0

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
        """Count pending records, drop segments before the cursor, cut a torn tail off the last segment."""
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
            while pos + _HEADER.size <= len(data):
                length, crc = _HEADER.unpack_from(data, pos)
                end = pos + _HEADER.size + length
                if end > len(data) or zlib.crc32(data[pos + _HEADER.size:end]) != crc:
                    break
                self._pending += 1
                pos = good = end
            if good < len(data):
                log.warning("inference event spool: cutting %d unreadable bytes off %s (a write torn by a crash)",
                            len(data) - good, path.name)
                with open(path, "r+b") as segment:
                    segment.truncate(good)
            self._bytes += good
        if self._pending:
            log.info("inference event spool: %d events from a previous run wait for the broker", self._pending)

    def _roll(self) -> None:
        self.sync()
        os.close(self._fd)
        self._write_seq += 1
        self._fd = os.open(self._path(self._write_seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._write_size = 0


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
