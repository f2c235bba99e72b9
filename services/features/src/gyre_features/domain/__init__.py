"""The feature store's domain: feature views, validated feature rows, online statuses, profiles.

Pure logic, no I/O and no transport types (neither grpc, fastapi, asyncpg nor gyre_contracts).
Every timestamp is an aware ``datetime`` in UTC.

Semantics (docs/services/features.md says the same for users):

* A **feature view** names an entity key (``entity``, e.g. ``customer_id``), a typed schema of
  features and a TTL: a value older than the TTL, relative to the time it is asked for, counts as
  absent (0 seconds means values never expire).
* A **feature event** carries values of *some* features of one entity at one ``event_time``;
  features it does not name keep their earlier values (partial updates). A value without a kind
  is an explicit "missing" (null) that overwrites earlier values.
* The state of an entity **as of** a time ``t`` merges, in ``(event_time, created_time)`` order,
  every event with ``t - ttl <= event_time <= t`` (no TTL: every event up to ``t``). The
  online store is that state as of "now"; a training row at ``t`` is that state as of ``t``.

Modules, one reason to change each:

* ``values``: the value types (:class:`ValueType`) and :data:`Scalar`.
* ``views``: feature views, their names and how a view may evolve.
* ``events``: validating a raw feature event into a :class:`FeatureRow`; folding rows of one key.
* ``online``: online statuses, the latest value of a feature, how rows update an entity's state.
* ``training``: training-set queries, columns, schemas and chunks.
* ``fingerprint``: the SHA-256 of a training set.
* ``profiles``: dataset profiles.
* ``timestamps``: exact datetime <-> Unix microseconds.
* ``errors``: the domain errors (each a :mod:`gyre_common.errors` class).
"""
