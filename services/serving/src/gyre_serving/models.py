"""Keeping what serving loads in step with the registry.

:class:`ModelManager` applies registry changes (:class:`~gyre_serving.domain.registry.RegistryChange`,
decoded by the registry follower in :mod:`gyre_serving.consumers`): it loads the version the
served alias points at and swaps it in, keeping the old version when the new one cannot be loaded.
:class:`AliasManagers` drives the managers of every followed alias together.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gyre_serving import metrics
from gyre_serving.domain.errors import ModelLoadError
from gyre_serving.domain.registry import ChangeKind, RegistryChange
from gyre_serving.domain.runtime import ModelSource, Runtime
from gyre_serving.repository import ModelRepository

log = logging.getLogger(__name__)

Loader = Callable[[ModelSource], Runtime]
"""Blocking load of one version (:meth:`gyre_serving.loader.ModelLoader.load`); run in a thread."""
VersionLookup = Callable[[str, int], Awaitable[ModelSource | None]]
"""Asks the registry for one version's artifact and signature (None: unknown)."""


@dataclass
class ManagerStats:
    """What the manager did since start (tests and logs; metrics carry the same)."""

    loaded: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    unloaded: int = 0


class ModelManager:
    """Keeps the repository in step with the registry's alias.

    Every change is serialised (one at a time) and applied in the order it arrives. A version that
    cannot be loaded (sha256 mismatch, untrusted types, failed warm-up, ...) is refused with an
    error log and the ``gyre_serving_model_loads{outcome=<reason>}`` metric, and the version
    already served keeps serving.

    Args:
        repository: where loaded models are swapped in.
        loader: blocking loader, run in a worker thread.
        alias: the alias to serve.
        models: model names to serve; empty serves every model that has the alias.
        load_attempts: attempts for retryable load failures (missing or unreadable artifact).
        retry_delay_s: first wait between those attempts, doubling.
        lookup: asks the registry for a version an alias event did not describe (optional).
    """

    CATALOG_SIZE = 1000
    """Versions remembered from VERSION_CREATED events (artifact + signature), newest kept."""

    def __init__(self, repository: ModelRepository, loader: Loader, *, alias: str, models: Sequence[str] = (),
                 load_attempts: int = 3, retry_delay_s: float = 0.5, lookup: VersionLookup | None = None) -> None:
        self.repository = repository
        self.loader = loader
        self.alias = alias
        self.models = tuple(models)
        self.load_attempts = load_attempts
        self.retry_delay_s = retry_delay_s
        self.lookup = lookup
        self.stats = ManagerStats()
        self._catalog: OrderedDict[tuple[str, int], ModelSource] = OrderedDict()
        self._lock = asyncio.Lock()

    def wants(self, name: str) -> bool:
        """Whether ``name`` is one of the models to serve."""
        return not self.models or name in self.models

    def missing(self) -> list[str]:
        """Configured models that have no version loaded (empty when no models are configured)."""
        return [name for name in self.models if self.repository.get(name) is None]

    async def apply(self, event: RegistryChange) -> bool:
        """Apply one registry change; returns whether it concerned what this replica serves.

        * VERSION_CREATED: remember the version's artifact and signature (and serve it if the event
          names the served alias).
        * ALIAS_SET of the served alias: load that version and swap it in.
        * ALIAS_REMOVED of the served alias: stop serving the model.
        * VERSION_ARCHIVED: forget the version. Anything else is ignored.
        """
        if not self.wants(event.model_name):
            return False
        kind = event.kind
        if kind is ChangeKind.VERSION_CREATED:
            source = event.source
            if source is not None:
                self._remember(source)
            if event.alias == self.alias and source is not None:
                await self.serve(source)
                return True
            return False
        if kind is ChangeKind.VERSION_ARCHIVED:
            self._catalog.pop((event.model_name, event.version), None)
            return False
        if event.alias != self.alias:
            return False
        if kind is ChangeKind.ALIAS_SET:
            source = event.source or self._catalog.get((event.model_name, event.version))
            if source is None and self.lookup is not None:
                source = await self.lookup(event.model_name, event.version)
            if source is None:
                log.error("alias %s of %s moved to v%d, but neither the event nor the registry says where its "
                          "artifact is; keeping what is served", self.alias, event.model_name, event.version)
                metrics.MODEL_LOADS.labels(event.model_name, "no_artifact").inc()
                return True
            await self.serve(source)
            return True
        if kind is ChangeKind.ALIAS_REMOVED:
            await self.unload(event.model_name, why=f"alias {self.alias!r} was removed")
            return True
        return False

    async def sync(self, snapshot: Mapping[str, ModelSource | None], *, complete: bool) -> None:
        """Make the served models match the registry's state.

        Args:
            snapshot: model name -> the version the alias points at (None: the model has no such alias).
            complete: the snapshot lists every model that has the alias, so served models missing
                from it lost the alias and are unloaded.
        """
        for name, source in snapshot.items():
            if not self.wants(name):
                continue
            if source is None:
                await self.unload(name, why=f"the registry has no alias {self.alias!r} for it")
            else:
                self._remember(source)
                await self.serve(source)
        if complete:
            for model in self.repository.models():
                if model.name not in snapshot:
                    await self.unload(model.name, why=f"the registry has no alias {self.alias!r} for it")

    async def serve(self, source: ModelSource) -> bool:
        """Load ``source`` and swap it in; True when it is (now or already) served.

        Never raises for a bad version: the refusal is logged and counted and the old version stays.
        """
        async with self._lock:
            current = self.repository.get(source.name)
            if current is not None and current.version == source.version and current.source.sha256 == source.sha256:
                return True
            try:
                model = await self._load_with_retries(source)
            except ModelLoadError as exc:
                self.stats.refused[exc.reason] = self.stats.refused.get(exc.reason, 0) + 1
                metrics.MODEL_LOADS.labels(source.name, exc.reason).inc()
                keeping = f"keeping v{current.version}" if current is not None else "nothing served for it"
                log.error("refusing %s v%d (%s): %s; %s", source.name, source.version, exc.reason, exc, keeping,
                          extra={"model": source.name, "version": source.version, "reason": exc.reason})
                return False
            previous = self.repository.put(model)
            self.stats.loaded += 1
            metrics.MODEL_LOADS.labels(source.name, "loaded").inc()
            metrics.SERVED_VERSION.labels(source.name, self.alias).set(source.version)
            log.info("serving %s v%d as %r on %s%s%s", source.name, source.version, self.alias, model.runtime,
                     f" ({model.runtime_note})" if model.runtime_note else "",
                     f", was v{previous.version}" if previous is not None else "",
                     extra={"model": source.name, "version": source.version, "runtime": model.runtime,
                            "previous_version": previous.version if previous is not None else 0})
            return True

    async def unload(self, name: str, *, why: str) -> None:
        """Stop serving ``name`` (requests get NOT_FOUND from now on)."""
        async with self._lock:
            removed = self.repository.remove(name)
            if removed is not None:
                self.stats.unloaded += 1
                metrics.SERVED_VERSION.labels(name, self.alias).set(0)
                log.warning("stopped serving %s v%d: %s", name, removed.version, why)

    async def _load_with_retries(self, source: ModelSource) -> Runtime:
        delay = self.retry_delay_s
        for attempt in range(1, self.load_attempts + 1):
            try:
                # Loading reads a file, deserialises and predicts once: keep it off the event loop
                # so requests go on being answered by the current version meanwhile.
                return await asyncio.to_thread(self.loader, source)
            except ModelLoadError as exc:
                if not exc.retryable or attempt == self.load_attempts:
                    raise
                log.warning("loading %s v%d failed (attempt %d/%d), retrying in %.1fs: %s", source.name,
                            source.version, attempt, self.load_attempts, delay, exc)
                await asyncio.sleep(delay)
                delay *= 2
            except Exception as exc:  # an unexpected failure must not leave a half-loaded model
                raise ModelLoadError("failed", f"{source.name} v{source.version}: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    def _remember(self, source: ModelSource) -> None:
        key = (source.name, source.version)
        self._catalog[key] = source
        self._catalog.move_to_end(key)
        while len(self._catalog) > self.CATALOG_SIZE:
            self._catalog.popitem(last=False)


class AliasManagers:
    """The managers of every alias serving follows (the served alias first, then the challenger),
    driven together by one registry follower.

    A snapshot for it maps alias -> (model -> the version that alias points at).
    """

    def __init__(self, managers: Sequence[ModelManager]) -> None:
        self.managers = tuple(managers)

    @property
    def alias(self) -> str:
        """The served alias (the first manager's)."""
        return self.managers[0].alias

    async def apply(self, event: RegistryChange) -> bool:
        """Apply ``event`` to every manager; whether any of them acted on it."""
        applied = False
        for manager in self.managers:
            applied = await manager.apply(event) or applied
        return applied

    async def sync(self, snapshot: Mapping[str, Mapping[str, ModelSource | None]], *, complete: bool) -> None:
        """Sync each manager with its alias's part of ``snapshot``."""
        for manager in self.managers:
            if manager.alias in snapshot:
                await manager.sync(snapshot[manager.alias], complete=complete)
