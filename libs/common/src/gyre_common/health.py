"""Liveness and readiness: named async checks polled in the background, reported over gRPC and HTTP.

Semantics:

* **live** (``/healthz``): the process runs its event loop; always 200 while it answers at all.
* **ready** (``/readyz``, gRPC ``grpc.health.v1`` for ``""`` and the service's names): every check
  passed on the last poll. A check passes when it returns anything but ``False`` within its
  timeout; an exception's message (or "timed out") becomes the failing check's detail. Before the
  first poll finishes, and from shutdown on, the process is not ready.

Checks are polled every ``readiness_interval_s`` seconds, concurrently, each bounded by
``readiness_timeout_s``; state changes are logged once, not on every poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from aiokafka.client import AIOKafkaClient
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from gyre_common.db.pool import probe_database
from gyre_common.settings import KafkaSettings

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[object]]
"""A readiness check: passes unless it returns ``False`` or raises (the exception says why)."""

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check on one poll.

    Attributes:
        ok: whether it passed.
        detail: "ok", or why it failed.
        checked_at: when the poll finished (UTC).
        duration_s: how long the check took, in seconds.
    """

    ok: bool
    detail: str
    checked_at: datetime
    duration_s: float

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "detail": self.detail, "checked_at": self.checked_at.isoformat(),
                "duration_s": round(self.duration_s, 4)}


@dataclass
class Readiness:
    """Polls named checks and drives gRPC health from them.

    Args:
        interval_s: seconds between polls.
        timeout_s: seconds one check may take before it counts as failing.
        health: the gRPC health servicer to keep in step (optional).
        service_names: gRPC health names set along with the overall ``""``.
    """

    interval_s: float = 1.0
    timeout_s: float = 2.0
    health: health_aio.HealthServicer | None = None
    service_names: list[str] = field(default_factory=list)
    _checks: dict[str, Check] = field(default_factory=dict)
    _results: dict[str, CheckResult] = field(default_factory=dict)
    _ready: bool = False
    _polled: bool = False
    _stopping: bool = False
    _task: asyncio.Task[None] | None = None

    def add_check(self, name: str, check: Check) -> None:
        """Register ``check`` under ``name`` (e.g. "database", "broker"); names are unique."""
        if name in self._checks:
            raise ValueError(f"readiness check {name!r} is already registered")
        self._checks[name] = check

    def add_service_name(self, name: str) -> None:
        """Also report readiness under gRPC health name ``name`` (a full gRPC service name)."""
        if name not in self.service_names:
            self.service_names.append(name)

    @property
    def is_ready(self) -> bool:
        """Whether every check passed on the last poll (False before the first and after shutdown)."""
        return self._ready

    def detail(self) -> dict[str, object]:
        """``{"ready": bool, "checks": {name: {...}}}`` for ``/readyz``; ``stopping`` while shutting down."""
        body: dict[str, object] = {
            "ready": self._ready,
            "checks": {name: result.as_dict() for name, result in self._results.items()},
        }
        if self._stopping:
            body["stopping"] = True
        elif not self._polled:
            body["starting"] = True
        return body

    def failing(self) -> list[str]:
        """Names of the checks that failed on the last poll."""
        return [name for name, result in self._results.items() if not result.ok]

    async def poll(self) -> bool:
        """Run every check once, concurrently, update the state, and return whether ready."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(name, self._checks[name]) for name in names))
        self._results = dict(zip(names, results, strict=True))
        self._polled = True
        await self._set_ready(all(result.ok for result in results) and not self._stopping)
        return self._ready

    async def _run(self, name: str, check: Check) -> CheckResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self.timeout_s):
                outcome = await check()
            ok, detail = outcome is not False, "ok" if outcome is not False else "check returned false"
        except TimeoutError:
            ok, detail = False, f"timed out after {self.timeout_s:g}s"
        except Exception as exc:  # a failing dependency is an answer, not a crash
            ok, detail = False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return CheckResult(ok, detail, datetime.now(UTC), loop.time() - started)

    async def _set_ready(self, ready: bool) -> None:
        changed = ready != self._ready
        self._ready = ready
        if self.health is not None:
            status = SERVING if ready else NOT_SERVING
            for name in ["", *self.service_names]:
                await self.health.set(name, status)
        if changed and not self._stopping:
            if ready:
                log.info("readiness: all checks pass", extra={"checks": sorted(self._results)})
            else:
                reasons = {name: self._results[name].detail for name in self.failing()}
                log.warning("readiness: not ready: %s", ", ".join(f"{k} ({v})" for k, v in reasons.items()),
                            extra={"failing": reasons})

    async def start(self) -> None:
        """Report NOT_SERVING, then poll every ``interval_s`` seconds in a background task."""
        await self._set_ready(False)
        self._task = asyncio.create_task(self._loop(), name="gyre-readiness")

    async def _loop(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:  # keep polling: a bug in one poll must not freeze readiness
                log.exception("readiness poll failed")
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        """Turn not ready for good (gRPC NOT_SERVING everywhere) and stop polling."""
        self._stopping = True
        self._ready = False
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def database_check(pool: asyncpg.Pool, timeout_s: float = 2.0) -> Check:
    """A check that runs ``SELECT 1`` on ``pool`` within ``timeout_s`` seconds."""

    async def check() -> None:
        await probe_database(pool, timeout_s)

    return check


class BrokerCheck:
    """A check that asks the Kafka broker for cluster metadata (a cheap request any broker answers).

    It keeps one :class:`AIOKafkaClient` between polls and opens a fresh one after a failure, so a
    restarted broker (or one that moved) is found again. Call :meth:`close` at shutdown.
    """

    def __init__(self, settings: KafkaSettings, client_id: str, timeout_s: float = 2.0) -> None:
        self._settings = settings
        self._client_id = client_id
        self._timeout_ms = max(1, int(timeout_s * 1000))
        self._client: AIOKafkaClient | None = None

    async def __call__(self) -> None:
        try:
            if self._client is None:
                client = AIOKafkaClient(bootstrap_servers=self._settings.bootstrap_servers,
                                        client_id=self._client_id, request_timeout_ms=self._timeout_ms)
                self._client = client
                await client.bootstrap()
            else:
                await self._client.fetch_all_metadata()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()


def grpc_health_servicer() -> health_aio.HealthServicer:
    """A grpc.aio ``grpc.health.v1`` servicer; register it with ``add_HealthServicer_to_server``."""
    return health_aio.HealthServicer()

