"""Feature values: the value types (:class:`ValueType`), :data:`Scalar` and :class:`FloatVector`."""

from __future__ import annotations

import base64
import enum
import math
import sys
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_VECTOR_DIMENSION = 16_384
"""Most elements a FLOAT_VECTOR feature may declare (64 KiB of float32 per value)."""
MAX_TEXT_BYTES = 65_536
"""Longest TEXT value, in UTF-8 bytes (64 KiB); a view may set a lower limit."""

Scalar = float | int | str | bool
"""A scalar feature value: float (FLOAT), int (INT), str (STRING, TEXT) or bool (BOOL)."""


class VectorError(ValueError):
    """A float vector with a non-finite element (or one too large for float32)."""


@dataclass(frozen=True, slots=True)
class FloatVector:
    """A FLOAT_VECTOR value: finite floats rounded to IEEE 754 single precision (float32).

    Single precision is what the contract carries (``FloatVector.values`` is ``repeated float``),
    so a value reads back exactly as stored, online and offline. Build one with :meth:`of`.

    Attributes:
        values: the elements (Python floats holding float32 values).
    """

    values: tuple[float, ...]

    @classmethod
    def of(cls, numbers: Iterable[float]) -> FloatVector:
        """The vector of ``numbers``, rounded to float32.

        Raises:
            VectorError: an element is NaN or infinite, or overflows float32 (above ~3.4e38).
            TypeError: an element is not a number.
        """
        packed = array("f", numbers)
        values = tuple(packed)
        if not all(map(math.isfinite, values)):
            bad = next(v for v in values if not math.isfinite(v))
            raise VectorError(f"element {bad!r} is not a finite float32")
        return cls(values)

    def __len__(self) -> int:
        return len(self.values)

    def to_bytes(self) -> bytes:
        """The elements as little-endian float32, 4 bytes each."""
        packed = array("f", self.values)
        if sys.byteorder == "big":
            packed.byteswap()
        return packed.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> FloatVector:
        """The inverse of :meth:`to_bytes` (the stored bytes were checked when written)."""
        packed = array("f")
        packed.frombytes(data)
        if sys.byteorder == "big":
            packed.byteswap()
        return cls(tuple(packed))

    def norm(self) -> float:
        """The Euclidean (L2) norm."""
        return math.hypot(*self.values)


Value = Scalar | FloatVector
"""Any feature value."""


_VECTOR_KEY = "f32"
_NORM_KEY = "n"


def vector_to_json(vector: FloatVector) -> dict[str, Any]:
    """How the stores keep a vector inside a JSON document: ``{"f32": base64, "n": L2 norm}``.

    ``f32`` is the base64 of the little-endian float32 elements. A JSON array of numbers would take
    about 16 bytes per element in JSONB (a numeric each) and cost a float-to-text conversion per
    element; this takes 5.3 bytes per element and one C call each way. ``n`` lets profiles
    summarise vectors in SQL. No other value type is a JSON object, so the form is unambiguous.
    """
    return {_VECTOR_KEY: base64.b64encode(vector.to_bytes()).decode("ascii"), _NORM_KEY: vector.norm()}


def vector_from_json(stored: Mapping[str, Any]) -> FloatVector:
    """The inverse of :func:`vector_to_json`."""
    return FloatVector.from_bytes(base64.b64decode(stored[_VECTOR_KEY]))


def stored_value(raw: Any) -> Value | None:
    """A value read back from a stored JSON document (vectors come back as :class:`FloatVector`)."""
    return vector_from_json(raw) if isinstance(raw, dict) else raw


class ValueType(enum.StrEnum):
    """The type of a feature's values."""

    FLOAT = "float"
    INT = "int"
    STRING = "string"
    BOOL = "bool"
    TEXT = "text"
    """Free text (UTF-8), at most :data:`MAX_TEXT_BYTES` bytes or the view's lower limit."""
    FLOAT_VECTOR = "float_vector"
    """A :class:`FloatVector` of the feature's declared dimension."""

    @property
    def numeric(self) -> bool:
        """Whether profiles compute mean/std/min/max (FLOAT, INT) of the values themselves."""
        return self in (ValueType.FLOAT, ValueType.INT)

    @property
    def categorical(self) -> bool:
        """Whether profiles count distinct values and the most frequent ones (STRING, BOOL)."""
        return self in (ValueType.STRING, ValueType.BOOL)
