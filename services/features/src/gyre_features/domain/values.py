"""Feature values: the four value types and the Python type a value has."""

from __future__ import annotations

import enum

Scalar = float | int | str | bool
"""A feature value: float (FLOAT), int (INT), str (STRING) or bool (BOOL)."""


class ValueType(enum.StrEnum):
    """The type of a feature's values."""

    FLOAT = "float"
    INT = "int"
    STRING = "string"
    BOOL = "bool"

    @property
    def numeric(self) -> bool:
        """Whether profiles compute mean/std/min/max (FLOAT, INT) rather than top categories."""
        return self in (ValueType.FLOAT, ValueType.INT)
