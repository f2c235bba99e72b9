"""The runner's structured logging: one JSON object per line, secrets masked."""

from __future__ import annotations

import io
import json
import logging

import pytest

from gyre_common.db import redact_url
from gyre_common.logging import JsonFormatter, mask_secrets


def test_url_passwords_and_secret_pairs_are_masked() -> None:
    text = "connect postgresql://gyre:s3cret@db:5432/gyre token=abc123 password: hunter2"
    masked = mask_secrets(text)
    assert "s3cret" not in masked and "abc123" not in masked and "hunter2" not in masked
    assert "postgresql://gyre:***@db:5432/gyre" in masked


def test_redact_url_keeps_everything_but_the_password() -> None:
    assert redact_url("postgresql://u:pw@h:5432/d?sslmode=require") == "postgresql://u:***@h:5432/d?sslmode=require"
    assert redact_url("postgresql://u@h/d") == "postgresql://u@h/d"


def test_records_are_single_json_lines_with_extras() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("widget"))
    logger = logging.getLogger("test.runner.logging")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("cannot reach %s", "postgresql://u:pw@h/d", extra={"http_port": 7100})
        try:
            raise ValueError("multi\nline")
        except ValueError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "cannot reach postgresql://u:***@h/d"
    assert first["level"] == "WARNING" and first["service"] == "widget" and first["http_port"] == 7100
    assert first["ts"].endswith("+00:00")
    assert "ValueError: multi" in second["exc"]


def test_unknown_log_level_is_refused() -> None:
    from gyre_common.logging import setup_logging

    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("widget", "LOUD")
