"""Model signatures: the inputs a model version takes and the outputs it returns.

Two input layouts are supported, decided from the signature:

* **columns**: one input per feature, each of shape ``[-1]`` (or ``[-1, 1]``), e.g. the trainer's
  signatures. A request may send those inputs by name, or one 2-D input ``[batch, n_features]``
  holding the features in signature order (convenient for array clients).
* **matrix**: a single input of shape ``[-1, n_features]``; the request sends that input by name.

Outputs: a rank-1 output (``[-1]``) is the model's ``predict``; a rank-2 output
(``[-1, n_classes]``) is ``predict_proba``, its columns in ``classes_`` order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from gyre_serving.domain.errors import InvalidRequestError
from gyre_serving.domain.tensors import Tensor, numpy_dtype

PREDICT_OUTPUT = "predict"
"""Output name of the predicted label or value when the signature names none."""
PROBA_OUTPUT = "proba"
"""Output name of the class probabilities when the signature names none."""
MATRIX_INPUT = "input-0"
"""Input name of a model without a signature and without feature names."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, OIP datatype and shape (-1 = variable, usually the batch) of one input or output."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        """``name (FP64 [-1, 30])`` for error messages."""
        return f"{self.name!r} ({self.datatype} {list(self.shape)})"


class InputLayout(StrEnum):
    """How a model's features arrive (see the module docstring)."""

    COLUMNS = "columns"
    MATRIX = "matrix"


class OutputKind(StrEnum):
    """What an output holds."""

    PREDICT = "predict"
    PROBA = "proba"


@dataclass(frozen=True, slots=True)
class Signature:
    """A model version's inputs (in model order) and outputs."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def layout(self) -> InputLayout:
        """MATRIX for one input of rank 2 whose second dimension is not 1, else COLUMNS."""
        if len(self.inputs) == 1 and len(self.inputs[0].shape) == 2 and self.inputs[0].shape[1] != 1:
            return InputLayout.MATRIX
        return InputLayout.COLUMNS

    def output(self, name: str) -> TensorSpec | None:
        """The output called ``name``, if any."""
        return next((spec for spec in self.outputs if spec.name == name), None)


def output_kind(spec: TensorSpec) -> OutputKind:
    """PROBA for a rank-2 output with more than one column, else PREDICT."""
    if len(spec.shape) >= 2 and spec.shape[1] != 1:
        return OutputKind.PROBA
    return OutputKind.PREDICT


def validate_signature(signature: Signature) -> None:
    """Check a signature is one serving can honour.

    Raises:
        ValueError: no inputs, unknown datatypes, duplicate names, a matrix input without a fixed
            width, or outputs of rank above 2.
    """
    if not signature.inputs:
        raise ValueError("the signature has no inputs")
    for group in (signature.inputs, signature.outputs):
        names = [spec.name for spec in group]
        if len(set(names)) != len(names) or any(not n for n in names):
            raise ValueError(f"signature names must be unique and non-empty: {names}")
    for spec in (*signature.inputs, *signature.outputs):
        try:
            numpy_dtype(spec.datatype)
        except InvalidRequestError as exc:
            raise ValueError(f"signature tensor {spec.name!r}: {exc}") from None
    if signature.layout is InputLayout.MATRIX and signature.inputs[0].shape[1] < 0:
        raise ValueError(f"matrix input {signature.inputs[0].describe()} needs a fixed number of features")
    for spec in signature.outputs:
        if len(spec.shape) > 2 or not spec.shape:
            raise ValueError(f"output {spec.describe()}: expected [-1] (predict) or [-1, n_classes] (proba)")


# May a request tensor of datatype X feed a signature input of datatype Y? Numeric types widen
# safely (numpy's "safe" casting, e.g. INT32 -> FP64, FP32 -> FP64); nothing narrows (FP64 -> FP32
# or FP -> INT would silently change values), and BOOL/BYTES only feed themselves.
def accepts(expected: str, given: str) -> bool:
    """Whether a ``given`` request datatype may feed an input declared ``expected``."""
    if expected == given:
        return True
    if "BOOL" in (expected, given) or "BYTES" in (expected, given):
        return False
    return bool(np.can_cast(numpy_dtype(given), numpy_dtype(expected), casting="safe"))


@dataclass(frozen=True, slots=True)
class FeatureBatch:
    """The features of a request, one column per feature in signature order.

    Attributes:
        names: feature names (column input names, or ``<input>_<j>`` for a matrix input without
            feature names).
        columns: one 1-D array of length ``rows`` per feature (matrix layout: views of ``matrix``).
        rows: batch size.
        matrix: the 2-D ``[rows, n_features]`` array when the request sent one, else None.
    """

    names: tuple[str, ...]
    columns: tuple[np.ndarray[Any, Any], ...]
    rows: int
    matrix: np.ndarray[Any, Any] | None = None

    def as_matrix(self) -> np.ndarray[Any, Any]:
        """``[rows, n_features]``, stacking the columns when needed."""
        if self.matrix is not None:
            return self.matrix
        if not self.columns:
            return np.empty((self.rows, 0))
        return np.column_stack(self.columns)


def assemble_features(signature: Signature, inputs: Sequence[Tensor], feature_names: Sequence[str] | None = None,
                      ) -> FeatureBatch:
    """Check request inputs against the signature and arrange them as a :class:`FeatureBatch`.

    Args:
        signature: the model's signature.
        inputs: the decoded request inputs.
        feature_names: names of a matrix input's columns (e.g. the model's ``feature_names_in_``);
            ``<input>_<j>`` when None.

    Raises:
        InvalidRequestError: unknown, missing or duplicated inputs; a datatype the input does not
            accept; a shape that is not ``[batch]`` / ``[batch, 1]`` (columns) or
            ``[batch, n_features]`` (matrix); inputs of different batch sizes. The message names
            what was expected.
    """
    if not inputs:
        raise InvalidRequestError(f"the request has no inputs; expected {_expected_inputs(signature)}")
    given = [tensor.name for tensor in inputs]
    if len(set(given)) != len(given):
        raise InvalidRequestError(f"input names must be unique, got {given}")
    if signature.layout is InputLayout.MATRIX:
        spec = signature.inputs[0]
        if given != [spec.name]:
            raise InvalidRequestError(f"expected exactly one input {spec.describe()}, got {given}")
        return _matrix_batch(spec, spec.shape[1], inputs[0], feature_names)
    by_name = {spec.name: spec for spec in signature.inputs}
    if len(inputs) == 1 and inputs[0].name not in by_name and len(inputs[0].shape) == 2 and len(by_name) > 1:
        return _matrix_for_columns(signature, inputs[0])
    unknown = [name for name in given if name not in by_name]
    if unknown:
        raise InvalidRequestError(f"unknown input(s) {unknown}; expected {_expected_inputs(signature)}")
    missing = [spec for spec in signature.inputs if spec.name not in given]
    if missing:
        raise InvalidRequestError("missing input(s) " + ", ".join(spec.describe() for spec in missing))
    tensors = {tensor.name: tensor for tensor in inputs}
    columns: list[np.ndarray[Any, Any]] = []
    rows: int | None = None
    for spec in signature.inputs:
        tensor = tensors[spec.name]
        _check_datatype(spec, tensor)
        shape = tensor.shape
        if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
            column = tensor.data.reshape(-1)
        else:
            raise InvalidRequestError(
                f"input {spec.name!r} has shape {list(shape)}; expected [batch] or [batch, 1] (one value per row)"
            )
        if rows is None:
            rows = column.shape[0]
        elif column.shape[0] != rows:
            raise InvalidRequestError(
                f"input {spec.name!r} has {column.shape[0]} rows but {signature.inputs[0].name!r} has {rows}; "
                "every input needs one value per row"
            )
        columns.append(_widen(column, spec.datatype))
    return FeatureBatch(tuple(spec.name for spec in signature.inputs), tuple(columns), rows or 0)


def _expected_inputs(signature: Signature) -> str:
    if signature.layout is InputLayout.MATRIX:
        return signature.inputs[0].describe()
    described = ", ".join(spec.describe() for spec in signature.inputs)
    return f"{described} (or one [batch, {len(signature.inputs)}] input with the features in this order)"


def _check_datatype(spec: TensorSpec, tensor: Tensor) -> None:
    if not accepts(spec.datatype, tensor.datatype):
        raise InvalidRequestError(
            f"input {spec.name!r} is {tensor.datatype}; expected {spec.datatype}"
            + (" (or a type that widens to it without loss)" if spec.datatype not in ("BOOL", "BYTES") else "")
        )


def _widen(data: np.ndarray[Any, Any], datatype: str) -> np.ndarray[Any, Any]:
    dtype = numpy_dtype(datatype)
    return data if data.dtype == dtype else data.astype(dtype)


def _matrix_batch(spec: TensorSpec, width: int, tensor: Tensor, feature_names: Sequence[str] | None,
                  ) -> FeatureBatch:
    _check_datatype(spec, tensor)
    shape = tensor.shape
    if len(shape) != 2 or shape[1] != width:
        raise InvalidRequestError(
            f"input {spec.name!r} has shape {list(shape)}; expected [batch, {width}] ({spec.datatype})"
        )
    matrix = _widen(tensor.data, spec.datatype)
    names = tuple(feature_names) if feature_names is not None and len(feature_names) == width else tuple(
        f"{spec.name}_{j}" for j in range(width))
    return FeatureBatch(names, tuple(matrix[:, j] for j in range(width)), shape[0], matrix)


def _matrix_for_columns(signature: Signature, tensor: Tensor) -> FeatureBatch:
    width = len(signature.inputs)
    shape = tensor.shape
    if shape[1] != width:
        raise InvalidRequestError(
            f"input {tensor.name!r} has shape {list(shape)}; a single 2-D input needs [batch, {width}] "
            f"(features {[spec.name for spec in signature.inputs]}); or send {_expected_inputs(signature)}"
        )
    datatypes = {spec.datatype for spec in signature.inputs}
    for spec in signature.inputs:
        _check_datatype(spec, tensor)
    names = tuple(spec.name for spec in signature.inputs)
    if len(datatypes) == 1:
        matrix = _widen(tensor.data, next(iter(datatypes)))
        return FeatureBatch(names, tuple(matrix[:, j] for j in range(width)), shape[0], matrix)
    columns = tuple(_widen(tensor.data[:, j], spec.datatype) for j, spec in enumerate(signature.inputs))
    return FeatureBatch(names, columns, shape[0])


def dummy_inputs(signature: Signature, rows: int = 1) -> list[Tensor]:
    """Request inputs of ``rows`` rows built from the signature alone (zeros, ``False``, ``b""``), to warm
    a freshly loaded model up before it takes traffic."""
    tensors = []
    for spec in signature.inputs:
        shape = tuple(rows if i == 0 else max(d, 1) for i, d in enumerate(spec.shape))
        dtype = numpy_dtype(spec.datatype)
        if spec.datatype == "BYTES":
            data = np.full(math.prod(shape), b"", dtype=object).reshape(shape)
        else:
            data = np.zeros(shape, dtype=dtype)
        tensors.append(Tensor(spec.name, spec.datatype, data))
    return tensors
