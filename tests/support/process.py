"""Run a Gyre service as a real subprocess and follow its JSON log lines (tests only)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """A service started with ``python -m module``; stderr is collected line by line in a thread.

    Only the given ``env`` plus PATH/HOME reach the child, so a developer's own ``GYRE_*``
    variables never leak into a test.
    """

    def __init__(self, module: str, env: Mapping[str, str]) -> None:
        base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
        self.process = subprocess.Popen(
            [sys.executable, "-m", module], cwd=REPO_ROOT, env={**base, **env},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records so far (non-JSON lines are skipped)."""
        parsed = []
        for line in list(self.lines):
            try:
                parsed.append(json.loads(line))
            except ValueError:
                continue
        return parsed

    def wait_for_record(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first log record for which ``match`` is true; TimeoutError (with the log) otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for record in self.records():
                    if match(record):
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise TimeoutError(f"no matching log record within {timeout}s; log:\n" + self.log())
                self._changed.wait(min(remaining, 0.2))

    def wait_ready_line(self, timeout: float = 30.0) -> dict[str, Any]:
        """The runner's ``ready`` record (carries ``http_port`` and ``grpc_port``)."""
        return self.wait_for_record(lambda r: r.get("msg") == "ready" and "http_port" in r, timeout)

    def log(self) -> str:
        return "\n".join(self.lines)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(5)
