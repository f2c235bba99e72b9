"""Feature views: a named, typed schema of one entity's features, with a TTL, and its names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gyre_features.domain.errors import Conflict, InvalidArgument, NotFound
from gyre_features.domain.values import MAX_TEXT_BYTES, MAX_VECTOR_DIMENSION, ValueType

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_FEATURES_PER_VIEW = 1000


def check_name(kind: str, name: str) -> str:
    """``name`` if it is a valid view/entity/feature name (``[a-z][a-z0-9_]*``, at most 64 chars).

    Raises:
        InvalidArgument: otherwise, naming ``kind`` ("feature view", "feature", ...).
    """
    if not _NAME.match(name or ""):
        raise InvalidArgument(
            f"{kind} name {name!r} is invalid: use lowercase letters, digits and _, start with a letter, "
            "at most 64 characters"
        )
    return name


@dataclass(frozen=True)
class FeatureSpec:
    """One feature of a view.

    Attributes:
        name: feature name, unique within the view.
        type: the type every value must have.
        description: free text for humans.
        dimension: FLOAT_VECTOR only (required): elements of every value, 1 to
            :data:`MAX_VECTOR_DIMENSION`; 0 for every other type.
        max_text_bytes: TEXT only: the longest value in UTF-8 bytes, 1 to :data:`MAX_TEXT_BYTES`;
            0 means :data:`MAX_TEXT_BYTES`. 0 for every other type.
    """

    name: str
    type: ValueType
    description: str = ""
    dimension: int = 0
    max_text_bytes: int = 0

    @property
    def text_limit_bytes(self) -> int:
        """The longest TEXT value this feature accepts, in UTF-8 bytes."""
        return self.max_text_bytes or MAX_TEXT_BYTES

    def check(self, view: str) -> None:
        """Check the type's parameters.

        Raises:
            InvalidArgument: a FLOAT_VECTOR without a dimension in range, a TEXT limit out of
                range, or either parameter set on a type that has none.
        """
        where = f"feature {self.name!r} of view {view!r}"
        if self.type == ValueType.FLOAT_VECTOR:
            if not 1 <= self.dimension <= MAX_VECTOR_DIMENSION:
                raise InvalidArgument(f"{where} is a float_vector: its dimension must be 1 to "
                                      f"{MAX_VECTOR_DIMENSION}, got {self.dimension}")
        elif self.dimension:
            raise InvalidArgument(f"{where} is {self.type.value}: only float_vector features take a dimension")
        if self.type == ValueType.TEXT:
            if not 0 <= self.max_text_bytes <= MAX_TEXT_BYTES:
                raise InvalidArgument(f"{where} is text: max_text_bytes must be 1 to {MAX_TEXT_BYTES} "
                                      f"(0 = {MAX_TEXT_BYTES}), got {self.max_text_bytes}")
        elif self.max_text_bytes:
            raise InvalidArgument(f"{where} is {self.type.value}: only text features take max_text_bytes")


@dataclass(frozen=True)
class FeatureView:
    """A named, typed group of features of one entity, with a time-to-live.

    Attributes:
        name: unique name, e.g. ``customer_stats``.
        entity: name of the entity key, e.g. ``customer_id`` (events carry its value as entity_id).
        features: the schema, in declaration order (training-set columns follow it).
        ttl_seconds: how long a value stays valid after its event_time, in seconds; 0 = forever.
        description, owner, tags: metadata for humans and the dashboard.
        created_at, updated_at: when the view was first registered and last changed (UTC); set
            by the store.
    """

    name: str
    entity: str
    features: tuple[FeatureSpec, ...]
    ttl_seconds: int = 0
    description: str = ""
    owner: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        check_name("feature view", self.name)
        check_name("entity", self.entity)
        if not self.features:
            raise InvalidArgument(f"feature view {self.name!r} needs at least one feature")
        if len(self.features) > MAX_FEATURES_PER_VIEW:
            raise InvalidArgument(f"feature view {self.name!r} has more than {MAX_FEATURES_PER_VIEW} features")
        seen: set[str] = set()
        for spec in self.features:
            check_name("feature", spec.name)
            spec.check(self.name)
            if spec.name in seen:
                raise InvalidArgument(f"feature {spec.name!r} appears twice in view {self.name!r}")
            seen.add(spec.name)
        if self.ttl_seconds < 0:
            raise InvalidArgument(f"ttl_seconds must be >= 0 (0 = no expiry), got {self.ttl_seconds}")

    @property
    def ttl(self) -> timedelta | None:
        """The TTL as a timedelta, or None when values never expire."""
        return timedelta(seconds=self.ttl_seconds) if self.ttl_seconds > 0 else None

    @property
    def feature_names(self) -> list[str]:
        return [spec.name for spec in self.features]

    def feature(self, name: str) -> FeatureSpec:
        """The spec of feature ``name``.

        Raises:
            NotFound: the view has no such feature.
        """
        for spec in self.features:
            if spec.name == name:
                return spec
        raise NotFound(f"feature view {self.name!r} has no feature {name!r} (it has {', '.join(self.feature_names)})")

    def check_update(self, new: FeatureView) -> None:
        """Check that ``new`` may replace this view: same entity, every feature kept with its type.

        Adding features and changing TTL, metadata or a text feature's max_text_bytes is allowed.
        Removing a feature or changing its type or a vector's dimension is not: stored values and
        trained models depend on it (register a new view).

        Raises:
            Conflict: the entity would change, or a feature would be removed or change type or dimension.
        """
        if new.entity != self.entity:
            raise Conflict(f"feature view {self.name!r} is keyed by {self.entity!r}; cannot re-key it to "
                           f"{new.entity!r} (register a new view instead)")
        new_types = {spec.name: spec.type for spec in new.features}
        for spec in self.features:
            if spec.name not in new_types:
                raise Conflict(f"feature {spec.name!r} of view {self.name!r} cannot be removed "
                               "(register a new view instead)")
        old_specs = {spec.name: spec for spec in self.features}
        for spec in new.features:
            old = old_specs.get(spec.name)
            if old is not None and old.type != spec.type:
                raise Conflict(f"feature {spec.name!r} of view {self.name!r} is {old.type.value}; cannot change it to "
                               f"{spec.type.value} (add a feature with a new name instead)")
            if old is not None and old.dimension != spec.dimension:
                raise Conflict(f"feature {spec.name!r} of view {self.name!r} has dimension {old.dimension}; cannot "
                               f"change it to {spec.dimension} (add a feature with a new name instead)")

    def is_outside_ttl(self, event_time: datetime, as_of: datetime) -> bool:
        """Whether a value with ``event_time`` has expired at ``as_of`` (both UTC).

        A value is valid while ``as_of - ttl <= event_time`` (both ends inclusive, like Feast).
        """
        ttl = self.ttl
        return ttl is not None and event_time < as_of - ttl
