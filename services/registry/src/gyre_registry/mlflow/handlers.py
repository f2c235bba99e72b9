"""MLflow's model-registry use cases on Gyre's registry, taking and returning MLflow's JSON shapes.

How MLflow's model maps onto the registry (docs/mlflow.md, "Model registry"):

* a registered model is a registered model; MLflow tags are the model's ``tags``;
* a model version keeps MLflow's ``source`` as its artifact uri and ``run_id`` in its lineage; it has
  **no sha256** (MLflow never sends one), so serving refuses to load it (serving loads only verified
  artifacts) even when an alias points at it. Versions are numbered per model and never reused,
  also after a deletion. The promotion policy does not run for them (MLflow users move aliases
  themselves); status is always ``READY``;
* aliases are the registry's aliases: setting or deleting one goes through
  :meth:`RegistryHandlers.set_alias` / :meth:`~RegistryHandlers.delete_alias`, so it is audited and
  announced on ``registry.events`` (ALIAS_SET / ALIAS_REMOVED) like any other alias move;
* stages (deprecated in MLflow 3) are not supported: ``transition-stage`` answers NOT_IMPLEMENTED
  saying to use aliases; ``current_stage`` reads ``None`` (``Archived`` for archived versions);
* renaming a model is not supported (names are the key of events, aliases and serving);
* deleting a version or a model removes its aliases first (ALIAS_REMOVED each) and announces each
  version as VERSION_ARCHIVED (the event that makes consumers forget it), all audited.

Every write is audited with the caller as actor. Storage goes through
:class:`~gyre_registry.mlflow.store.MlflowStore` (never a database connection here). Requests
arrive as :class:`~gyre_common.mlflow.fields.Fields` (a plain mapping is accepted too). Errors are
the registry's domain errors; the transport turns them into MLflow's error codes
(:mod:`gyre_common.mlflow.errors`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from gyre_common.mlflow.errors import MlflowNotImplemented
from gyre_common.mlflow.fields import Fields
from gyre_registry.domain import paging, validation
from gyre_registry.domain.errors import InvalidArgument, NotFound, RegistryError
from gyre_registry.domain.models import ArtifactRef, Lineage, RegisteredModel, RegistryEvent, RegistryEventKind
from gyre_registry.handlers import RegistryHandlers, audit_entry, record_audit, record_event
from gyre_registry.mlflow import filters
from gyre_registry.mlflow import store as sql
from gyre_registry.mlflow.store import MlflowStore, MlflowTransaction

Json = dict[str, Any]
Row = TypeVar("Row")
Body = Fields | Mapping[str, Any]
"""A request's fields: the shared reader's :class:`Fields`, or a plain mapping (tests)."""

MLFLOW_FORMAT = "mlflow"
"""``artifact.format`` of versions created through the MLflow API."""

MAX_MODEL_RESULTS = 1000
"""Largest page of SearchRegisteredModels (MLflow's threshold too)."""
MAX_VERSION_RESULTS = 10000
"""Largest page of SearchModelVersions (MLflow's default; its own server allows up to 200,000)."""
DEFAULT_MODEL_RESULTS = 100
"""Page size of SearchRegisteredModels when the request gives none (MLflow's default)."""
MAX_VERSION_NUMBER = 2**63 - 1
"""Largest version number (PostgreSQL bigint); a larger one names no version."""
_BIGINT_DIGITS = len(str(MAX_VERSION_NUMBER))
MAX_PAGE_OFFSET = 2**53 - 1
"""Largest offset a page token may hold (rows), far beyond any result and inside bigint."""
MAX_PAGE_TOKEN_LENGTH = 256
"""Longest page token accepted (characters); this API writes about a dozen."""
_MLFLOW_COMMENT = "through the MLflow API"


class NotImplementedInGyre(MlflowNotImplemented, RegistryError):
    """An MLflow call Gyre deliberately does not support (MLflow's NOT_IMPLEMENTED, HTTP 501)."""


def _get(body: Body, key: str) -> Any:
    """A field as given (the last of a repeated query parameter), or None."""
    return body.raw(key) if isinstance(body, Fields) else body.get(key)


def _get_repeated(body: Body, key: str) -> Any:
    """A repeated field as given (a list, or one value), or None."""
    return body.data.get(key) if isinstance(body, Fields) else body.get(key)


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _tag_list(tags: Mapping[str, str]) -> list[Json]:
    return [{"key": k, "value": v} for k, v in sorted(tags.items())]


def version_json(v: sql.MlflowVersion) -> Json:
    """MLflow's ``ModelVersion`` JSON."""
    out: Json = {
        "name": v.name, "version": str(v.version), "creation_timestamp": _ms(v.created_at),
        "last_updated_timestamp": _ms(v.updated_at), "user_id": v.user_id,
        "current_stage": "Archived" if v.archived else "None", "description": v.description,
        "source": v.source, "run_id": v.run_id, "status": "READY", "tags": _tag_list(v.tags),
        "run_link": v.run_link, "aliases": v.aliases,
    }
    return out


def model_json(m: sql.MlflowModel) -> Json:
    """MLflow's ``RegisteredModel`` JSON (``latest_versions``: the newest version, if any)."""
    return {
        "name": m.name, "creation_timestamp": _ms(m.created_at), "last_updated_timestamp": _ms(m.updated_at),
        "description": m.description, "tags": _tag_list(m.tags),
        "aliases": [{"alias": a, "version": str(v)} for a, v in sorted(m.aliases.items())],
        "latest_versions": [version_json(m.latest)] if m.latest is not None else [],
    }


def required(body: Body, key: str) -> str:
    """``body[key]`` as a non-empty string (INVALID_PARAMETER_VALUE naming it otherwise)."""
    value = _get(body, key)
    if value is None or value == "":
        raise InvalidArgument(key, f"missing value for required parameter '{key}'")
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise InvalidArgument(key, f"must be a string, got {type(value).__name__}")
    return str(value)


def version_param(body: Body, key: str = "version") -> int:
    """A version number given as MLflow does (a string of digits, or a JSON integer).

    Raises:
        InvalidArgument: missing, or not an integer (``"abc"``, ``"1e9"``, ``"1.0"``), as MLflow
            answers (INVALID_PARAMETER_VALUE).
        NotFound: an integer no version can have (below 1, or beyond PostgreSQL's bigint): MLflow
            answers RESOURCE_DOES_NOT_EXIST for a version that is not there, whatever its number.
    """
    raw = required(body, key)
    digits = raw[1:] if raw.startswith("-") else raw
    if not digits or not digits.isascii() or not digits.isdigit():
        raise InvalidArgument(key, f"must be an integer version number, got {raw[:40]!r}")
    # Compared as text first: int() of thousands of digits is slow and then refused by Python.
    number = int(raw) if len(digits) <= _BIGINT_DIGITS else None
    if number is None or not 1 <= number <= MAX_VERSION_NUMBER:
        raise NotFound(f"registered model {str(_get(body, 'name'))[:200]!r} has no version {raw[:40]}")
    return number


def _tags(body: Body) -> dict[str, str]:
    raw = _get_repeated(body, "tags") or []
    if not isinstance(raw, list):
        raise InvalidArgument("tags", "must be a list of {key, value}")
    tags: dict[str, str] = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise InvalidArgument("tags", "each tag needs a string 'key'")
        tags[item["key"]] = str(item.get("value", ""))
    validation.tags(tags)
    return tags


def _page(body: Body, default: int, maximum: int) -> tuple[int, int]:
    """``(page size, offset)`` from ``max_results`` (0 or absent: ``default``) and ``page_token``.

    Raises:
        InvalidArgument: a size that is not an integer in 1..``maximum``, or a token this API did not
            write (not base64 JSON of ``{"o": offset}`` with 0 <= offset <= :data:`MAX_PAGE_OFFSET`).
    """
    raw = _get(body, "max_results")
    size = default if raw is None or raw == "" or raw == 0 else _integer(raw)
    if size is None:
        raise InvalidArgument("max_results", f"must be an integer, got {str(raw)[:40]!r}")
    if not 1 <= size <= maximum:
        raise InvalidArgument("max_results", f"must be 1 to {maximum}, got {str(raw)[:40]}")
    token = _get(body, "page_token") or ""
    if not isinstance(token, str) or len(token) > MAX_PAGE_TOKEN_LENGTH:
        raise InvalidArgument("page_token", "is not a page token returned by this API")
    position = paging.decode_token(token, ("o",))
    if position is None:
        return size, 0
    offset = position["o"]
    if type(offset) is not int or not 0 <= offset <= MAX_PAGE_OFFSET:
        raise InvalidArgument("page_token", "is not a page token returned by this API")
    return size, offset


def _integer(raw: object) -> int | None:
    """An integer from JSON or a query string (``5``, ``5.0``, ``"5"``), None for anything else;
    one of more than 20 digits is returned as the first integer past int64 (no slow int())."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() else None
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    digits = text[1:] if text.startswith("-") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    return int(text) if len(digits) <= 20 else (-1 if text.startswith("-") else 1) * 2**63


def _text(body: Body, key: str) -> str:
    """An optional string field ("" when absent)."""
    value = _get(body, key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(key, f"must be a string, got {type(value).__name__}")
    return value


def _strings(body: Body, key: str) -> list[str]:
    """A repeated string field: a list of strings, or one string."""
    raw = _get_repeated(body, key) or []
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise InvalidArgument(key, "must be a list of strings")
    return raw


def _order_by(body: Body) -> list[str]:
    return _strings(body, "order_by")


async def _search(body: Body, kind: filters.Entity, search: Callable[[filters.Sql, int, int], Awaitable[list[Row]]],
                  to_json: Callable[[Row], Json], key: str, default_size: int, max_size: int) -> Json:
    """One page of a Search call: ``max_results`` and ``page_token`` (:func:`_page`), the filter and
    ``order_by`` of ``kind`` compiled to SQL, ``search`` asked for one row more than the page to know
    whether another page follows (then ``next_page_token``). Errors: InvalidArgument."""
    size, offset = _page(body, default_size, max_size)
    where = filters.to_sql(filters.parse_filter(_text(body, "filter"), kind), _order_by(body), kind)
    found = await search(where, size + 1, offset)
    out: Json = {key: [to_json(row) for row in found[:size]]}
    if len(found) > size:
        out["next_page_token"] = paging.encode_token({"o": offset + size})
    return out


class MlflowRegistryHandlers:
    """MLflow's registry API on top of :class:`RegistryHandlers` and an :class:`MlflowStore`.

    Args:
        handlers: the registry's use cases (aliases and model creation go through them).
        store: the MLflow surface's storage (reads and writes the registry's interface has not).
        on_events: called after a commit that queued events (wakes the outbox relay).
        clock: now, aware UTC.
    """

    def __init__(self, handlers: RegistryHandlers, store: MlflowStore,
                 on_events: Callable[[], None] | None = None, clock: Callable[[], datetime] | None = None) -> None:
        self.handlers = handlers
        self.store = store
        self._on_events = on_events or (lambda: None)
        self._clock = clock or (lambda: datetime.now(UTC))

    # -- registered models -------------------------------------------------------------------------

    async def create_registered_model(self, body: Body, actor: str) -> Json:
        """CreateRegisteredModel. Errors: InvalidArgument, AlreadyExists."""
        name = required(body, "name")
        await self.handlers.create_registered_model(name, str(_get(body, "description") or ""), _tags(body), actor)
        return {"registered_model": model_json(await self._model(name))}

    async def get_registered_model(self, body: Body) -> Json:
        """GetRegisteredModel. Errors: NotFound."""
        return {"registered_model": model_json(await self._model(required(body, "name")))}

    async def update_registered_model(self, body: Body, actor: str) -> Json:
        """UpdateRegisteredModel (the description). Errors: NotFound, InvalidArgument."""
        name = required(body, "name")
        description = validation.text(str(_get(body, "description") or ""), "description",
                                      validation.MAX_DESCRIPTION_CHARS)
        now = self._clock()
        async with self.store.transaction() as tx:
            await self._lock(tx, name)
            await tx.set_model_description(name, description, now)
            await self._audit(tx.registry, actor, "update_registered_model", name, 0, now,
                              {"description": description[:200]})
        return {"registered_model": model_json(await self._model(name))}

    async def rename_registered_model(self, body: Body, actor: str) -> Json:
        """RenameRegisteredModel: not supported (NotImplementedInGyre)."""
        raise NotImplementedInGyre(
            "renaming a registered model is not supported by Gyre: the name keys its aliases, events and "
            "serving; create a model under the new name instead"
        )

    async def delete_registered_model(self, body: Body, actor: str) -> Json:
        """DeleteRegisteredModel with its versions and aliases. Errors: NotFound."""
        name = required(body, "name")
        now = self._clock()
        async with self.store.transaction() as tx:
            await self._lock(tx, name)
            for number in await tx.version_numbers(name):
                await self._delete_version(tx, name, number, actor, now)
            await tx.delete_model(name)
            await self._audit(tx.registry, actor, "delete_registered_model", name, 0, now, {"reason": _MLFLOW_COMMENT})
        self._on_events()
        return {}

    async def search_registered_models(self, body: Body) -> Json:
        """SearchRegisteredModels (filter grammar in :mod:`~gyre_registry.mlflow.filters`).
        Errors: InvalidArgument."""
        return await _search(body, "model", self.store.search_models, model_json, "registered_models",
                             DEFAULT_MODEL_RESULTS, MAX_MODEL_RESULTS)

    async def get_latest_versions(self, body: Body) -> Json:
        """GetLatestVersions: the newest version per stage (``None``, ``Archived``). Errors: NotFound."""
        name = required(body, "name")
        wanted = {stage.lower() for stage in _strings(body, "stages")}
        await self._model(name)
        versions = await self.store.search_versions(
            filters.Sql(where="v.model_name = $1", order_by="v.version DESC", params=[name]), MAX_VERSION_RESULTS, 0)
        newest: dict[str, sql.MlflowVersion] = {}
        for v in versions:
            stage = "archived" if v.archived else "none"
            if (not wanted or stage in wanted) and stage not in newest:
                newest[stage] = v
        return {"model_versions": [version_json(v) for v in sorted(newest.values(), key=lambda v: v.version)]}

    async def set_registered_model_tag(self, body: Body, actor: str) -> Json:
        """SetRegisteredModelTag. Errors: NotFound, InvalidArgument."""
        name, key = required(body, "name"), required(body, "key")
        value = str(_get(body, "value") or "")
        validation.tags({key: value})
        now = self._clock()
        async with self.store.transaction() as tx:
            await self._lock(tx, name)
            await tx.set_model_tag(name, key, value, now)
            await self._audit(tx.registry, actor, "set_registered_model_tag", name, 0, now,
                              {"key": key, "value": value[:200]})
        return {}

    async def delete_registered_model_tag(self, body: Body, actor: str) -> Json:
        """DeleteRegisteredModelTag. Errors: NotFound (model or tag)."""
        name, key = required(body, "name"), required(body, "key")
        now = self._clock()
        async with self.store.transaction() as tx:
            model = await self._lock(tx, name)
            if key not in model.tags:
                raise NotFound(f"registered model {name!r} has no tag {key!r}")
            await tx.set_model_tag(name, key, None, now)
            await self._audit(tx.registry, actor, "delete_registered_model_tag", name, 0, now, {"key": key})
        return {}

    # -- versions ----------------------------------------------------------------------------------

    async def create_model_version(self, body: Body, actor: str) -> Json:
        """CreateModelVersion from MLflow's ``source`` and ``run_id`` (no sha256; no promotion policy).
        Errors: InvalidArgument, NotFound (model)."""
        name, source = required(body, "name"), required(body, "source")
        validation.text(source, "source", 2048)
        run_id = validation.text(str(_get(body, "run_id") or ""), "run_id", 256)
        run_link = validation.text(str(_get(body, "run_link") or ""), "run_link", 2048)
        description = validation.text(str(_get(body, "description") or ""), "description",
                                      validation.MAX_DESCRIPTION_CHARS)
        tags = _tags(body)
        now = self._clock()
        audit = audit_entry(actor, "create_model_version", name, 0, now, {
            "artifact_uri": source, "run_id": run_id, "reason": _MLFLOW_COMMENT,
        })
        async with self.store.transaction() as tx:
            created = await tx.insert_next_version(sql.NewMlflowVersion(
                name=name, source=source, artifact_format=MLFLOW_FORMAT, run_id=run_id, run_link=run_link,
                description=description, tags=tags, user_id=actor, created_at=now,
            ), audit)
            if created is None:
                raise NotFound(f"registered model {name!r} does not exist")
            number, audit_id = created.version, audit.audit_id
            await self._event(tx.registry, RegistryEvent(
                kind=RegistryEventKind.VERSION_CREATED, model_name=name, version=number, occurred_at=now,
                artifact=ArtifactRef(uri=source, format=MLFLOW_FORMAT),
                lineage=Lineage(run_id=run_id), actor=actor, comment=description, audit_id=audit_id,
            ))
        self._on_events()
        return {"model_version": version_json(created)}

    async def get_model_version(self, body: Body) -> Json:
        """GetModelVersion. Errors: NotFound, InvalidArgument."""
        return {"model_version": version_json(await self._version(required(body, "name"), version_param(body)))}

    async def get_model_version_download_uri(self, body: Body) -> Json:
        """GetModelVersionDownloadUri: the version's ``source``. Errors: NotFound, InvalidArgument."""
        version = await self._version(required(body, "name"), version_param(body))
        return {"artifact_uri": version.source}

    async def update_model_version(self, body: Body, actor: str) -> Json:
        """UpdateModelVersion (the description). Errors: NotFound, InvalidArgument."""
        name, number = required(body, "name"), version_param(body)
        description = validation.text(str(_get(body, "description") or ""), "description",
                                      validation.MAX_DESCRIPTION_CHARS)
        now = self._clock()
        async with self.store.transaction() as tx:
            await self._locked_version(tx, name, number)
            await tx.set_version_description(name, number, description, now)
            await self._audit(tx.registry, actor, "update_model_version", name, number, now,
                              {"description": description[:200]})
        return {"model_version": version_json(await self._version(name, number))}

    async def transition_model_version_stage(self, body: Body, actor: str) -> Json:
        """TransitionModelVersionStage: not supported (NotImplementedInGyre)."""
        raise NotImplementedInGyre(
            "model version stages are deprecated in MLflow 3 and not supported by Gyre: use aliases instead, "
            "e.g. MlflowClient.set_registered_model_alias(name, 'production', version)"
        )

    async def delete_model_version(self, body: Body, actor: str) -> Json:
        """DeleteModelVersion (and its aliases). Errors: NotFound, InvalidArgument."""
        name, number = required(body, "name"), version_param(body)
        now = self._clock()
        async with self.store.transaction() as tx:
            await self._locked_version(tx, name, number)
            await self._delete_version(tx, name, number, actor, now)
        self._on_events()
        return {}

    async def search_model_versions(self, body: Body) -> Json:
        """SearchModelVersions (filter grammar in :mod:`~gyre_registry.mlflow.filters`).
        Errors: InvalidArgument."""
        return await _search(body, "version", self.store.search_versions, version_json, "model_versions",
                             MAX_VERSION_RESULTS, MAX_VERSION_RESULTS)

    async def set_model_version_tag(self, body: Body, actor: str) -> Json:
        """SetModelVersionTag. Errors: NotFound, InvalidArgument."""
        name, number, key = required(body, "name"), version_param(body), required(body, "key")
        value = str(_get(body, "value") or "")
        validation.tags({key: value})
        now = self._clock()
        async with self.store.transaction() as tx:
            await self._locked_version(tx, name, number)
            await tx.set_version_tag(name, number, key, value, now)
            await self._audit(tx.registry, actor, "set_model_version_tag", name, number, now,
                              {"key": key, "value": value[:200]})
        return {}

    async def delete_model_version_tag(self, body: Body, actor: str) -> Json:
        """DeleteModelVersionTag. Errors: NotFound (version or tag), InvalidArgument."""
        name, number, key = required(body, "name"), version_param(body), required(body, "key")
        now = self._clock()
        async with self.store.transaction() as tx:
            version = await self._locked_version(tx, name, number)
            if key not in version.tags:
                raise NotFound(f"version {number} of {name!r} has no tag {key!r}")
            await tx.set_version_tag(name, number, key, None, now)
            await self._audit(tx.registry, actor, "delete_model_version_tag", name, number, now, {"key": key})
        return {}

    # -- aliases: the registry's governed alias path ---------------------------------------------------

    async def set_registered_model_alias(self, body: Body, actor: str) -> Json:
        """SetRegisteredModelAlias: :meth:`RegistryHandlers.set_alias` (audit + ALIAS_SET).
        Errors: NotFound, InvalidArgument, FailedPrecondition (archived version)."""
        await self.handlers.set_alias(required(body, "name"), required(body, "alias"), version_param(body),
                                      f"set {_MLFLOW_COMMENT}", actor)
        return {}

    async def delete_registered_model_alias(self, body: Body, actor: str) -> Json:
        """DeleteRegisteredModelAlias: :meth:`RegistryHandlers.delete_alias` (audit + ALIAS_REMOVED).
        Errors: NotFound, InvalidArgument."""
        await self.handlers.delete_alias(required(body, "name"), required(body, "alias"),
                                         f"deleted {_MLFLOW_COMMENT}", actor)
        return {}

    async def get_model_version_by_alias(self, body: Body) -> Json:
        """GetModelVersionByAlias. Errors: NotFound, InvalidArgument."""
        name, alias = required(body, "name"), required(body, "alias")
        found = await self.handlers.get_model_version_by_alias(name, alias)
        return {"model_version": version_json(await self._version(name, found.version))}

    # -- helpers -----------------------------------------------------------------------------------

    async def _model(self, name: str) -> sql.MlflowModel:
        model = await self.store.get_model(name)
        if model is None:
            raise NotFound(f"registered model {name!r} does not exist")
        return model

    async def _version(self, name: str, number: int) -> sql.MlflowVersion:
        version = await self.store.get_version(name, number)
        if version is None:
            await self._model(name)
            raise NotFound(f"model {name!r} has no version {number}")
        return version

    @staticmethod
    async def _lock(tx: MlflowTransaction, name: str) -> RegisteredModel:
        model = await tx.registry.lock_model(name)
        if model is None:
            raise NotFound(f"registered model {name!r} does not exist")
        return model

    async def _locked_version(self, tx: MlflowTransaction, name: str, number: int) -> sql.MlflowVersion:
        await self._lock(tx, name)
        version = await tx.version(name, number)
        if version is None:
            raise NotFound(f"model {name!r} has no version {number}")
        return version

    async def _delete_version(self, tx: MlflowTransaction, name: str, number: int, actor: str,
                              now: datetime) -> None:
        """Remove ``number``'s aliases (ALIAS_REMOVED each), then the version (VERSION_ARCHIVED)."""
        registry = tx.registry
        version = await registry.get_version(name, number)
        if version is None:
            return
        for alias in await registry.aliases_of_version(name, number):
            await registry.delete_alias(name, alias, now)
            audit_id = await self._audit(registry, actor, "delete_alias", name, number, now, {
                "alias": alias, "from_version": str(number), "to_version": "0",
                "reason": f"version deleted {_MLFLOW_COMMENT}",
            })
            await self._event(registry, RegistryEvent(
                kind=RegistryEventKind.ALIAS_REMOVED, model_name=name, version=0, alias=alias, occurred_at=now,
                previous_version=number, actor=actor, comment="version deleted", audit_id=audit_id,
            ))
        await tx.delete_version(name, number, now)
        audit_id = await self._audit(registry, actor, "delete_model_version", name, number, now, {
            "artifact_uri": version.artifact.uri, "reason": _MLFLOW_COMMENT,
        })
        await self._event(registry, RegistryEvent(
            kind=RegistryEventKind.VERSION_ARCHIVED, model_name=name, version=number, occurred_at=now,
            artifact=version.artifact, actor=actor, comment=f"deleted {_MLFLOW_COMMENT}", audit_id=audit_id,
        ))

    # The same audit + outbox records as the gRPC API's governance actions.
    _audit = staticmethod(record_audit)
    _event = staticmethod(record_event)
