"""Reading the end of a log file without reading all of it."""

from __future__ import annotations

import os
from pathlib import Path

_BLOCK = 8192


def size(path: Path) -> int:
    """Current size of ``path`` in bytes (0 when missing): pass it to :func:`tail` as ``since``."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def tail(path: Path, lines: int, since: int = 0) -> str:
    """The last ``lines`` lines of ``path`` written at or after byte offset ``since``.

    Decoded as UTF-8 with bad bytes replaced; "" when the file is missing. ``since`` keeps an
    error message to the output of the current run of a log that is appended across runs.
    """
    if lines <= 0:
        return ""
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            position, data = end, b""
            # A trailing newline ends the last line; it does not start an empty one.
            while position > since and data.count(b"\n") <= lines:
                step = min(_BLOCK, position - since)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])
