"""The bus's own Prometheus metrics (through OpenTelemetry, like every Gyre metric; see telemetry.py).

* ``gyre_bus_consumer_stalled_seconds{group}`` (gauge): seconds a consumer has held records without
  finishing any of them (waiting out an outage, retrying, stuck); 0 while it keeps up or is idle.
  Readiness turns false when it passes ``GYRE_KAFKA_CONSUMER_STALL_AFTER_S``.
* ``gyre_bus_dead_lettered_records_total{group,reason}`` (counter): records sent to the group's
  dead-letter topic, by ``gyre_dlq_reason``.

Instruments are made once per meter (an OpenTelemetry meter refuses duplicates), and the gauge
reads every live consumer registered on that meter when Prometheus scrapes.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

METER_NAME = "gyre_common.bus"
"""Instrumentation scope of the bus's instruments."""


class _Observed(Protocol):
    group_id: str

    def stalled_s(self) -> float: ...


class BusMetrics:
    """The bus's instruments on one meter; get it with :func:`bus_metrics`."""

    def __init__(self, meter: Meter) -> None:
        self._consumers: weakref.WeakSet[_Observed] = weakref.WeakSet()
        self.dead_lettered = meter.create_counter(
            "gyre_bus_dead_lettered_records", unit="1",
            description="Records sent to a consumer group's dead-letter topic, by group and gyre_dlq_reason",
        )
        meter.create_observable_gauge(
            "gyre_bus_consumer_stalled_seconds", callbacks=[self._observe], unit="s",
            description="Seconds a consumer group member has held records without finishing any (0 when keeping up)",
        )

    def watch(self, consumer: _Observed) -> None:
        """Report ``consumer``'s stall time on the gauge while it lives."""
        self._consumers.add(consumer)

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        for consumer in list(self._consumers):
            yield Observation(round(consumer.stalled_s(), 3), {"group": consumer.group_id})


_by_meter: dict[int, tuple[Meter, BusMetrics]] = {}
_global_meter: list[Meter] = []
_lock = threading.Lock()


def bus_metrics(meter: Meter | None = None) -> BusMetrics:
    """The bus instruments on ``meter`` (the global meter provider's ``gyre_common.bus`` when None)."""
    with _lock:
        if meter is None:
            # The API hands out a new proxy meter per call before a provider is set: keep one.
            if not _global_meter:
                _global_meter.append(metrics.get_meter(METER_NAME))
            meter = _global_meter[0]
        # Keyed by id() with the meter kept alive beside it, so an id is never reused while cached.
        found = _by_meter.get(id(meter))
        if found is None:
            found = _by_meter[id(meter)] = (meter, BusMetrics(meter))
        return found[1]
