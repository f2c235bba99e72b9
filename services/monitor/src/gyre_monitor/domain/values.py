"""How raw feature values become the arrays the drift tests compare.

Served inputs arrive as JSON-like scalars (``float``, ``int``, ``str``, ``bool`` or ``None``), the
reference as whatever the training set held. Both sides go through the same two conversions, so a
category seen as ``3`` in training and ``3.0`` at serving time is the same category:

* numerical: ``float64``; missing, non-finite and non-numeric values are dropped (Evidently replaces
  ``±inf`` with NaN and drops NaN before testing);
* categorical: a canonical string key; booleans are ``"true"``/``"false"``, integral numbers their
  decimal digits (``3``, ``3.0`` -> ``"3"``), other floats their shortest round-trip repr, strings
  themselves; missing values are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
KeyArray = npt.NDArray[np.str_]


def category_key(value: object) -> str | None:
    """Canonical category key of one value, or None when the value is missing (None/NaN)."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return None
        if math.isfinite(number) and number.is_integer():
            return str(int(number))
        return repr(number)
    return str(value)


def category_keys(values: Iterable[object]) -> KeyArray:
    """Canonical keys of ``values``, missing ones dropped."""
    keys = [key for key in map(category_key, values) if key is not None]
    return np.asarray(keys, dtype=np.str_) if keys else np.empty(0, dtype=np.str_)


def _as_float(value: object) -> float:
    if value is None or isinstance(value, str):
        # Strings are not numbers here: a numerical feature sent as text counts as missing rather
        # than being parsed, so a serving bug shows up as missing values, not as silent coercion.
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def finite_floats(values: Iterable[object] | npt.ArrayLike) -> FloatArray:
    """``values`` as float64 with missing and non-finite entries dropped."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        array = values.astype(np.float64, copy=False)
    else:
        array = np.fromiter((_as_float(v) for v in values), dtype=np.float64)  # type: ignore[union-attr]
    return array[np.isfinite(array)]
