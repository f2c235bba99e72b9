"""The registry's use cases. They take and return ``gyre.registry.v1`` messages and know nothing of
gRPC, HTTP or Kafka: the servicer and the REST routes decode, call one of these, and encode.

Every change runs in one transaction that also writes its audit entries and queues its
RegistryEvents in the outbox; after the commit the relay is woken to publish them.

Errors: :mod:`gyre_registry.domain.errors` (NotFound, AlreadyExists, InvalidArgument,
FailedPrecondition); each message names what is missing or wrong.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.gyre.registry.v1 import registry_service_pb2 as pb
from gyre_registry import message_checks
from gyre_registry.artifacts import ArtifactVerifier, NoVerification
from gyre_registry.domain import paging, validation
from gyre_registry.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from gyre_registry.domain.policy import Contender, Decision, Evaluation, Outcome, decide_promotion
from gyre_registry.store import AuditQuery, AuditRecord, NewVersion, Page, RegistryStore, RegistryTransaction

POLICY_ACTOR = "policy"
"""Actor of the alias moves the promotion policy makes."""

_OUTCOMES = {
    Outcome.PROMOTED: pb.PROMOTION_OUTCOME_PROMOTED,
    Outcome.CHALLENGER: pb.PROMOTION_OUTCOME_CHALLENGER,
    Outcome.NOT_PROMOTED: pb.PROMOTION_OUTCOME_NOT_PROMOTED,
}


@dataclass(frozen=True)
class PromotionConfig:
    """Aliases the promotion policy moves."""

    champion_alias: str = "production"
    challenger_alias: str = "challenger"


def audit_entry(actor: str, action: str, name: str, version: int, now: datetime,
                details: dict[str, str]) -> AuditRecord:
    """A new audit entry (fresh id, empty details dropped), for a store call that writes it."""
    return AuditRecord(str(uuid.uuid4()), actor, action, name, version, {k: v for k, v in details.items() if v}, now)


async def record_audit(tx: RegistryTransaction, actor: str, action: str, name: str, version: int,
                       now: datetime, details: dict[str, str]) -> str:
    """Write one audit entry (empty details dropped) in ``tx``; returns its id for the event."""
    entry = audit_entry(actor, action, name, version, now, details)
    await tx.add_audit(entry)
    return entry.audit_id


async def record_event(tx: RegistryTransaction, event: ev.RegistryEvent, now: datetime) -> None:
    """Queue ``event`` in the outbox of ``tx``, stamped with ``now`` (UTC)."""
    event.occurred_at.FromDatetime(now)
    await tx.add_events([(event, str(uuid.uuid4()))])


def _contender(version: pb.ModelVersion, evaluation: pb.HoldoutEvaluation | None = None) -> Contender:
    """The policy's view of ``version``; ``evaluation`` (the registering request's) adds the
    champion re-scored on this version's holdout, which is used for this one decision only."""
    e = evaluation if evaluation is not None else version.evaluation
    return Contender(
        version=version.version,
        metrics=dict(version.lineage.metrics),
        evaluation=Evaluation(
            e.primary_metric, e.lower_is_better, e.holdout_id, e.champion_version,
            e.champion_score if e.HasField("champion_score") else None,
        ),
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

    def __init__(self, store: RegistryStore, *, promotion: PromotionConfig | None = None,
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

    async def create_registered_model(self, request: pb.CreateRegisteredModelRequest,
                                      actor: str) -> pb.CreateRegisteredModelResponse:
        """Create a model. Errors: InvalidArgument (name, description, tags), AlreadyExists."""
        name = validation.model_name(request.name, "name")
        validation.text(request.description, "description", validation.MAX_DESCRIPTION_CHARS)
        validation.tags(request.tags)
        now = self._clock()
        async with self.store.transaction() as tx:
            await tx.insert_model(name, request.description, request.tags, now, if_missing=False)
            await self._model_created(tx, name, actor, now)
            model = await tx.lock_model(name)
        self._on_events()
        return pb.CreateRegisteredModelResponse(registered_model=model)

    async def get_registered_model(self, request: pb.GetRegisteredModelRequest) -> pb.GetRegisteredModelResponse:
        """One model with its aliases. Errors: NotFound."""
        name = validation.model_name(request.name, "name")
        model = await self.store.get_model(name)
        if model is None:
            raise _model_missing(name)
        return pb.GetRegisteredModelResponse(registered_model=model)

    async def list_registered_models(self, request: pb.ListRegisteredModelsRequest) -> pb.ListRegisteredModelsResponse:
        """Models by name, paged. Errors: InvalidArgument (page_size, page_token)."""
        size = validation.page_size(request.page_size)
        position = paging.decode_token(request.page_token, ("n",))
        models = await self.store.list_models(Page(size + 1, position["n"] if position else None))
        token = paging.encode_token({"n": models[size - 1].name}) if len(models) > size else ""
        return pb.ListRegisteredModelsResponse(registered_models=models[:size], next_page_token=token)

    # -- versions --------------------------------------------------------------------------------

    async def create_model_version(self, request: pb.CreateModelVersionRequest,
                                   actor: str) -> pb.CreateModelVersionResponse:
        """Register a version (creating the model if missing), then run the promotion policy.

        Idempotent on ``idempotency_key``: a retry returns the first version and its promotion
        decision. Errors: InvalidArgument; AlreadyExists (key reused for another artifact);
        FailedPrecondition (artifact unreadable or not matching its sha256/size).
        """
        message_checks.create_model_version(request)
        await self.verifier.verify(request.artifact, "artifact")
        name = request.model_name
        key = request.idempotency_key or None
        now = self._clock()
        async with self.store.transaction() as tx:
            created_model = await tx.insert_model(name, "", {}, now, if_missing=True)
            # The row lock serialises every change of this model: version numbers, the idempotency
            # check and alias moves all see one order, and so do the model's events.
            await tx.lock_model(name)
            if key is not None:
                existing = await tx.version_by_idempotency_key(name, key)
                if existing is not None:
                    return self._retried(request, existing.model_version, existing.promotion)
            if created_model:
                await self._model_created(tx, name, actor, now)
            number = await tx.next_version(name, now)
            version = await tx.insert_version(NewVersion(
                model_name=name, version=number, artifact=request.artifact, signature=request.signature,
                lineage=request.lineage, evaluation=request.evaluation, description=request.description,
                tags=dict(request.tags), created_by=actor, created_at=now, idempotency_key=key,
            ))
            audit_id = await self._audit(tx, actor, "create_model_version", name, number, now, {
                "artifact_uri": request.artifact.uri,
                "artifact_sha256": request.artifact.sha256,
                "training_request_id": request.lineage.training_request_id,
                "run_id": request.lineage.run_id,
                "idempotency_key": request.idempotency_key,
            })
            await self._event(tx, ev.RegistryEvent(
                kind=ev.REGISTRY_EVENT_KIND_VERSION_CREATED, model_name=name, version=number,
                artifact=version.artifact, lineage=version.lineage, signature=version.signature,
                actor=actor, comment=request.description, audit_id=audit_id,
            ), now)
            decision = await self._promote(tx, version, request.evaluation, skip=request.skip_promotion, now=now)
            await tx.save_promotion(name, number, decision)
            refreshed = await tx.get_version(name, number)
        self._on_events()
        return pb.CreateModelVersionResponse(model_version=refreshed, promotion=decision)

    def _retried(self, request: pb.CreateModelVersionRequest, existing: pb.ModelVersion,
                 promotion: pb.PromotionDecision | None) -> pb.CreateModelVersionResponse:
        if existing.artifact.sha256 != request.artifact.sha256:
            raise AlreadyExists(
                f"idempotency_key {request.idempotency_key!r} already registered version {existing.version} of "
                f"{request.model_name!r} with artifact sha256 {existing.artifact.sha256}; use a new key for "
                "another artifact"
            )
        return pb.CreateModelVersionResponse(model_version=existing, promotion=promotion)

    async def _promote(self, tx: RegistryTransaction, version: pb.ModelVersion,
                       evaluation: pb.HoldoutEvaluation, *, skip: bool, now: datetime) -> pb.PromotionDecision:
        """Apply the promotion policy to the new ``version``, inside the creating transaction."""
        name = version.model_name
        champion_alias = self.promotion.champion_alias
        champion_number = await tx.alias_version(name, champion_alias) or 0
        if skip:
            return pb.PromotionDecision(outcome=pb.PROMOTION_OUTCOME_SKIPPED, champion_version=champion_number,
                                        reason="the request asked to skip the promotion policy")
        champion = await tx.get_version(name, champion_number) if champion_number else None
        decision: Decision = decide_promotion(
            _contender(version, evaluation), _contender(champion) if champion is not None else None,
            champion_alias=champion_alias, challenger_alias=self.promotion.challenger_alias,
        )
        result = pb.PromotionDecision(outcome=_OUTCOMES[decision.outcome], champion_version=champion_number,
                                      reason=decision.reason)
        if decision.alias is not None:
            result.alias = decision.alias
            result.previous_version = await self._move_alias(
                tx, version, decision.alias, POLICY_ACTOR, decision.reason, now,
                extra={"outcome": decision.outcome.value, "champion_version": str(champion_number)},
            )
        else:
            await self._audit(tx, POLICY_ACTOR, "promotion_declined", name, version.version, now, {
                "alias": champion_alias,
                "champion_version": str(champion_number),
                "outcome": decision.outcome.value,
                "reason": decision.reason,
            })
        return result

    async def get_model_version(self, request: pb.GetModelVersionRequest) -> pb.GetModelVersionResponse:
        """One version. Errors: InvalidArgument, NotFound."""
        name = validation.model_name(request.model_name)
        number = validation.version_number(request.version)
        version = await self.store.get_version(name, number)
        if version is None:
            if await self.store.get_model(name) is None:
                raise _model_missing(name)
            raise _version_missing(name, number)
        return pb.GetModelVersionResponse(model_version=version)

    async def list_model_versions(self, request: pb.ListModelVersionsRequest) -> pb.ListModelVersionsResponse:
        """Versions newest first, paged. Errors: InvalidArgument, NotFound (model)."""
        name = validation.model_name(request.model_name)
        size = validation.page_size(request.page_size)
        position = paging.decode_token(request.page_token, ("v",))
        if await self.store.get_model(name) is None:
            raise _model_missing(name)
        versions = await self.store.list_versions(name, request.include_archived,
                                                  Page(size + 1, position["v"] if position else None))
        token = paging.encode_token({"v": versions[size - 1].version}) if len(versions) > size else ""
        return pb.ListModelVersionsResponse(model_versions=versions[:size], next_page_token=token)

    async def archive_model_version(self, request: pb.ArchiveModelVersionRequest,
                                    actor: str) -> pb.ArchiveModelVersionResponse:
        """Archive a version (a no-op if it already is). Errors: NotFound; FailedPrecondition while
        an alias points at it."""
        name = validation.model_name(request.model_name)
        number = validation.version_number(request.version)
        validation.text(request.comment, "comment", validation.MAX_COMMENT_CHARS)
        now = self._clock()
        async with self.store.transaction() as tx:
            version = await self._locked_version(tx, name, number)
            if version.status != pb.MODEL_VERSION_STATUS_ARCHIVED:
                aliases = await tx.aliases_of_version(name, number)
                if aliases:
                    raise FailedPrecondition(
                        f"version {number} of {name!r} is still aliased as {', '.join(aliases)}: "
                        "move or delete those aliases first"
                    )
                await tx.archive_version(name, number, now)
                audit_id = await self._audit(tx, actor, "archive_model_version", name, number, now,
                                             {"reason": request.comment})
                await self._event(tx, ev.RegistryEvent(
                    kind=ev.REGISTRY_EVENT_KIND_VERSION_ARCHIVED, model_name=name, version=number,
                    artifact=version.artifact, actor=actor, comment=request.comment, audit_id=audit_id,
                ), now)
                version = await tx.get_version(name, number) or version
        self._on_events()
        return pb.ArchiveModelVersionResponse(model_version=version)

    # -- aliases ---------------------------------------------------------------------------------

    async def set_alias(self, request: pb.SetAliasRequest, actor: str) -> pb.SetAliasResponse:
        """Point an alias at a version; a no-op when it already points there.

        Errors: InvalidArgument (alias, version), NotFound (model, version), FailedPrecondition
        (archived version).
        """
        name = validation.model_name(request.model_name)
        alias = validation.alias(request.alias)
        number = validation.version_number(request.version)
        validation.text(request.comment, "comment", validation.MAX_COMMENT_CHARS)
        now = self._clock()
        async with self.store.transaction() as tx:
            # One round trip reads the locked model (its aliases say where this one points now) and the version.
            model, version = await tx.lock_model_version(name, number)
            if model is None:
                raise _model_missing(name)
            if version is None:
                raise _version_missing(name, number)
            if version.status == pb.MODEL_VERSION_STATUS_ARCHIVED:
                raise FailedPrecondition(f"version {number} of {name!r} is archived and cannot be aliased")
            previous = await self._move_alias(tx, version, alias, actor, request.comment, now,
                                              previous=model.aliases.get(alias, 0))
        self._on_events()
        return pb.SetAliasResponse(applied=True, previous_version=previous)

    async def delete_alias(self, request: pb.DeleteAliasRequest, actor: str) -> pb.DeleteAliasResponse:
        """Remove an alias. Errors: InvalidArgument, NotFound (model or alias)."""
        name = validation.model_name(request.model_name)
        alias = validation.alias(request.alias)
        validation.text(request.comment, "comment", validation.MAX_COMMENT_CHARS)
        now = self._clock()
        async with self.store.transaction() as tx:
            if await tx.lock_model(name) is None:
                raise _model_missing(name)
            previous = await tx.alias_version(name, alias)
            if previous is None:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            await tx.delete_alias(name, alias, now)
            audit_id = await self._audit(tx, actor, "delete_alias", name, previous, now, {
                "alias": alias, "from_version": str(previous), "to_version": "0", "reason": request.comment,
            })
            await self._event(tx, ev.RegistryEvent(
                kind=ev.REGISTRY_EVENT_KIND_ALIAS_REMOVED, model_name=name, version=0, alias=alias,
                previous_version=previous, actor=actor, comment=request.comment, audit_id=audit_id,
            ), now)
        self._on_events()
        return pb.DeleteAliasResponse(previous_version=previous)

    async def get_model_version_by_alias(
        self, request: pb.GetModelVersionByAliasRequest
    ) -> pb.GetModelVersionByAliasResponse:
        """The version an alias (or ``latest``) points at. Errors: InvalidArgument, NotFound."""
        name = validation.model_name(request.model_name)
        alias = validation.alias(request.alias, allow_latest=True)
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
        return pb.GetModelVersionByAliasResponse(model_version=version)

    # -- approvals (none yet: no alias is protected in this release) --------------------------------

    async def list_approvals(self, request: pb.ListApprovalsRequest) -> pb.ListApprovalsResponse:
        """Always empty for now: no alias needs an approval yet. Errors: InvalidArgument."""
        if request.model_name:
            validation.model_name(request.model_name)
        validation.page_size(request.page_size)
        paging.decode_token(request.page_token, ("a",))
        return pb.ListApprovalsResponse()

    async def decide_approval(self, request: pb.DecideApprovalRequest, actor: str) -> pb.DecideApprovalResponse:
        """Errors: NotFound (there are no approvals yet)."""
        raise NotFound(f"no approval {request.approval_id[:80]!r}: no alias needs an approval in this registry yet")

    # -- audit -----------------------------------------------------------------------------------

    async def list_audit_entries(self, request: pb.ListAuditEntriesRequest) -> pb.ListAuditEntriesResponse:
        """Audit entries newest first, paged, optionally of one model and since a time.

        Errors: InvalidArgument (model_name, page_size, page_token).
        """
        if request.model_name:
            validation.model_name(request.model_name)
        size = validation.page_size(request.page_size)
        position = paging.decode_token(request.page_token, ("s",))
        since = request.since.ToDatetime(tzinfo=UTC) if request.HasField("since") else None
        rows = await self.store.list_audit(AuditQuery(
            model_name=request.model_name, since=since, page=Page(size + 1, position["s"] if position else None),
        ))
        token = paging.encode_token({"s": rows[size - 1][0]}) if len(rows) > size else ""
        return pb.ListAuditEntriesResponse(entries=[entry for _, entry in rows[:size]], next_page_token=token)

    # -- helpers ---------------------------------------------------------------------------------

    async def _locked_version(self, tx: RegistryTransaction, name: str, number: int) -> pb.ModelVersion:
        if await tx.lock_model(name) is None:
            raise _model_missing(name)
        version = await tx.get_version(name, number)
        if version is None:
            raise _version_missing(name, number)
        return version

    async def _move_alias(self, tx: RegistryTransaction, version: pb.ModelVersion, alias: str, actor: str,
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
        audit_id = audit.audit_id
        await self._event(tx, ev.RegistryEvent(
            kind=ev.REGISTRY_EVENT_KIND_ALIAS_SET, model_name=name, version=version.version, alias=alias,
            previous_version=previous, artifact=version.artifact, signature=version.signature,
            actor=actor, comment=reason, audit_id=audit_id,
        ), now)
        return previous

    async def _model_created(self, tx: RegistryTransaction, name: str, actor: str, now: datetime) -> None:
        audit_id = await self._audit(tx, actor, "create_registered_model", name, 0, now, {})
        await self._event(tx, ev.RegistryEvent(
            kind=ev.REGISTRY_EVENT_KIND_MODEL_CREATED, model_name=name, actor=actor, audit_id=audit_id,
        ), now)

    _audit = staticmethod(record_audit)
    _event = staticmethod(record_event)
