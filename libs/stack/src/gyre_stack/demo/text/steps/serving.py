"""c. Serve: version 1 answers BYTES over gRPC and REST; predictions carry ``entity_id`` / ``event_time``
parameters, and their InferenceEvents (with the text) appear on inference.events."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from gyre_common.topics import INFERENCE_EVENTS
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_stack.demo.checks import LoopError, poll
from gyre_stack.demo.text.data import TOPICS, entity_id, event_time, rfc3339
from gyre_stack.demo.text.plan import TEXT_FEATURE

if TYPE_CHECKING:
    from gyre_stack.demo.text.loop import TextLoop

#: Dataset texts v1 must classify, and the share it must get right (the templates are clearly separable).
CHECK_ROWS = 30
MIN_ACCURACY = 0.8


async def run(loop: TextLoop) -> None:
    """ModelReady; one call over gRPC and one over REST (JSON BYTES), each about a document at its event
    time; a batch of dataset texts classified by topic; then one call per mislabelled document (the
    predictions feedback will correct). Leaves ``corrections`` (prediction id, row, predicted) in the summary."""
    plan, data = loop.plan, loop.data
    await poll(lambda: loop.model_ready(1), within_s=plan.deadline_s, what="ModelReady v1 over gRPC")
    loop.say("c. serving: ModelReady(v1) over gRPC")
    grpc_id = f"demo-grpc-{uuid.uuid4().hex[:8]}"
    answer = await loop.infer_grpc([data.texts[0]], grpc_id, entity_id=entity_id(0),
                                   event_time=rfc3339(event_time(0)))
    if answer.version != 1 or answer.ids != [grpc_id] or answer.labels[0] not in TOPICS:
        raise LoopError(f"gRPC ModelInfer answered version {answer.version}, ids {answer.ids}, {answer.labels}")
    rest_id = f"demo-rest-{uuid.uuid4().hex[:8]}"
    body = {"id": rest_id, "parameters": {"entity_id": entity_id(1), "event_time": rfc3339(event_time(1))},
            "inputs": [{"name": TEXT_FEATURE, "shape": [1], "datatype": "BYTES", "data": [data.texts[1]]}]}
    response = await loop.http.post(f"{loop.endpoints['serving'].http}/v2/models/{plan.model}/infer", json=body)
    if response.status_code != 200:
        raise LoopError(f"REST infer answered {response.status_code}: {response.text}")
    rest = response.json()
    outputs = {o["name"]: o for o in rest["outputs"]}
    if rest["id"] != rest_id or str(rest["model_version"]) != "1" or outputs["predict"]["data"][0] not in TOPICS:
        raise LoopError(f"REST infer answered {rest}")
    loop.served_v1_rows += 1
    loop.say(f"c. serving: BYTES over gRPC (id {grpc_id}: {data.texts[0]!r} -> {answer.labels[0]}) and REST "
             f"(id {rest_id}: -> {outputs['predict']['data'][0]}), with entity_id and event_time")

    rows = [i for i in range(CHECK_ROWS) if i not in data.mislabelled]
    batch = await loop.infer_grpc([data.texts[i] for i in rows], f"demo-batch-{uuid.uuid4().hex[:8]}")
    right = sum(label == data.topics[i] for i, label in zip(rows, batch.labels, strict=True))
    if right / len(rows) < MIN_ACCURACY:
        raise LoopError(f"v1 classified {right} of {len(rows)} dataset texts right, expected at least "
                        f"{MIN_ACCURACY:.0%}: {list(zip(rows, batch.labels, strict=True))}")
    loop.say(f"c. serving: a batch of {len(rows)} dataset texts, {right} classified by their true topic")

    corrections = []
    for i in data.mislabelled:
        prediction_id = f"demo-doc-{uuid.uuid4().hex[:8]}"
        answer = await loop.infer_grpc([data.texts[i]], prediction_id, entity_id=entity_id(i),
                                       event_time=rfc3339(event_time(i)))
        corrections.append((prediction_id, i, answer.labels[0]))
    loop.summary["corrections"] = corrections
    wanted = {grpc_id, rest_id} | {c[0] for c in corrections}
    events = await loop.topics.wait(INFERENCE_EVENTS, lambda m: m.prediction_id in wanted and m.model_version == 1,
                                    count=len(wanted), within_s=plan.deadline_s,
                                    what="the InferenceEvents of those ids")
    rows_of = {grpc_id: 0, rest_id: 1} | {c[0]: c[1] for c in corrections}
    for event in events:
        _check_event(event, rows_of[event.prediction_id], loop)
    loop.say(f"c. serving: {len(corrections)} documents with mislabelled topics predicted one by one; "
             f"inference.events: {len(wanted)} InferenceEvents with the text, entity_id and event_time")


def _check_event(event: ev.InferenceEvent, row: int, loop: TextLoop) -> None:
    """The event of a prediction about dataset row ``row`` carries its text, entity and event time."""
    text = event.inputs[TEXT_FEATURE].string_value if TEXT_FEATURE in event.inputs else None
    when = rfc3339(event.event_time.ToDatetime().replace(tzinfo=event_time(0).tzinfo)) \
        if event.HasField("event_time") else ""
    if text != loop.data.texts[row] or event.entity_id != entity_id(row) or when != rfc3339(event_time(row)):
        raise LoopError(f"InferenceEvent {event.prediction_id} has text {text!r}, entity {event.entity_id!r}, "
                        f"event time {when!r}; expected {loop.data.texts[row]!r}, {entity_id(row)!r}, "
                        f"{rfc3339(event_time(row))!r}")
