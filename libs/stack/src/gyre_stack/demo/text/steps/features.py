"""a. Text events in: a feature view with a TEXT feature and a string label, the generated corpus as JSON
feature events from a plain producer, checked in the offline and online stores and a training set."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer

from gyre_common.topics import FEATURES_EVENTS
from gyre_stack.demo.checks import LoopError, get_json, poll
from gyre_stack.demo.text.data import T0, TOPICS, entity_id, event_time, rfc3339
from gyre_stack.demo.text.plan import LABEL, TEXT_FEATURE

if TYPE_CHECKING:
    from gyre_stack.demo.text.loop import TextLoop

#: The window of the first training (every row of the corpus lies in it).
WINDOW = (T0, T0 + timedelta(days=1))


async def run(loop: TextLoop) -> None:
    """Register the view, publish the corpus, check offline rows, three online rows and a training set
    (its texts and labels are the corpus's; its fingerprint is kept as ``fingerprint_before``)."""
    plan, base = loop.plan, loop.endpoints["features"].http + "/api/v1"
    view = {"name": plan.feature_view, "entity": "document", "ttl_seconds": 0,
            "description": "generated English sentences on three topics (text demo)",
            "features": [{"name": TEXT_FEATURE, "type": "text"}, {"name": LABEL, "type": "string"}]}
    response = await loop.http.post(f"{base}/feature-views", json=view)
    if response.status_code not in (200, 201):
        raise LoopError(f"registering the feature view failed: {response.status_code} {response.text}")
    loop.say(f"a. feature view {plan.feature_view!r} registered (TEXT feature {TEXT_FEATURE!r} + string label "
             f"{LABEL!r}: {', '.join(TOPICS)})")

    await _publish(loop)
    rows = len(loop.data)
    loop.say(f"a. {rows} JSON feature events published by a plain aiokafka producer (texts as stringValue), "
             f"{len(loop.data.mislabelled)} of them with the wrong topic")

    async def stored() -> dict[str, Any] | None:
        profile = await get_json(loop.http, f"{base}/feature-views/{plan.feature_view}/profile")
        return profile if profile and profile["rows"] == rows else None
    await poll(stored, within_s=plan.deadline_s, what=f"{rows} rows in the offline store")

    picks = [0, 17, rows - 1]
    online = (await loop.http.post(f"{base}/online-features", json={
        "feature_view": plan.feature_view, "entity_ids": [entity_id(i) for i in picks]})).json()
    for i, got in zip(picks, online["rows"], strict=True):
        if got["values"].get(TEXT_FEATURE) != loop.data.texts[i] or got["values"].get(LABEL) != loop.data.labels[i]:
            raise LoopError(f"online features of {entity_id(i)} differ from the corpus: {got}")
    summary = await training_set(loop)
    if summary["labels"] != {entity_id(i): label for i, label in enumerate(loop.data.labels)}:
        raise LoopError("the training set's labels differ from the corpus's")
    if summary["texts"] != {entity_id(i): text for i, text in enumerate(loop.data.texts)}:
        raise LoopError("the training set's texts differ from the corpus's")
    loop.summary["fingerprint_before"] = summary["fingerprint"]
    loop.say(f"a. stored: offline {rows} rows, online texts and labels of {len(picks)} documents exact, "
             f"training set of {rows} rows (fingerprint {summary['fingerprint'][:12]}...)")


async def training_set(loop: TextLoop, *, whole: bool = False) -> dict[str, Any]:
    """The view's training set over the first training's window (``whole``: no window, as a retraining
    asks): ``texts`` and ``labels`` by entity, ``rows`` and the features service's ``fingerprint``.

    Raises:
        httpx.HTTPStatusError: the features service refused.
    """
    body: dict[str, Any] = {"feature_view": loop.plan.feature_view, "label": LABEL}
    if not whole:
        body |= {"window_start": rfc3339(WINDOW[0]), "window_end": rfc3339(WINDOW[1])}
    response = await loop.http.post(f"{loop.endpoints['features'].http}/api/v1/training-sets", json=body)
    response.raise_for_status()
    answer = response.json()
    ids = answer["entity_ids"]
    return {"rows": answer["row_count"], "fingerprint": answer["fingerprint"],
            "texts": dict(zip(ids, answer["columns"][TEXT_FEATURE], strict=True)),
            "labels": dict(zip(ids, answer["labels"], strict=True))}


async def _publish(loop: TextLoop) -> None:
    """Every row as a JSON FeatureEvent (text and label as ``stringValue``), keyed by entity id."""
    producer = AIOKafkaProducer(bootstrap_servers=loop.endpoints.bootstrap_servers, acks="all",
                                enable_idempotence=False)
    await producer.start()
    try:
        sends = []
        for i, (text, label) in enumerate(zip(loop.data.texts, loop.data.labels, strict=True)):
            event = {"featureView": loop.plan.feature_view, "entityId": entity_id(i),
                     "eventTime": rfc3339(event_time(i)),
                     "values": {TEXT_FEATURE: {"stringValue": text}, LABEL: {"stringValue": label}},
                     "source": "gyre-text-demo"}
            sends.append(await producer.send(loop.endpoints.topic(FEATURES_EVENTS), json.dumps(event).encode(),
                                             key=entity_id(i).encode(),
                                             headers=[("content-type", b"application/json")]))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
