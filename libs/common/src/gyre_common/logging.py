"""Structured logs: one JSON object per line on stderr, with the current trace id, secrets masked.

Each line has ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``, ``service``, the active
span's ``trace_id``/``span_id`` when there is one, any ``extra={...}`` fields, and ``exc`` for
exceptions. Passwords inside URLs (``scheme://user:secret@host``) and values of ``password=``,
``token=`` and ``secret=`` pairs are replaced by ``***`` before the line is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
_SECRET_PAIR = re.compile(r"(?i)\b((?:password|passwd|token|secret|api[_-]?key)\s*[=:]\s*)[^\s,;&]+")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message"}


def mask_secrets(text: str) -> str:
    """``text`` with URL passwords and ``password=``/``token=``/``secret=`` values replaced by ``***``."""
    return _SECRET_PAIR.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring for the fields)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": mask_secrets(record.getMessage()),
            "service": self.service,
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = mask_secrets(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


class _GyreHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler we installed, so a second setup replaces it instead of doubling lines."""


def setup_logging(service: str, level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every log record of the process, as JSON lines, to ``stream`` (stderr by default).

    Raises:
        ValueError: ``level`` is not a logging level name.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _GyreHandler)]:
        root.removeHandler(handler)
    handler = _GyreHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root.addHandler(handler)
    root.setLevel(numeric)
    # Libraries that install their own handlers would print twice or in another format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
