"""d. Corrections: reviewers post the true topic of the mislabelled documents as corrected labels; feedback
counts them for v1 and sends them to the feature store, so the next training set holds them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gyre_common.topics import FEEDBACK_EVENTS
from gyre_stack.demo.checks import LoopError, get_json, poll
from gyre_stack.demo.text.data import entity_id
from gyre_stack.demo.text.steps.features import training_set

if TYPE_CHECKING:
    from gyre_stack.demo.text.loop import TextLoop


async def run(loop: TextLoop) -> None:
    """Post the corrections of step c's predictions; check v1's quality and the FeedbackEvents; wait until
    the training set over the same window has the corrected labels, the same rows and another fingerprint
    (kept as ``fingerprint_after``)."""
    plan, data = loop.plan, loop.data
    corrections: list[tuple[str, int, str]] = loop.summary["corrections"]
    base = loop.endpoints["feedback"].http + "/api/v1"
    for prediction_id, row, _ in corrections:
        response = await loop.http.post(f"{base}/feedback", json={
            "prediction_id": prediction_id, "corrected_label": data.topics[row], "author": "demo-reviewer",
            "comment": f"stored topic was {data.labels[row]}", "feedback_id": f"fb-{prediction_id}"})
        if response.status_code not in (200, 201):
            raise LoopError(f"feedback on {prediction_id} answered {response.status_code}: {response.text}")
    agreed = sum(predicted == data.topics[row] for _, row, predicted in corrections)
    loop.say(f"d. feedback: {len(corrections)} corrected labels posted (the true topics of the mislabelled "
             f"documents; v1 had predicted {agreed} of them)")

    async def quality() -> dict[str, Any] | None:
        body = await get_json(loop.http, f"{base}/models/{plan.model}/quality", version=1)
        rows = [v for v in (body or {}).get("versions", []) if int(v["model_version"]) == 1]
        return rows[0] if rows and int(rows[0]["labelled_count"]) == len(corrections) else None
    v1 = await poll(quality, within_s=plan.deadline_s, what=f"{len(corrections)} labelled feedbacks on version 1")
    wanted = {c[0] for c in corrections}
    await loop.topics.wait(FEEDBACK_EVENTS, lambda m: m.prediction_id in wanted, count=len(wanted),
                           within_s=plan.deadline_s, what="the FeedbackEvents")
    loop.say(f"d. feedback: v1 has {v1['labelled_count']} labelled predictions (accuracy {v1['accuracy']:.2f}); "
             f"{len(wanted)} FeedbackEvents on feedback.events")

    expected = {entity_id(row): data.topics[row] for _, row, _ in corrections}
    before = loop.summary["fingerprint_before"]

    async def corrected() -> dict[str, Any] | None:
        current = await training_set(loop)
        labels = current["labels"]
        return current if all(labels.get(e) == topic for e, topic in expected.items()) else None
    after = await poll(corrected, within_s=plan.deadline_s, every_s=0.5,
                       what=f"the {len(expected)} corrected labels in the next training set")
    if after["rows"] != len(data):
        raise LoopError(f"the corrected training set has {after['rows']} rows, expected {len(data)} (same rows)")
    changed = {e for e, label in after["labels"].items() if label != data.labels[int(e.split("-")[1])]}
    if changed != set(expected):
        raise LoopError(f"the training set's labels changed for {sorted(changed)}, expected exactly "
                        f"{sorted(expected)}")
    if after["fingerprint"] == before:
        raise LoopError(f"the training set's fingerprint {before} did not change with the corrections")
    loop.summary["fingerprint_after"] = after["fingerprint"]
    loop.say(f"d. features: the next training set holds the {len(expected)} corrected labels (same {after['rows']} "
             f"rows; fingerprint {before[:12]}... -> {after['fingerprint'][:12]}...)")
