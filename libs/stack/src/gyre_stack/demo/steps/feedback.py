"""d. Feedback: corrected labels for the batch predictions; version 1's quality counts them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from gyre_common.topics import FEEDBACK_EVENTS
from gyre_stack.demo.checks import LoopError, get_json, poll

if TYPE_CHECKING:
    from gyre_stack.demo.loop import Loop


async def run(loop: Loop) -> None:
    """Post the true targets of step c's batch as corrected labels; check v1's labelled count and accuracy
    (computed from serving's answers) and the FeedbackEvents on feedback.events."""
    plan = loop.plan
    ids, predicted, truth = loop.summary["feedback_rows"]
    base = loop.endpoints["feedback"].http + "/api/v1"
    for prediction_id, label in zip(ids, truth, strict=True):
        response = await loop.http.post(f"{base}/feedback", json={
            "prediction_id": prediction_id, "corrected_label": label, "author": "demo",
            "feedback_id": f"fb-{prediction_id}"})
        if response.status_code not in (200, 201):
            raise LoopError(f"feedback on {prediction_id} answered {response.status_code}: {response.text}")
    accuracy = sum(int(p == t) for p, t in zip(predicted, truth, strict=True)) / len(ids)
    loop.say(f"d. feedback: {len(ids)} corrected labels posted")

    async def quality() -> dict[str, Any] | None:
        body = await get_json(loop.http, f"{base}/models/{plan.model}/quality", version=1)
        rows = [v for v in (body or {}).get("versions", []) if int(v["model_version"]) == 1]
        return rows[0] if rows and int(rows[0]["labelled_count"]) == len(ids) else None
    row = await poll(quality, within_s=plan.deadline_s, what=f"{len(ids)} labelled feedbacks on version 1")
    if not math.isclose(row["accuracy"], accuracy):
        raise LoopError(f"feedback accuracy of v1 is {row['accuracy']}, expected {accuracy}")
    wanted = set(ids)
    await loop.topics.wait(FEEDBACK_EVENTS, lambda m: m.prediction_id in wanted, count=len(ids),
                           within_s=plan.deadline_s, what="the FeedbackEvents")
    loop.say(f"d. feedback: quality of v1 = {row['predictions']} predictions, {row['labelled_count']} labelled, "
             f"accuracy {row['accuracy']:.2f}; {len(ids)} FeedbackEvents on feedback.events")
