"""The fingerprint of a training set: a SHA-256 that does not depend on how rows were chunked."""

from __future__ import annotations

import hashlib
import sys
from array import array
from typing import Any

from gyre_features.domain.timestamps import unix_us
from gyre_features.domain.training import TrainingSetChunk, TrainingSetSchema
from gyre_features.domain.values import ValueType
from gyre_features.domain.views import FeatureSpec


class TrainingSetFingerprint:
    """SHA-256 of a training set, independent of how its rows were chunked.

    Every column (``entity_id``, ``event_time``, the features in order, the label) is hashed as two
    byte streams over all rows: its values and its presence flags (one byte per row, 1 = present).
    Values: strings (entity ids, STRING, TEXT) as a 4-byte little-endian length then UTF-8; event
    times as int64 microseconds since the Unix epoch (UTC); FLOAT as IEEE 754 float64; INT as
    int64; BOOL as one byte; FLOAT_VECTOR as its ``dimension`` IEEE 754 float32 elements;
    little-endian; a missing value as 0 / "" / false / ``dimension`` zeros. The fingerprint is the
    SHA-256 of, per column in order: its name and type (``name:type\n``, UTF-8; a vector's type is
    ``float_vector[<dimension>]``), then the SHA-256 digests of its value and presence streams.
    """

    def __init__(self, schema: TrainingSetSchema) -> None:
        self._columns: list[tuple[str, str]] = [("entity_id", "string"), ("event_time", "timestamp_us")]
        self._columns += [(spec.name, _type_name(spec)) for spec in (*schema.features, schema.label)]
        self._values = [hashlib.sha256() for _ in self._columns]
        self._present = [hashlib.sha256() for _ in self._columns]
        self.rows = 0

    def update(self, chunk: TrainingSetChunk) -> None:
        """Add the rows of ``chunk``."""
        streams: list[list[Any]] = [chunk.entity_ids, [unix_us(t) for t in chunk.event_times],
                                    *chunk.columns, chunk.label]
        for i, ((_, kind), values) in enumerate(zip(self._columns, streams, strict=True)):
            self._present[i].update(bytes(v is not None for v in values))
            self._values[i].update(_encode_values(kind, values))
        self.rows += len(chunk)

    def hexdigest(self) -> str:
        """Lowercase hex digest of the rows so far."""
        digest = hashlib.sha256()
        for (name, kind), values, present in zip(self._columns, self._values, self._present, strict=True):
            digest.update(f"{name}:{kind}\n".encode())
            digest.update(values.digest())
            digest.update(present.digest())
        return digest.hexdigest()


def _type_name(spec: FeatureSpec) -> str:
    if spec.type == ValueType.FLOAT_VECTOR:
        return f"{spec.type.value}[{spec.dimension}]"
    return spec.type.value


def _little_endian(numbers: array[Any]) -> bytes:
    if sys.byteorder == "big":
        numbers.byteswap()
    return numbers.tobytes()


def _encode_values(kind: str, values: list[Any]) -> bytes:
    if kind == ValueType.FLOAT:
        return _little_endian(array("d", [0.0 if v is None else v for v in values]))
    if kind in (ValueType.INT, "timestamp_us"):
        return _little_endian(array("q", [0 if v is None else v for v in values]))
    if kind == ValueType.BOOL:
        return bytes(bool(v) for v in values)
    if kind.startswith(ValueType.FLOAT_VECTOR.value + "["):
        zeros = bytes(4 * int(kind[len(ValueType.FLOAT_VECTOR.value) + 1:-1]))
        return b"".join(zeros if v is None else v.to_bytes() for v in values)
    parts = []
    for v in values:
        data = b"" if v is None else str(v).encode("utf-8")
        parts.append(len(data).to_bytes(4, "little"))
        parts.append(data)
    return b"".join(parts)
