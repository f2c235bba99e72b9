"""Open Inference Protocol tensors as numpy arrays: datatypes, shapes, and the raw and typed wire forms.

A :class:`Tensor` is what every transport decodes into and encodes from. The wire forms are:

* **raw**: the flattened, row-major, little-endian elements without padding; ``BYTES`` elements are
  each prefixed with their length as a 4-byte little-endian unsigned integer (gRPC
  ``raw_input_contents`` / ``raw_output_contents``);
* **values**: a flat (or, from JSON, nested) sequence of Python scalars (gRPC typed ``contents``,
  REST ``data``).

Every decoding error is an :class:`InvalidRequestError` whose message names the tensor and says
what was expected.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gyre_serving.domain.errors import InvalidRequestError

# OIP datatype -> numpy dtype (little-endian, as on the wire). BYTES elements are Python bytes in
# an object array.
_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

DATATYPES: tuple[str, ...] = tuple(_DTYPES)
"""Every OIP datatype Gyre decodes and encodes."""

_LENGTH = struct.Struct("<I")


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of an OIP datatype (object for BYTES).

    Raises:
        InvalidRequestError: not an OIP datatype.
    """
    try:
        return _DTYPES[datatype]
    except KeyError:
        raise InvalidRequestError(
            f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        ) from None


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The OIP datatype of a numpy dtype (object and string dtypes are BYTES).

    Raises:
        ValueError: no OIP datatype holds it (e.g. complex numbers).
    """
    if dtype.kind in "OUS":
        return "BYTES"
    for name, candidate in _DTYPES.items():
        if candidate.kind == dtype.kind and candidate.itemsize == dtype.itemsize and name != "BYTES":
            return name
    raise ValueError(f"no Open Inference Protocol datatype for numpy dtype {dtype}")


@dataclass(frozen=True, slots=True)
class Tensor:
    """A named tensor.

    Attributes:
        name: tensor name (an input, output or feature name).
        datatype: OIP datatype (see :data:`DATATYPES`).
        data: the elements, with the tensor's shape; dtype as :func:`numpy_dtype` gives.
    """

    name: str
    datatype: str
    data: np.ndarray[Any, Any]

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape; every dimension is known (no -1)."""
        return tuple(int(d) for d in self.data.shape)


MAX_DIMENSIONS = 32
"""Most dimensions a request tensor may have (numpy's own limit is 64; no model here takes more)."""

DEFAULT_MAX_ELEMENTS = 1 << 24
"""Most elements one request tensor may hold unless the caller says otherwise (16,777,216: 128 MiB
of FP64; serving's setting ``max_tensor_elements`` overrides it)."""


def check_shape(name: str, shape: Sequence[int], max_elements: int = DEFAULT_MAX_ELEMENTS) -> tuple[int, ...]:
    """Validate a request tensor's shape before anything is allocated for it.

    The shape must have 1 to :data:`MAX_DIMENSIONS` dimensions, none negative, and describe at most
    ``max_elements`` elements. A zero dimension does not excuse the others: numpy refuses a shape
    whose other dimensions overflow (``[0, 2**62]``), so the product is taken with zeros counted as
    ones. Python integers never overflow, so the product is exact however large the dimensions.

    Args:
        max_elements: most elements allowed.

    Returns:
        The dimensions as Python ints.

    Raises:
        InvalidRequestError: an empty, too deep or negative shape, or too many elements.
    """
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise InvalidRequestError(f"input {name!r}: shape {list(shape)!r} must be a list of integers") from None
    if not dims:
        raise InvalidRequestError(f"input {name!r} has no shape; expected e.g. [batch, n_features] or [batch]")
    if len(dims) > MAX_DIMENSIONS:
        raise InvalidRequestError(f"input {name!r} has {len(dims)} dimensions; at most {MAX_DIMENSIONS}")
    if any(d < 0 for d in dims):
        raise InvalidRequestError(f"input {name!r} has shape {list(dims)}; every dimension must be >= 0")
    bound = math.prod(max(d, 1) for d in dims)
    if bound > max_elements:
        count = math.prod(dims)
        what = f"{count} elements" if count else "no elements but dimensions that multiply to " + str(bound)
        raise InvalidRequestError(f"input {name!r} has shape {list(dims)} ({what}); a tensor may hold at most "
                                  f"{max_elements} elements")
    return dims


def from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes, *,
             max_elements: int = DEFAULT_MAX_ELEMENTS) -> Tensor:
    """Decode raw little-endian bytes (see the module docstring) into a tensor of ``shape``.

    The shape is checked (:func:`check_shape`) and the byte count compared with it before any
    array is made.

    Raises:
        InvalidRequestError: unknown datatype, bad shape, more than ``max_elements`` elements, or a
            byte count that does not fit.
    """
    dims = check_shape(name, shape, max_elements)
    dtype = numpy_dtype(datatype)
    count = math.prod(dims)
    if datatype == "BYTES":
        items = _split_bytes(name, raw)
        if len(items) != count:
            raise InvalidRequestError(
                f"input {name!r}: raw contents hold {len(items)} BYTES elements, shape {list(dims)} needs {count}"
            )
        data = np.empty(count, dtype=object)
        data[:] = items
        return Tensor(name, datatype, data.reshape(dims))
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidRequestError(
            f"input {name!r}: raw contents have {len(raw)} bytes; {datatype} with shape {list(dims)} "
            f"needs {expected} ({count} x {dtype.itemsize})"
        )
    return Tensor(name, datatype, np.frombuffer(raw, dtype=dtype).reshape(dims))


def _split_bytes(name: str, raw: bytes) -> list[bytes]:
    items: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise InvalidRequestError(f"input {name!r}: raw BYTES contents end inside a 4-byte length prefix")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > end:
            raise InvalidRequestError(
                f"input {name!r}: raw BYTES element of {length} bytes runs past the end of the contents"
            )
        items.append(bytes(raw[offset:offset + length]))
        offset += length
    return items


# Which numpy kinds of incoming values each datatype accepts without losing information. Booleans
# are not numbers here and floats are not integers: a client sending them made a mistake.
_ACCEPTED_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf", "O": "USO"}


def from_values(name: str, datatype: str, shape: Sequence[int], values: Any, *,
                max_elements: int = DEFAULT_MAX_ELEMENTS) -> Tensor:
    """Build a tensor of ``shape`` from Python values: a flat sequence (gRPC typed contents) or
    nested lists (REST JSON ``data``). BYTES values may be ``bytes`` or ``str`` (UTF-8 encoded).

    The shape is checked (:func:`check_shape`) before the values are converted.

    Raises:
        InvalidRequestError: unknown datatype, bad shape, more than ``max_elements`` elements,
            element count or value types that do not match ``datatype`` (e.g. floats for INT64,
            strings for FP32, ragged nesting).
    """
    dims = check_shape(name, shape, max_elements)
    dtype = numpy_dtype(datatype)
    count = math.prod(dims)
    try:
        array = np.asarray(values, dtype=object if datatype == "BYTES" else None)
    except ValueError:
        raise InvalidRequestError(f"input {name!r}: data is ragged; expected {count} {datatype} values") from None
    if array.size != count:
        raise InvalidRequestError(
            f"input {name!r}: {array.size} values for shape {list(dims)}; expected {count} {datatype} values"
        )
    if count == 0:
        return Tensor(name, datatype, np.empty(dims, dtype=dtype))
    if datatype == "BYTES":
        flat = array.reshape(-1)
        out = np.empty(count, dtype=object)
        for i, item in enumerate(flat):
            if isinstance(item, str):
                out[i] = item.encode("utf-8")
            elif isinstance(item, bytes | bytearray):
                out[i] = bytes(item)
            else:
                raise InvalidRequestError(f"input {name!r}: BYTES values must be strings, got {type(item).__name__}")
        return Tensor(name, datatype, out.reshape(dims))
    if array.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
        raise InvalidRequestError(
            f"input {name!r}: values of type {_kind_name(array.dtype)} cannot be {datatype}; "
            f"send {_expected_values(datatype)}"
        )
    try:
        with np.errstate(over="raise"):
            # unsafe, then compared with the input: int64 JSON numbers into UINT8 are fine when they fit.
            converted = array.astype(dtype, casting="unsafe")
        if dtype.kind in "iu" and not np.array_equal(converted, array):
            raise OverflowError
    except (OverflowError, FloatingPointError, TypeError):
        raise InvalidRequestError(f"input {name!r}: a value is out of the range of {datatype}") from None
    return Tensor(name, datatype, converted.reshape(dims))


def _kind_name(dtype: np.dtype[Any]) -> str:
    return {"b": "bool", "i": "integer", "u": "integer", "f": "float", "U": "string", "S": "bytes"}.get(
        dtype.kind, str(dtype)
    )


def _expected_values(datatype: str) -> str:
    kind = _DTYPES[datatype].kind
    return {"b": "true/false values", "i": "integers", "u": "non-negative integers", "f": "numbers"}.get(
        kind, "strings"
    )


def to_raw(tensor: Tensor) -> bytes:
    """The raw wire form of a tensor (see the module docstring)."""
    if tensor.datatype == "BYTES":
        parts: list[bytes] = []
        for item in tensor.data.reshape(-1):
            value = item.encode("utf-8") if isinstance(item, str) else bytes(item)
            parts.append(_LENGTH.pack(len(value)))
            parts.append(value)
        return b"".join(parts)
    return np.ascontiguousarray(tensor.data, dtype=numpy_dtype(tensor.datatype)).tobytes()


def to_values(tensor: Tensor) -> list[Any]:
    """The elements as a flat list of Python scalars in row-major order (BYTES as ``bytes``)."""
    flat = tensor.data.reshape(-1)
    if tensor.datatype == "BYTES":
        return [item.encode("utf-8") if isinstance(item, str) else bytes(item) for item in flat]
    return list(flat.tolist())


def cast(tensor_name: str, data: np.ndarray[Any, Any], datatype: str) -> Tensor:
    """A tensor of ``datatype`` holding ``data`` (model outputs into their declared datatype).

    Raises:
        ValueError: the values do not convert (e.g. string labels declared INT64).
    """
    dtype = numpy_dtype(datatype)
    if datatype == "BYTES":
        out = np.empty(data.shape, dtype=object)
        out.reshape(-1)[:] = [item if isinstance(item, bytes) else str(item).encode("utf-8")
                              for item in data.reshape(-1)]
        return Tensor(tensor_name, datatype, out)
    return Tensor(tensor_name, datatype, np.asarray(data).astype(dtype))
