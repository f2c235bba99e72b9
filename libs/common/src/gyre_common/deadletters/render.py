"""One dead-letter record as JSON for people: every header, and the payload decoded when possible.

The payload is shown as JSON when it is JSON (``content-type: application/json``, or no
content-type and a body starting with ``{``, as the bus reads it), as the decoded protobuf event
when the original topic is a Gyre topic (its event type comes from :data:`gyre_common.topics.TOPICS`
through :func:`gyre_common.bus.codec.topic_spec`), and as base64 otherwise or when decoding fails
(``decode_error`` says why: that is often why the record was dead-lettered).
"""

from __future__ import annotations

import base64
import json

from google.protobuf import json_format

from gyre_common.bus.codec import EventDecodeError, decode_protobuf, message_class
from gyre_common.bus.headers import CONTENT_TYPE, JSON_ALIASES, media_type
from gyre_common.deadletters.tools import DeadLetterRecord
from gyre_common.topics import TOPICS


def event_type_of(original_topic: str | None, prefix: str) -> str | None:
    """The protobuf event type of a prefixed Gyre topic, None for any other topic."""
    if not original_topic or not original_topic.startswith(prefix):
        return None
    spec = TOPICS.get(original_topic[len(prefix):])
    return spec.event_type if spec is not None else None


def headers_json(record: DeadLetterRecord) -> list[dict[str, str]]:
    """Every header in order: ``{"name", "value"}`` for UTF-8 values, ``{"name", "value_base64"}`` else."""
    out: list[dict[str, str]] = []
    for name, value in record.headers:
        try:
            out.append({"name": name, "value": value.decode("utf-8")})
        except UnicodeDecodeError:
            out.append({"name": name, "value_base64": base64.b64encode(value).decode("ascii")})
    return out


def payload_json(record: DeadLetterRecord, prefix: str) -> dict[str, object]:
    """The payload: ``encoding`` is ``json``, ``protobuf`` (decoded to its JSON form), ``base64`` or
    ``none`` (a tombstone); ``size`` in bytes; ``event_type`` when known; ``decode_error`` when a
    decoding was tried and failed."""
    value = record.value
    event_type = event_type_of(record.original_topic, prefix)
    if value is None:
        return {"encoding": "none", "size": 0, "event_type": event_type, "value": None}
    shown: dict[str, object] = {"size": len(value), "event_type": event_type}
    content_type = media_type(record.header(CONTENT_TYPE))
    error: str | None = None
    if content_type in JSON_ALIASES or (content_type is None and value.lstrip()[:1] == b"{"):
        try:
            return {"encoding": "json", **shown, "value": json.loads(value)}
        except (UnicodeDecodeError, ValueError) as exc:
            error = f"invalid JSON: {exc}"
    elif event_type is not None:
        try:
            event = decode_protobuf(message_class(event_type), value)
            decoded = json_format.MessageToDict(event, preserving_proto_field_name=True)
            return {"encoding": "protobuf", **shown, "value": decoded}
        except (EventDecodeError, LookupError) as exc:
            error = str(exc)
    base: dict[str, object] = {"encoding": "base64", **shown, "value": base64.b64encode(value).decode("ascii")}
    if error is not None:
        base["decode_error"] = error
    return base


def record_json(record: DeadLetterRecord, prefix: str) -> dict[str, object]:
    """A record in full: the listing's summary, every header and the payload."""
    return {**record.summary(), "headers": headers_json(record), "payload": payload_json(record, prefix)}
