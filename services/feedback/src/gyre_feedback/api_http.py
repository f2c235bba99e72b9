"""REST adapter (FastAPI) for feedback UIs: decode, call a handler, encode.

Errors: 400 for feedback that breaks the rules (body ``{"detail": "<all problems>", "errors":
[{"field", "message"}, ...]}``) and for a bad quality query; 404 for a model never seen (those two with
the body ``{"detail", "reason"}`` of gyre_common.errors); 422 (FastAPI)
for a body that is not the documented JSON shape (wrong types, unknown fields).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt
from pydantic import StrictStr as _StrictStr

from gyre_common.limits import INT64_MAX, STORABLE
from gyre_feedback.convert import feedback_events
from gyre_feedback.domain.feedback import InvalidFeedback, validate_feedback
from gyre_feedback.domain.quality import QualityReport
from gyre_feedback.handlers import FeedbackHandlers

MAX_IDEMPOTENCY_KEY_CHARS = 200

StrictStr = Annotated[_StrictStr, STORABLE]
"""A JSON string only (no number turned into text), storable (no lone surrogate)."""


class FeedbackBody(BaseModel):
    """Body of ``POST /api/v1/feedback``: at most one rating, or a comment only."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: StrictStr
    """The prediction id serving returned (response ``id``, or one of its ``prediction_ids``)."""
    feedback_id: StrictStr | None = None
    """Client-chosen idempotency key; a retry with the same id is stored once. Generated when absent."""
    model_name: StrictStr = ""
    """Model that made the prediction, if the UI knows it (the inference event is authoritative)."""
    model_version: Annotated[StrictInt, Field(ge=0, le=INT64_MAX)] = 0
    """Version that made the prediction, if known."""
    thumbs_up: StrictBool | None = None
    """Thumbs up (true) or down (false)."""
    stars: Annotated[StrictInt, Field(ge=-INT64_MAX, le=INT64_MAX)] | None = None
    """Star rating, 1 to 5."""
    score: StrictFloat | StrictInt | None = None
    """Score normalised to [0, 1]."""
    corrected_label: StrictBool | StrictInt | StrictFloat | StrictStr | None = None
    """The correct output: a class label, a number or a reference text."""
    comment: StrictStr = Field(default="", max_length=100_000)
    """Free text (at most 4096 characters are accepted)."""
    author: StrictStr = ""
    """Who gave the feedback."""
    submitted_at: datetime | None = None
    """When the feedback was given (RFC 3339 with a zone); now when absent."""


def _quality_json(report: QualityReport) -> dict[str, Any]:
    return {
        "model_name": report.model_name,
        "window_start": report.window_start.isoformat(),
        "window_end": report.window_end.isoformat(),
        "versions": [
            {
                "model_version": v.model_version,
                "predictions": v.predictions,
                "feedback_count": v.feedback_count,
                "labelled_count": v.labelled_count,
                "accuracy": v.accuracy,
                "mean_stars": v.mean_stars,
                "thumbs_up_rate": v.thumbs_up_rate,
                "mean_score": v.mean_score,
            }
            for v in report.versions
        ],
    }


def router(handlers: FeedbackHandlers) -> APIRouter:
    """The feedback REST routes under ``/api/v1``."""
    api = APIRouter(prefix="/api/v1", tags=["feedback"])

    @api.post("/feedback", status_code=201)
    async def submit_feedback(
        body: FeedbackBody,
        idempotency_key: Annotated[str | None, Header(max_length=MAX_IDEMPOTENCY_KEY_CHARS)] = None,
    ) -> JSONResponse:
        """Record feedback on one prediction. 201 when stored, 200 with ``duplicate: true`` for a retry.

        The ``Idempotency-Key`` header is an alternative to ``feedback_id`` (both: they must agree).
        """
        feedback_id = body.feedback_id or ""
        if idempotency_key is not None:
            if feedback_id and feedback_id != idempotency_key:
                raise HTTPException(400, "feedback_id and the Idempotency-Key header differ")
            feedback_id = idempotency_key
        try:
            feedback = validate_feedback(
                prediction_id=body.prediction_id, feedback_id=feedback_id, model_name=body.model_name,
                model_version=body.model_version, thumbs_up=body.thumbs_up, stars=body.stars,
                score=body.score, corrected_label=body.corrected_label, comment=body.comment,
                author=body.author, submitted_at=body.submitted_at,
            )
        except InvalidFeedback as exc:
            return JSONResponse(status_code=400, content={
                "detail": str(exc), "errors": [{"field": e.field, "message": e.message} for e in exc.errors],
            })
        result = await handlers.submit(feedback)
        return JSONResponse(status_code=200 if result.duplicate else 201, content={
            "feedback_id": result.feedback_id, "duplicate": result.duplicate, "attributed": result.attributed,
        })

    @api.get("/predictions/{prediction_id}/feedback")
    async def prediction_feedback(prediction_id: str) -> dict[str, Any]:
        """Feedback on one prediction, oldest first (proto3 JSON of FeedbackEvent, proto field names)."""
        payloads = await handlers.prediction_feedback(prediction_id)
        return {"feedback": [json_format.MessageToDict(e, preserving_proto_field_name=True)
                             for e in feedback_events(payloads)]}

    @api.get("/models/{model_name}/quality")
    async def quality(
        model_name: str,
        version: Annotated[int | None, Query(ge=1, description="only this version")] = None,
        window_start: Annotated[datetime | None, Query(description="RFC 3339; default: 24 h before the end")] = None,
        window_end: Annotated[datetime | None, Query(description="RFC 3339; default: now")] = None,
    ) -> dict[str, Any]:
        """Quality per version over predictions served in [window_start, window_end), newest version first.
        A metric without data is null."""
        report = await handlers.quality(model_name, version, window_start, window_end)
        return _quality_json(report)

    return api
