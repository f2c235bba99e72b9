"""Inference events: what one served request becomes on ``inference.events``.

The request path only records a :class:`ServedBatch` (references to arrays it already has); the
emitter turns it into one ``InferenceEvent`` per row off the request path with
:func:`gyre_serving.convert.inference_events`.

Prediction ids: a one-row request's prediction id is the request id (the response ``id``); row
``i`` of a larger batch gets ``<request id>:<i>``. The response parameter ``prediction_ids`` lists
them, comma-separated, in row order.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np


def prediction_ids(request_id: str, rows: int) -> list[str]:
    """The prediction id of each row (see the module docstring)."""
    if rows == 1:
        return [request_id]
    return [f"{request_id}:{i}" for i in range(rows)]


_EVENT_ID_PREFIX = uuid.uuid4().hex[:16]
_EVENT_IDS = itertools.count()


def new_event_id() -> str:
    """A process-unique id for one served batch; row ``i``'s CloudEvents id is ``<id>.<i>``, the
    same every time the row's event is (re-)sent, so consumers can dedupe (cheaper than a UUID4)."""
    return f"{_EVENT_ID_PREFIX}-{next(_EVENT_IDS)}"


@dataclass(frozen=True, slots=True)
class ServedBatch:
    """One answered request, as the emitter needs it.

    Attributes:
        model_name, model_version: the version that answered.
        alias: the alias the client asked for (the served alias when it named no version); empty
            when it named a version number.
        request_id: the response ``id``.
        prediction_ids: one per row (:func:`prediction_ids`).
        feature_names: input (feature) names, in order.
        feature_columns: one 1-D array per feature, one value per row.
        output_columns: ``(name, 1-D array)`` per output column (``Prediction.event_columns``).
        served_at: when the response was ready, aware UTC.
        latency_ms: time spent on the whole request, in milliseconds.
        request_key: the request's ``request_key`` parameter (a business key), or empty.
        shadow: a shadow (challenger) prediction that was not returned to the client.
        event_id: :func:`new_event_id`; each row's ``ce_id`` is ``<event_id>.<row>``.
        hashed_inputs: text inputs whose events carry ``sha256:<hex of the UTF-8 bytes>:<length in
            characters>`` instead of the text (``GYRE_SERVING_EVENT_TEXT=hash``).
        entity_id: the request parameter ``entity_id`` (the entity the prediction is about), or empty.
        event_time: the request parameter ``event_time`` (aware, UTC), or None.
    """

    model_name: str
    model_version: int
    alias: str
    request_id: str
    prediction_ids: Sequence[str]
    feature_names: Sequence[str]
    feature_columns: Sequence[np.ndarray[Any, Any]]
    output_columns: Sequence[tuple[str, np.ndarray[Any, Any]]]
    served_at: datetime
    latency_ms: float
    request_key: str = ""
    shadow: bool = False
    event_id: str = ""
    hashed_inputs: frozenset[str] = frozenset()
    entity_id: str = ""
    event_time: datetime | None = None

    @property
    def rows(self) -> int:
        return len(self.prediction_ids)

    def ce_id(self, row: int) -> str | None:
        """The CloudEvents id of row ``row``'s event (None: let the publisher pick one)."""
        return f"{self.event_id}.{row}" if self.event_id else None
