"""a. Features in: a feature view over REST, the dataset as JSON from a plain producer, checked in the stores."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer

from gyre_common.topics import FEATURES_EVENTS
from gyre_stack.demo.checks import LoopError, get_json, poll
from gyre_stack.demo.data import T0, rfc3339

if TYPE_CHECKING:
    from gyre_stack.demo.loop import Loop


async def run(loop: Loop) -> None:
    """Register the view, publish the 569 rows, check offline rows, three online rows bit for bit and a
    training set over the window."""
    plan, base = loop.plan, loop.endpoints["features"].http + "/api/v1"
    view = {"name": plan.feature_view, "entity": "patient", "ttl_seconds": 0,
            "description": "scikit-learn's breast cancer dataset (e2e demo)",
            "features": [*({"name": n, "type": "float"} for n in loop.names), {"name": "target", "type": "int"}]}
    response = await loop.http.post(f"{base}/feature-views", json=view)
    if response.status_code not in (200, 201):
        raise LoopError(f"registering the feature view failed: {response.status_code} {response.text}")
    loop.say(f"a. feature view {plan.feature_view!r} registered (30 float features + int label 'target')")

    await _publish(loop)
    loop.say(f"a. {len(loop.data)} JSON feature events published by a plain aiokafka producer")

    rows = len(loop.data)

    async def stored() -> dict[str, Any] | None:
        profile = await get_json(loop.http, f"{base}/feature-views/{plan.feature_view}/profile")
        return profile if profile and profile["rows"] == rows else None
    await poll(stored, within_s=plan.deadline_s, what=f"{rows} rows in the offline store")

    picks = [0, 17, rows - 1]
    online = (await loop.http.post(f"{base}/online-features", json={
        "feature_view": plan.feature_view, "entity_ids": [f"patient-{i}" for i in picks]})).json()
    for i, got in zip(picks, online["rows"], strict=True):
        expected = [float(v) for v in loop.data[i]]
        if [got["values"][n] for n in loop.names] != expected or got["values"]["target"] != int(loop.target[i]):
            raise LoopError(f"online features of patient-{i} differ from the dataset: {got}")
    training = await loop.http.post(f"{base}/training-sets", json={
        "feature_view": plan.feature_view, "label": "target",
        "window_start": rfc3339(T0), "window_end": rfc3339(T0 + timedelta(days=1))})
    training.raise_for_status()
    if training.json()["row_count"] != rows:
        raise LoopError(f"training set has {training.json()['row_count']} rows, expected {rows}")
    loop.say(f"a. stored: offline {rows} rows, online values of {len(picks)} patients exact, "
             f"training set of {rows} rows")


async def _publish(loop: Loop) -> None:
    """Every row as a JSON FeatureEvent, the way a producer in any language sends it: JSON bytes, a
    content-type header, the entity id as key; ``acks="all"`` without idempotence (Tansu has none)."""
    producer = AIOKafkaProducer(bootstrap_servers=loop.endpoints.bootstrap_servers, acks="all",
                                enable_idempotence=False)
    await producer.start()
    try:
        sends = []
        for i, (row, label) in enumerate(zip(loop.data, loop.target, strict=True)):
            event = {"featureView": loop.plan.feature_view, "entityId": f"patient-{i}",
                     "eventTime": rfc3339(T0 + timedelta(minutes=i)),
                     "values": {**{n: {"doubleValue": float(v)} for n, v in zip(loop.names, row, strict=True)},
                                "target": {"int64Value": str(int(label))}},
                     "source": "sklearn-breast-cancer"}
            sends.append(await producer.send(loop.endpoints.topic(FEATURES_EVENTS), json.dumps(event).encode(),
                                             key=f"patient-{i}".encode(),
                                             headers=[("content-type", b"application/json")]))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
