"""The registry's use cases. They take and return the domain types of
:mod:`gyre_registry.domain.models` and know nothing of gRPC, HTTP, Kafka or protobuf: the servicer,
the REST routes and the MLflow layer decode, call one of these, and encode (:mod:`gyre_registry.convert`).

Every change runs in one transaction that also writes its audit entries and queues its
RegistryEvents in the outbox (as protobuf bytes from :func:`gyre_registry.convert.registry_event`);
after the commit the relay is woken to publish them.

Errors: :mod:`gyre_registry.domain.errors` (NotFound, AlreadyExists, InvalidArgument,
FailedPrecondition); each message names what is missing or wrong.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from gyre_common.outbox import OutboxEvent
from gyre_common.topics import REGISTRY_EVENTS
from gyre_registry import convert
from gyre_registry.artifacts import ArtifactVerifier, NoVerification
from gyre_registry.domain import paging, validation
from gyre_registry.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from gyre_registry.domain.models import (
    AuditEntry,
    HoldoutEvaluation,
    Listing,
    ModelVersion,
    PromotionDecision,
    PromotionOutcome,
    RegisteredModel,
    Registration,
    RegistryEvent,
    RegistryEventKind,
    VersionDraft,
    VersionStatus,
)
from gyre_registry.domain.policy import Contender, Decision, Evaluation, decide_promotion
from gyre_registry.store import AuditQuery, NewVersion, Page, RegistryTransaction, Store

POLICY_ACTOR = "policy"
"""Actor of the alias moves the promotion policy makes."""


@dataclass(frozen=True)
class PromotionConfig:
    """Aliases the promotion policy moves."""

    champion_alias: str = "production"
    challenger_alias: str = "challenger"


def audit_entry(actor: str, action: str, name: str, version: int, now: datetime,
                details: Mapping[str, str]) -> AuditEntry:
    """A new audit entry (fresh id, empty details dropped), for a store call that writes it."""
    return AuditEntry(str(uuid.uuid4()), actor, action, name, version, {k: v for k, v in details.items() if v}, now)


async def record_audit(tx: RegistryTransaction, actor: str, action: str, name: str, version: int,
                       now: datetime, details: Mapping[str, str]) -> str:
    """Write one audit entry (empty details dropped) in ``tx``; returns its id for the event."""
    entry = audit_entry(actor, action, name, version, now, details)
    await tx.add_audit(entry)
    return entry.audit_id


async def record_event(tx: RegistryTransaction, event: RegistryEvent) -> None:
    """Queue ``event`` on ``registry.events`` (key: the model's name; ``ce_time``: its
    ``occurred_at``) in the outbox of ``tx``."""
    await tx.add_events([OutboxEvent(REGISTRY_EVENTS, convert.registry_event(event), event.model_name,
                                     str(uuid.uuid4()), event.occurred_at)])


def _contender(version: ModelVersion, evaluation: HoldoutEvaluation | None = None) -> Contender:
    """The policy's view of ``version``; ``evaluation`` (the registering request's) adds the
    champion re-scored on this version's holdout, which is used for this one decision only."""
    e = evaluation if evaluation is not None else version.evaluation
    return Contender(
        version=version.version,
        metrics=dict(version.lineage.metrics),
        evaluation=Evaluation(e.primary_metric, e.lower_is_better, e.holdout_id, e.champion_version,
                              e.champion_score),
    )


def _model_missing(name: str) -> NotFound:
    return NotFound(f"registered model {name!r} does not exist")


def _version_missing(name: str, version: int) -> NotFound:
    return NotFound(f"model {name!r} has no version {version}")


class RegistryHandlers:
    """Use cases of the registry.

    Args:
        store: where models, versions, aliases, audit entries and outbox events live.
        promotion: aliases the policy moves.
        verifier: checks artifacts at registration (FAILED_PRECONDITION when they do not hold).
        on_events: called after a commit that queued events (wakes the outbox relay).
        clock: now, aware UTC.
    """

    def __init__(self, store: Store, *, promotion: PromotionConfig | None = None,
                 verifier: ArtifactVerifier | None = None, on_events: Callable[[], None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.promotion = promotion or PromotionConfig()
        validation.alias(self.promotion.champion_alias, "champion_alias")
        validation.alias(self.promotion.challenger_alias, "challenger_alias")
        self.verifier = verifier or NoVerification()
        self._on_events = on_events or (lambda: None)
        self._clock = clock or (lambda: datetime.now(UTC))

    # -- registered models -----------------------------------------------------------------------

    async def create_registered_model(self, name: str, description: str, tags: Mapping[str, str],
                                      actor: str) -> RegisteredModel:
        """Create a model. Errors: InvalidArgument (name, description, tags), AlreadyExists."""
        name = validation.model_name(name, "name")
        validation.text(description, "description", validation.MAX_DESCRIPTION_CHARS)
        validation.tags(tags)
        now = self._clock()
        async with self.store.transaction() as tx:
            await tx.insert_model(name, description, tags, now, if_missing=False)
            await self._model_created(tx, name, actor, now)
            model = await tx.lock_model(name)
        self._on_events()
        assert model is not None  # created in this transaction
        return model

    async def get_registered_model(self, name: str) -> RegisteredModel:
        """One model with its aliases. Errors: InvalidArgument, NotFound."""
        name = validation.model_name(name, "name")
        model = await self.store.get_model(name)
        if model is None:
            raise _model_missing(name)
        return model

    async def list_registered_models(self, page_size: int, page_token: str) -> Listing[RegisteredModel]:
        """Models by name, paged (``page_size`` 0: 100). Errors: InvalidArgument (page_size, page_token)."""
        size = validation.page_size(page_size)
        position = paging.decode_token(page_token, ("n",))
        models = await self.store.list_models(Page(size + 1, position["n"] if position else None))
        token = paging.encode_token({"n": models[size - 1].name}) if len(models) > size else ""
        return Listing(models[:size], token)

    # -- versions --------------------------------------------------------------------------------

    async def create_model_version(self, draft: VersionDraft, actor: str) -> Registration:
        """Register a version (creating the model if missing), then run the promotion policy.

        Idempotent on ``idempotency_key``: a retry returns the first version and its promotion
        decision. Errors: InvalidArgument; AlreadyExists (key reused for another artifact);
        FailedPrecondition (artifact unreadable or not matching its sha256/size).
        """
        artifact = validation.version_draft(draft)
        await self.verifier.verify(artifact, "artifact")
        name = draft.model_name
        key = draft.idempotency_key or None
        now = self._clock()
        async with self.store.transaction() as tx:
            created_model = await tx.insert_model(name, "", {}, now, if_missing=True)
            # The row lock serialises every change of this model: version numbers, the idempotency
            # check and alias moves all see one order, and so do the model's events.
            await tx.lock_model(name)
            if key is not None:
                existing = await tx.version_by_idempotency_key(name, key)
                if existing is not None:
                    return self._retried(draft, existing.model_version, existing.promotion)
            if created_model:
                await self._model_created(tx, name, actor, now)
            number = await tx.next_version(name, now)
            version = await tx.insert_version(NewVersion(
                model_name=name, version=number, artifact=artifact, signature=draft.signature,
                lineage=draft.lineage, evaluation=draft.evaluation, description=draft.description,
                tags=dict(draft.tags), created_by=actor, created_at=now, idempotency_key=key,
            ))
            audit_id = await self._audit(tx, actor, "create_model_version", name, number, now, {
                "artifact_uri": artifact.uri,
                "artifact_sha256": artifact.sha256,
                "training_request_id": draft.lineage.training_request_id,
                "run_id": draft.lineage.run_id,
                "idempotency_key": draft.idempotency_key,
            })
            await self._event(tx, RegistryEvent(
                kind=RegistryEventKind.VERSION_CREATED, model_name=name, version=number, occurred_at=now,
                artifact=version.artifact, lineage=version.lineage, signature=version.signature,
                actor=actor, comment=draft.description, audit_id=audit_id,
            ))
            decision = await self._promote(tx, version, draft.evaluation, skip=draft.skip_promotion, now=now)
            await tx.save_promotion(name, number, decision)
            refreshed = await tx.get_version(name, number)
        self._on_events()
        assert refreshed is not None  # inserted in this transaction
        return Registration(refreshed, decision)

    def _retried(self, draft: VersionDraft, existing: ModelVersion,
                 promotion: PromotionDecision | None) -> Registration:
        sha256 = draft.artifact.sha256 if draft.artifact is not None else ""
        if existing.artifact.sha256 != sha256:
            raise AlreadyExists(
                f"idempotency_key {draft.idempotency_key!r} already registered version {existing.version} of "
                f"{draft.model_name!r} with artifact sha256 {existing.artifact.sha256}; use a new key for "
                "another artifact"
            )
        return Registration(existing, promotion)

    async def _promote(self, tx: RegistryTransaction, version: ModelVersion,
                       evaluation: HoldoutEvaluation, *, skip: bool, now: datetime) -> PromotionDecision:
        """Apply the promotion policy to the new ``version``, inside the creating transaction."""
        name = version.model_name
        champion_alias = self.promotion.champion_alias
        champion_number = await tx.alias_version(name, champion_alias) or 0
        if skip:
            return PromotionDecision(PromotionOutcome.SKIPPED, champion_version=champion_number,
                                     reason="the request asked to skip the promotion policy")
        champion = await tx.get_version(name, champion_number) if champion_number else None
        decision: Decision = decide_promotion(
            _contender(version, evaluation), _contender(champion) if champion is not None else None,
            champion_alias=champion_alias, challenger_alias=self.promotion.challenger_alias,
        )
        result = PromotionDecision(PromotionOutcome(decision.outcome.value), champion_version=champion_number,
                                   reason=decision.reason)
        if decision.alias is not None:
            previous = await self._move_alias(
                tx, version, decision.alias, POLICY_ACTOR, decision.reason, now,
                extra={"outcome": decision.outcome.value, "champion_version": str(champion_number)},
            )
            result = replace(result, alias=decision.alias, previous_version=previous)
        else:
            await self._audit(tx, POLICY_ACTOR, "promotion_declined", name, version.version, now, {
                "alias": champion_alias,
                "champion_version": str(champion_number),
                "outcome": decision.outcome.value,
                "reason": decision.reason,
            })
        return result

    async def get_model_version(self, model_name: str, version: int) -> ModelVersion:
        """One version. Errors: InvalidArgument, NotFound."""
        name = validation.model_name(model_name)
        number = validation.version_number(version)
        found = await self.store.get_version(name, number)
        if found is None:
            if await self.store.get_model(name) is None:
                raise _model_missing(name)
            raise _version_missing(name, number)
        return found

    async def list_model_versions(self, model_name: str, include_archived: bool, page_size: int,
                                  page_token: str) -> Listing[ModelVersion]:
        """Versions newest first, paged. Errors: InvalidArgument, NotFound (model)."""
        name = validation.model_name(model_name)
        size = validation.page_size(page_size)
        position = paging.decode_token(page_token, ("v",))
        if await self.store.get_model(name) is None:
            raise _model_missing(name)
        versions = await self.store.list_versions(name, include_archived,
                                                  Page(size + 1, position["v"] if position else None))
        token = paging.encode_token({"v": versions[size - 1].version}) if len(versions) > size else ""
        return Listing(versions[:size], token)

    async def archive_model_version(self, model_name: str, version: int, comment: str,
                                    actor: str) -> ModelVersion:
        """Archive a version (a no-op if it already is). Errors: NotFound; FailedPrecondition while
        an alias points at it."""
        name = validation.model_name(model_name)
        number = validation.version_number(version)
        validation.text(comment, "comment", validation.MAX_COMMENT_CHARS)
        now = self._clock()
        async with self.store.transaction() as tx:
            found = await self._locked_version(tx, name, number)
            if found.status != VersionStatus.ARCHIVED:
                aliases = await tx.aliases_of_version(name, number)
                if aliases:
                    raise FailedPrecondition(
                        f"version {number} of {name!r} is still aliased as {', '.join(aliases)}: "
                        "move or delete those aliases first"
                    )
                await tx.archive_version(name, number, now)
                audit_id = await self._audit(tx, actor, "archive_model_version", name, number, now,
                                             {"reason": comment})
                await self._event(tx, RegistryEvent(
                    kind=RegistryEventKind.VERSION_ARCHIVED, model_name=name, version=number, occurred_at=now,
                    artifact=found.artifact, actor=actor, comment=comment, audit_id=audit_id,
                ))
                found = await tx.get_version(name, number) or found
        self._on_events()
        return found

    # -- aliases ---------------------------------------------------------------------------------

    async def set_alias(self, model_name: str, alias: str, version: int, comment: str, actor: str) -> int:
        """Point an alias at a version; a no-op when it already points there. Returns the version it
        pointed at before (0: none).

        Errors: InvalidArgument (alias, version), NotFound (model, version), FailedPrecondition
        (archived version).
        """
        name = validation.model_name(model_name)
        alias = validation.alias(alias)
        number = validation.version_number(version)
        validation.text(comment, "comment", validation.MAX_COMMENT_CHARS)
        now = self._clock()
        async with self.store.transaction() as tx:
            # One round trip reads the locked model (its aliases say where this one points now) and the version.
            model, found = await tx.lock_model_version(name, number)
            if model is None:
                raise _model_missing(name)
            if found is None:
                raise _version_missing(name, number)
            if found.status == VersionStatus.ARCHIVED:
                raise FailedPrecondition(f"version {number} of {name!r} is archived and cannot be aliased")
            previous = await self._move_alias(tx, found, alias, actor, comment, now,
                                              previous=model.aliases.get(alias, 0))
        self._on_events()
        return previous

    async def delete_alias(self, model_name: str, alias: str, comment: str, actor: str) -> int:
        """Remove an alias; returns the version it pointed at. Errors: InvalidArgument, NotFound
        (model or alias)."""
        name = validation.model_name(model_name)
        alias = validation.alias(alias)
        validation.text(comment, "comment", validation.MAX_COMMENT_CHARS)
        now = self._clock()
        async with self.store.transaction() as tx:
            if await tx.lock_model(name) is None:
                raise _model_missing(name)
            previous = await tx.alias_version(name, alias)
            if previous is None:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            await tx.delete_alias(name, alias, now)
            audit_id = await self._audit(tx, actor, "delete_alias", name, previous, now, {
                "alias": alias, "from_version": str(previous), "to_version": "0", "reason": comment,
            })
            await self._event(tx, RegistryEvent(
                kind=RegistryEventKind.ALIAS_REMOVED, model_name=name, version=0, alias=alias, occurred_at=now,
                previous_version=previous, actor=actor, comment=comment, audit_id=audit_id,
            ))
        self._on_events()
        return previous

    async def get_model_version_by_alias(self, model_name: str, alias: str) -> ModelVersion:
        """The version an alias (or ``latest``) points at. Errors: InvalidArgument, NotFound."""
        name = validation.model_name(model_name)
        alias = validation.alias(alias, allow_latest=True)
        if alias == validation.LATEST:
            number = await self.store.latest_ready_version(name)
        else:
            number = await self.store.alias_version(name, alias)
        version = await self.store.get_version(name, number) if number is not None else None
        if version is None:
            if await self.store.get_model(name) is None:
                raise _model_missing(name)
            if alias == validation.LATEST:
                raise NotFound(f"model {name!r} has no version that is not archived")
            raise NotFound(f"model {name!r} has no alias {alias!r}")
        return version

    # -- approvals (none yet: no alias is protected in this release) --------------------------------

    async def list_approvals(self, model_name: str, page_size: int, page_token: str) -> None:
        """Checks the query; there is nothing to list yet (no alias needs an approval).
        Errors: InvalidArgument."""
        if model_name:
            validation.model_name(model_name)
        validation.page_size(page_size)
        paging.decode_token(page_token, ("a",))

    async def decide_approval(self, approval_id: str, actor: str) -> None:
        """Errors: NotFound (there are no approvals yet)."""
        raise NotFound(f"no approval {approval_id[:80]!r}: no alias needs an approval in this registry yet")

    # -- audit -----------------------------------------------------------------------------------

    async def list_audit_entries(self, model_name: str, since: datetime | None, page_size: int,
                                 page_token: str) -> Listing[AuditEntry]:
        """Audit entries newest first, paged, optionally of one model and since a time (aware).

        Errors: InvalidArgument (model_name, page_size, page_token).
        """
        if model_name:
            validation.model_name(model_name)
        size = validation.page_size(page_size)
        position = paging.decode_token(page_token, ("s",))
        rows = await self.store.list_audit(AuditQuery(
            model_name=model_name, since=since, page=Page(size + 1, position["s"] if position else None),
        ))
        token = paging.encode_token({"s": rows[size - 1][0]}) if len(rows) > size else ""
        return Listing([entry for _, entry in rows[:size]], token)

    # -- helpers ---------------------------------------------------------------------------------

    async def _locked_version(self, tx: RegistryTransaction, name: str, number: int) -> ModelVersion:
        if await tx.lock_model(name) is None:
            raise _model_missing(name)
        version = await tx.get_version(name, number)
        if version is None:
            raise _version_missing(name, number)
        return version

    async def _move_alias(self, tx: RegistryTransaction, version: ModelVersion, alias: str, actor: str,
                          reason: str, now: datetime, extra: dict[str, str] | None = None,
                          previous: int | None = None) -> int:
        """Point ``alias`` at ``version`` with its audit entry and ALIAS_SET; the previous version
        (0 if none; ``previous`` when the caller read it under the model's lock already). Pointing
        it where it already points changes nothing."""
        name = version.model_name
        if previous is None:
            previous = await tx.alias_version(name, alias) or 0
        if previous == version.version:
            return previous
        details = {"alias": alias, "from_version": str(previous), "to_version": str(version.version),
                   "reason": reason, **(extra or {})}
        audit = audit_entry(actor, "set_alias", name, version.version, now, details)
        await tx.set_alias(name, alias, version.version, now, audit)
        await self._event(tx, RegistryEvent(
            kind=RegistryEventKind.ALIAS_SET, model_name=name, version=version.version, alias=alias,
            occurred_at=now, previous_version=previous, artifact=version.artifact, signature=version.signature,
            actor=actor, comment=reason, audit_id=audit.audit_id,
        ))
        return previous

    async def _model_created(self, tx: RegistryTransaction, name: str, actor: str, now: datetime) -> None:
        audit_id = await self._audit(tx, actor, "create_registered_model", name, 0, now, {})
        await self._event(tx, RegistryEvent(
            kind=RegistryEventKind.MODEL_CREATED, model_name=name, occurred_at=now, actor=actor, audit_id=audit_id,
        ))

    _audit = staticmethod(record_audit)
    _event = staticmethod(record_event)
