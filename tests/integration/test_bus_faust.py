"""A faust-streaming agent on Tansu receives a Gyre-published event, decoded into an Envelope."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gyre_common.bus import Envelope, Publisher, ensure_topics
from gyre_common.settings import KafkaSettings
from gyre_common.topics import FEATURES_EVENTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev

faust_bus = pytest.importorskip("gyre_common.bus.faust")
pytestmark = pytest.mark.integration


async def test_faust_agent_receives_a_published_event_with_its_headers(
    bootstrap_servers: str, unique: str, tmp_path: Path
) -> None:
    settings = KafkaSettings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=f"t{unique}.",
        default_partitions=1,
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    await ensure_topics(settings, [FEATURES_EVENTS])
    app = faust_bus.make_faust_app("joiner", settings, datadir=str(tmp_path / "faust"), loghandlers=[])
    topic = faust_bus.faust_topic(app, settings, FEATURES_EVENTS)
    received: list[Envelope] = []
    arrived = asyncio.Event()

    @app.agent(topic)
    async def collect(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            received.append(faust_bus.envelope_from_faust(event, settings.topic_prefix))
            arrived.set()

    await app.start()
    try:
        async with Publisher(settings, service="features") as pub:
            sent = await pub.publish(
                FEATURES_EVENTS, ev.FeatureEvent(feature_view="fv", entity_id="e1"), key="e1",
                headers={"tenant": "acme"},
            )
        await asyncio.wait_for(arrived.wait(), 60)
    finally:
        await app.stop()
    assert received, "the faust agent got nothing"
    env = received[0]
    assert env.message == ev.FeatureEvent(feature_view="fv", entity_id="e1")
    assert (env.ce_id, env.source, env.key, env.offset) == (sent.ce_id, "features", "e1", sent.offset)
    assert env.headers["tenant"] == b"acme"
    assert env.time.tzinfo is not None


def test_broker_url_lists_every_bootstrap_server() -> None:
    settings = KafkaSettings(bootstrap_servers="a:1, b:2")
    assert faust_bus.faust_broker_url(settings) == "kafka://a:1;kafka://b:2"
