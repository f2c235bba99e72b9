"""The registry follower's per-record handling: nothing a record holds (or a bug while applying it)
escapes; each record is counted under one outcome."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gyre_common.settings import KafkaSettings
from gyre_common.topics import REGISTRY_EVENTS, full_name
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_serving import consumers, metrics
from gyre_serving.consumers import RegistryEventsFollower, event_problem
from gyre_serving.domain.registry import RegistryChange

KAFKA = KafkaSettings(topic_prefix="u.")
TOPIC = full_name(REGISTRY_EVENTS, "u.")
SHA = "ab" * 32


class Manager:
    alias = "production"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.applied: list[RegistryChange] = []

    async def apply(self, event: RegistryChange) -> bool:
        if self.fail:
            raise RuntimeError("a bug")
        self.applied.append(event)
        return True

    async def sync(self, snapshot: Any, *, complete: bool) -> None:
        raise RuntimeError("a bug in sync")


def record(event: events_pb2.RegistryEvent | bytes) -> Any:
    value = event if isinstance(event, bytes) else event.SerializeToString()
    return SimpleNamespace(topic=TOPIC, partition=0, offset=7, key=b"m", value=value, timestamp=1,
                           headers=[("content-type", b"application/protobuf")])


def outcome(name: str) -> float:
    return metrics.REGISTRY_EVENTS.labels(name)._value.get()


def alias_set(**fields: Any) -> events_pb2.RegistryEvent:
    base: dict[str, Any] = dict(kind=events_pb2.REGISTRY_EVENT_KIND_ALIAS_SET, model_name="m", version=1,
                                alias="production", artifact=common_pb2.ArtifactRef(uri="file:///a", sha256=SHA))
    base.update(fields)
    return events_pb2.RegistryEvent(**base)


def follower(manager: Manager) -> RegistryEventsFollower:
    return RegistryEventsFollower(KAFKA, manager, None, snapshot_complete=False,  # type: ignore[arg-type]
                                  resync_interval_s=0)


async def test_a_decoder_bug_counts_the_record_as_undecodable(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise OverflowError("not an EventDecodeError")

    monkeypatch.setattr(consumers, "decode_record", broken)
    manager = Manager()
    before = outcome("undecodable")
    await follower(manager)._handle(record(alias_set()))
    assert outcome("undecodable") == before + 1 and manager.applied == []


async def test_garbage_is_undecodable_and_a_failing_apply_is_counted() -> None:
    before = outcome("undecodable"), outcome("failed")
    await follower(Manager())._handle(record(b"\xff\xfe\x00garbage"))
    await follower(Manager(fail=True))._handle(record(alias_set()))
    assert (outcome("undecodable"), outcome("failed")) == (before[0] + 1, before[1] + 1)


@pytest.mark.parametrize(("event", "problem"), [
    (alias_set(model_name=""), "names no model"),
    (alias_set(version=0), "versions start at 1"),
    (alias_set(version=-3), "versions start at 1"),
    (alias_set(artifact=common_pb2.ArtifactRef(uri="file:///a", sha256="xyz")), "not 64 hex digits"),
    (alias_set(artifact=common_pb2.ArtifactRef(uri="file:///a", sha256="g" * 64)), "not 64 hex digits"),
])
async def test_events_about_nothing_valid_are_invalid(event: events_pb2.RegistryEvent, problem: str) -> None:
    assert problem in (event_problem(event) or "")
    manager = Manager()
    before = outcome("invalid")
    await follower(manager)._handle(record(event))
    assert outcome("invalid") == before + 1 and manager.applied == []


def test_a_well_formed_event_has_no_problem() -> None:
    assert event_problem(alias_set()) is None
    assert event_problem(alias_set(artifact=common_pb2.ArtifactRef(uri="file:///a"))) is None  # the loader refuses


async def test_a_failing_snapshot_apply_is_retried_not_raised() -> None:
    async def snapshot() -> dict[str, Any]:
        return {"production": {}}

    follow = RegistryEventsFollower(KAFKA, Manager(), snapshot, snapshot_complete=True,  # type: ignore[arg-type]
                                    resync_interval_s=0, retry_delay_s=0.25)
    assert await follow._sync() == 1.0 and not follow.synced
