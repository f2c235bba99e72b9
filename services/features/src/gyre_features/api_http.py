"""REST adapter (FastAPI): decode JSON, call a handler, encode JSON.

Errors: 404 unknown view/feature, 409 a forbidden view change, 413 too many items, 422 invalid
input (FastAPI's own validation errors too); the body is ``{"detail": "...", "reason": "..."}``
(gyre_common.errors; FastAPI's validation errors keep its ``{"detail": [...]}``). Every time is
RFC 3339; naive times are rejected rather than guessed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from google.protobuf import json_format
from pydantic import AwareDatetime, BaseModel, Field

from gyre_contracts.gyre.events.v1 import events_pb2
from gyre_features.convert import raw_event
from gyre_features.domain.errors import InvalidArgument, TooLarge
from gyre_features.domain.profiles import DatasetProfile
from gyre_features.domain.training import EntityRow, TrainingSetQuery
from gyre_features.domain.values import FloatVector, Value, ValueType
from gyre_features.domain.views import FeatureSpec, FeatureView
from gyre_features.handlers import MAX_PAGE_SIZE, MAX_WRITE_EVENTS, FeaturesHandlers

PREFIX = "/api/v1"


class FeatureSpecBody(BaseModel):
    """One feature of a view."""

    name: str
    type: Literal["float", "int", "string", "bool", "text", "float_vector"]
    description: str = ""
    dimension: int = Field(0, ge=0, description="float_vector only (required): elements per value, 1 to 16384.")
    max_text_bytes: int = Field(0, ge=0, description="text only: longest value in UTF-8 bytes; 0 = 65536.")


class FeatureViewBody(BaseModel):
    """A feature view definition (what ``POST /api/v1/feature-views`` takes)."""

    name: str
    entity: str
    features: list[FeatureSpecBody] = Field(min_length=1)
    ttl_seconds: int = Field(0, ge=0, description="Seconds a value stays valid; 0 = forever.")
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = Field(default_factory=dict)


class OnlineFeaturesBody(BaseModel):
    """``POST /api/v1/online-features``."""

    feature_view: str
    entity_ids: list[str] = Field(min_length=1)
    features: list[str] = Field(default_factory=list, description="Empty = every feature of the view.")


class EntityRowBody(BaseModel):
    """One row of an entity dataframe."""

    entity_id: str = Field(min_length=1)
    timestamp: AwareDatetime


class TrainingSetBody(BaseModel):
    """``POST /api/v1/training-sets``: a point-in-time correct training set, as JSON columns."""

    feature_view: str
    label: str
    features: list[str] = Field(default_factory=list, description="Empty = every feature but the label.")
    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None
    entity_rows: list[EntityRowBody] = Field(default_factory=list)
    keep_unlabelled: bool = False


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _spec_json(spec: FeatureSpec) -> dict[str, Any]:
    item: dict[str, Any] = {"name": spec.name, "type": spec.type.value, "description": spec.description}
    if spec.type == ValueType.FLOAT_VECTOR:
        item["dimension"] = spec.dimension
    if spec.type == ValueType.TEXT:
        item["max_text_bytes"] = spec.text_limit_bytes
    return item


def value_json(value: Value | None) -> Any:
    """The JSON form of a feature value: a vector as a list of numbers, the rest as they are."""
    return list(value.values) if isinstance(value, FloatVector) else value


def view_json(view: FeatureView) -> dict[str, Any]:
    """The JSON form of a stored view."""
    return {
        "name": view.name,
        "entity": view.entity,
        "features": [_spec_json(f) for f in view.features],
        "ttl_seconds": view.ttl_seconds,
        "description": view.description,
        "owner": view.owner,
        "tags": dict(view.tags),
        "created_at": _time(view.created_at),
        "updated_at": _time(view.updated_at),
    }


def profile_json(profile: DatasetProfile) -> dict[str, Any]:
    """The JSON form of a dataset profile: numeric stats for numbers, ``length`` stats for text,
    ``norm`` stats for vectors, distinct values and the top ones for categories."""
    features = []
    for f in profile.features:
        item: dict[str, Any] = {"name": f.name, "type": f.type.value, "count": f.count, "missing": f.missing}
        if f.type.numeric:
            item.update(mean=f.mean, std=f.std, min=f.min, max=f.max)
        elif f.measure:
            # text: length in characters; float_vector: L2 norm
            item[f.measure] = {"mean": f.mean, "std": f.std, "min": f.min, "max": f.max}
        else:
            item.update(distinct=f.distinct, top=[{"value": c.value, "count": c.count} for c in f.top])
        features.append(item)
    return {"feature_view": profile.feature_view, "window_start": _time(profile.start),
            "window_end": _time(profile.end), "rows": profile.rows, "entities": profile.entities,
            "features": features}


def router(handlers: FeaturesHandlers) -> APIRouter:
    """The REST routes under ``/api/v1``."""
    api = APIRouter(prefix=PREFIX, tags=["features"])

    @api.post("/feature-views")
    async def register_view(body: FeatureViewBody, response: Response) -> dict[str, Any]:
        """Register or evolve a feature view; 201 when new, 200 when updated or unchanged."""
        view = FeatureView(
            name=body.name, entity=body.entity,
            features=tuple(FeatureSpec(f.name, ValueType(f.type), f.description, f.dimension, f.max_text_bytes)
                           for f in body.features),
            ttl_seconds=body.ttl_seconds, description=body.description, owner=body.owner, tags=body.tags,
        )
        stored, created = await handlers.register_view(view)
        response.status_code = 201 if created else 200
        return {"feature_view": view_json(stored), "created": created}

    @api.get("/feature-views")
    async def list_views(
        page_size: Annotated[int, Query(ge=0, le=MAX_PAGE_SIZE, description="1 to 1000; 0 means 100.")] = 0,
        page_token: str = "",
    ) -> dict[str, Any]:
        """A page of feature views, by name."""
        views, token = await handlers.list_views(page_size, page_token)
        return {"feature_views": [view_json(v) for v in views], "next_page_token": token}

    @api.get("/feature-views/{name}")
    async def get_view(name: str) -> dict[str, Any]:
        """One feature view."""
        return {"feature_view": view_json(await handlers.get_view(name))}

    @api.get("/feature-views/{name}/profile")
    async def profile(
        name: str,
        start: Annotated[AwareDatetime | None, Query(description="Window start (inclusive), RFC 3339.")] = None,
        end: Annotated[AwareDatetime | None, Query(description="Window end (exclusive), RFC 3339.")] = None,
        top_k: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> dict[str, Any]:
        """Per-feature statistics of the view's events in [start, end) (open bounds when omitted)."""
        return profile_json(await handlers.profile(name, start, end, top_k))

    @api.post("/feature-events")
    async def write_events(body: dict[str, Any]) -> dict[str, Any]:
        """Write ``{"events": [FeatureEvent as proto3 JSON, ...]}`` synchronously, all or nothing."""
        items = body.get("events")
        if not isinstance(items, list):
            raise InvalidArgument('body must be {"events": [...]} (FeatureEvent objects, proto3 JSON)')
        if len(items) > MAX_WRITE_EVENTS:
            raise TooLarge(f"at most {MAX_WRITE_EVENTS} events per call, got {len(items)}")
        now = handlers.clock()
        events = []
        for i, item in enumerate(items):
            message = events_pb2.FeatureEvent()
            try:
                json_format.Parse(json.dumps(item), message)
            except json_format.ParseError as exc:
                raise InvalidArgument(f"event {i}: {exc}") from None
            events.append(raw_event(message, f"http:{now.isoformat()}:{i}", now))
        await handlers.write_features(events)
        return {"written": len(events)}

    @api.post("/online-features")
    async def online_features(body: OnlineFeaturesBody) -> dict[str, Any]:
        """Latest values per entity with a status per feature (PRESENT, NULL_VALUE, NOT_FOUND, OUTSIDE_TTL)."""
        online = await handlers.get_online_features(body.feature_view, body.entity_ids, body.features)
        rows = []
        for row in online.rows:
            rows.append({
                "entity_id": row.entity_id,
                "found": row.found,
                "values": {name: value_json(r.value) for name, r in row.results.items()},
                "statuses": {name: r.status.value for name, r in row.results.items()},
                "event_times": {name: _time(r.event_time) for name, r in row.results.items()},
                "event_time": _time(row.event_time),
            })
        return {"feature_view": online.view.name, "features": online.features, "rows": rows}

    @api.post("/training-sets")
    async def training_set(body: TrainingSetBody) -> dict[str, Any]:
        """A point-in-time correct training set as JSON columns (use gRPC BuildTrainingSet for big sets)."""
        query = TrainingSetQuery(
            feature_view=body.feature_view, label=body.label, features=tuple(body.features),
            start=body.window_start, end=body.window_end,
            entity_rows=tuple(EntityRow(r.entity_id, r.timestamp) for r in body.entity_rows),
            keep_unlabelled=body.keep_unlabelled,
        )
        stream = await handlers.training_set(query)
        schema = stream.schema
        entity_ids: list[str] = []
        times: list[str | None] = []
        columns: dict[str, list[Any]] = {spec.name: [] for spec in schema.features}
        label: list[Any] = []
        async for chunk in stream.chunks():
            entity_ids.extend(chunk.entity_ids)
            times.extend(_time(t) for t in chunk.event_times)
            for spec, values in zip(schema.features, chunk.columns, strict=True):
                columns[spec.name].extend(values if spec.type != ValueType.FLOAT_VECTOR else map(value_json, values))
            label.extend(chunk.label if schema.label.type != ValueType.FLOAT_VECTOR else map(value_json, chunk.label))
        assert stream.summary is not None
        return {
            "feature_view": schema.feature_view,
            "features": [spec.name for spec in schema.features],
            "label": schema.label.name,
            "window_start": _time(schema.start),
            "window_end": _time(schema.end),
            "entity_ids": entity_ids,
            "event_times": times,
            "columns": columns,
            "labels": label,
            "row_count": stream.summary.row_count,
            "unlabelled_rows_dropped": stream.summary.unlabelled_rows_dropped,
            "fingerprint": stream.summary.fingerprint,
        }

    return api
