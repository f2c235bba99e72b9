"""Dead-letter tools without a broker: rendering, replay headers, names, argument checks."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from gyre_cli.main import run as gyre
from gyre_common.bus.headers import dead_letter_headers
from gyre_common.deadletters import (
    REPLAYED_FROM,
    DeadLetterRecord,
    DeadLetterTools,
    PartitionCounts,
    record_json,
    replay_group,
    replay_headers,
)
from gyre_common.deadletters.routes import consumer_groups
from gyre_common.errors import InvalidArgument
from gyre_common.settings import KafkaSettings
from gyre_contracts.gyre.events.v1 import events_pb2 as ev

PREFIX = "gyre."


def dead_letter(value: bytes | None, content_type: bytes | None = b"application/protobuf",
                topic: str = "gyre.training.requests", extra: list[tuple[str, bytes]] | None = None,
                ) -> DeadLetterRecord:
    original = [("ce_id", b"id-1"), ("ce_type", b"gyre.events.v1.TrainingRequest")]
    if content_type is not None:
        original.append(("content-type", content_type))
    original += extra or []
    headers = dead_letter_headers(original, reason="handler_failed", error="boom", topic=topic, partition=2,
                                  offset=17, group="gyre.trainer", attempts=6,
                                  now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    return DeadLetterRecord("gyre.trainer.dlq", 1, 40, 1_767_323_045_000, b"churn", value, tuple(headers))


def test_protobuf_payload_is_decoded_with_the_original_topics_event_type() -> None:
    value = ev.TrainingRequest(request_id="r1", model_name="churn").SerializeToString()
    shown = record_json(dead_letter(value), PREFIX)
    assert shown["payload"] == {"encoding": "protobuf", "size": len(value),
                                "event_type": "gyre.events.v1.TrainingRequest",
                                "value": {"request_id": "r1", "model_name": "churn"}}
    assert shown["reason"] == "handler_failed" and shown["error"] == "boom" and shown["attempts"] == 6
    assert shown["original_topic"] == "gyre.training.requests"
    assert (shown["original_partition"], shown["original_offset"]) == (2, 17)
    assert shown["key"] == "churn" and shown["timestamp"] == "2026-01-02T03:04:05.000Z"
    assert shown["dead_lettered_at"] == "2026-01-02T03:04:05.000000Z"
    assert [h["name"] for h in shown["headers"]][:3] == ["ce_id", "ce_type", "content-type"]


def test_json_payload_is_shown_as_json_even_without_content_type() -> None:
    shown = record_json(dead_letter(b' {"model_name": 3}', content_type=None), PREFIX)
    assert shown["payload"]["encoding"] == "json"
    assert shown["payload"]["value"] == {"model_name": 3}


def test_undecodable_payload_is_base64_with_the_reason() -> None:
    shown = record_json(dead_letter(b"\xff\x00\x01"), PREFIX)
    assert shown["payload"]["encoding"] == "base64"
    assert base64.b64decode(shown["payload"]["value"]) == b"\xff\x00\x01"
    assert "invalid protobuf" in shown["payload"]["decode_error"]
    broken_json = record_json(dead_letter(b"{not json", content_type=b"application/json"), PREFIX)
    assert broken_json["payload"]["encoding"] == "base64" and "invalid JSON" in broken_json["payload"]["decode_error"]


def test_unknown_topic_payload_is_base64_and_tombstone_is_none() -> None:
    shown = record_json(dead_letter(b"\x08\x01", topic="other.topic"), PREFIX)
    assert shown["payload"]["encoding"] == "base64" and shown["payload"]["event_type"] is None
    assert "decode_error" not in shown["payload"]
    assert record_json(dead_letter(None), PREFIX)["payload"]["encoding"] == "none"


def test_non_utf8_header_and_key_are_base64() -> None:
    record = dead_letter(b"", extra=[("bin", b"\xff\xfe")])
    record = DeadLetterRecord(record.topic, 0, 0, 0, b"\xff", record.value, record.headers)
    shown = record_json(record, PREFIX)
    assert {"name": "bin", "value_base64": base64.b64encode(b"\xff\xfe").decode()} in shown["headers"]
    assert shown["key"] is None and shown["key_base64"] == base64.b64encode(b"\xff").decode()
    json.dumps(shown)  # everything is JSON-serialisable


def test_replay_headers_keep_the_original_ones_drop_dead_letter_ones_and_mark_the_replay() -> None:
    record = dead_letter(b"x", extra=[("traceparent", b"00-abc"), (REPLAYED_FROM, b"old/0/0")])
    assert replay_headers(record) == [("ce_id", b"id-1"), ("ce_type", b"gyre.events.v1.TrainingRequest"),
                                      ("content-type", b"application/protobuf"), ("traceparent", b"00-abc"),
                                      (REPLAYED_FROM, b"gyre.trainer.dlq/1/40")]


def test_names_and_counts() -> None:
    tools = DeadLetterTools(KafkaSettings(topic_prefix="t1."))
    assert tools.topic_of("monitor") == "t1.monitor.dlq"
    assert tools.group_of("t1.monitor-registry.dlq") == "monitor-registry"
    assert replay_group("t1.monitor.dlq") == "t1.monitor.replay"
    for bad in ("t1.monitor", "gyre.monitor.dlq", "t1..dlq"):
        with pytest.raises(InvalidArgument):
            tools.group_of(bad)
    counts = PartitionCounts(0, start_offset=5, end_offset=12, replayed_offset=None)
    assert (counts.count, counts.pending) == (7, 7)
    assert PartitionCounts(0, 5, 12, replayed_offset=9).pending == 3
    assert PartitionCounts(0, 5, 12, replayed_offset=2).pending == 7  # progress below the log start


async def test_arguments_are_checked_before_the_broker_is_asked() -> None:
    tools = DeadLetterTools(KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    with pytest.raises(InvalidArgument, match="limit must be between 1 and 500"):
        await tools.records("gyre.x.dlq", limit=501)
    with pytest.raises(InvalidArgument, match="offset needs a partition"):
        await tools.records("gyre.x.dlq", offset=3)
    with pytest.raises(InvalidArgument, match="after to_offset"):
        await tools.replay("gyre.x.dlq", from_offset=4, to_offset=3)
    with pytest.raises(InvalidArgument, match="0 or more"):
        await tools.record("gyre.x.dlq", -1, 0)
    with pytest.raises(InvalidArgument, match="at most"):
        await tools.record("gyre.x.dlq", 2**31, 0)
    with pytest.raises(InvalidArgument, match="at most"):
        await tools.replay("gyre.x.dlq", to_offset=2**63)


def test_consumer_groups_come_from_bus_consumers_only() -> None:
    from gyre_common.bus import Consumer

    async def handler(_: object) -> None: ...

    settings = KafkaSettings()
    first = Consumer(settings, group="a", topics=["inference.events"], service="s", handler=handler)
    second = Consumer(settings, group="b", topics=["registry.events"], service="s", handler=handler)
    assert consumer_groups([("relay", object()), ("a", first), ("b", second), ("again", first)]) == ["a", "b"]


def test_cli_refuses_bad_combinations_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    env = ["dlq", "--bootstrap-servers", "127.0.0.1:1"]
    assert gyre([*env, "replay", "gyre.x.dlq", "--offset", "3"]) == 2
    assert "--offset replays one record" in capsys.readouterr().err
    assert gyre([*env, "list", "--partition", "1"]) == 2
    assert "name the topic" in capsys.readouterr().err
    assert gyre([*env, "list", "gyre.x.dlq", "--limit", "0"]) == 2
    assert gyre([*env, "list", "--service", "no-such-service"]) == 2
    assert "no installed service 'no-such-service'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gyre([*env, "show", "gyre.x.dlq", "0", "-1"])  # argparse: offsets are 0 or more
