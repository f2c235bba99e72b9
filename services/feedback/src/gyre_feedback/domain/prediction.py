"""A served prediction as the feedback service keeps it: enough to attribute and score feedback."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gyre_feedback.domain.feedback import LabelValue, canonical_value


@dataclass(frozen=True)
class Prediction:
    """One row of ``inference.events``, reduced to what the join needs.

    Attributes:
        prediction_id: the join key.
        model_name, model_version: what made the prediction.
        alias: the alias the client asked for ('' for a pinned version).
        served_at: when it was served, aware UTC.
        shadow: a challenger's prediction that was not returned to the client (never scored).
        predicted: the compared output in canonical form (:func:`canonical_value`), None if absent.
        entity_id: the entity the prediction is about ('' when the client named none).
        event_time: the event time of the entity's features the prediction used, aware UTC (None
            when the client gave none).
    """

    prediction_id: str
    model_name: str
    model_version: int
    alias: str
    served_at: datetime
    shadow: bool
    predicted: str | None
    entity_id: str = ""
    event_time: datetime | None = None


def predicted_value(outputs: Mapping[str, LabelValue | None], label_output: str) -> str | None:
    """The canonical value of the output compared with labels.

    ``label_output`` when the prediction has it; otherwise the only output if there is exactly one;
    otherwise None (the prediction cannot match any label).
    """
    value = outputs.get(label_output)
    if value is None and label_output not in outputs and len(outputs) == 1:
        value = next(iter(outputs.values()))
    return None if value is None else canonical_value(value)
