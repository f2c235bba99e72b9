"""Open Inference Protocol gRPC messages <-> serving's transport-neutral requests and responses."""

from __future__ import annotations

from typing import Any

from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as pb
from gyre_serving.domain.errors import InvalidRequestError
from gyre_serving.domain.tensors import (
    DEFAULT_MAX_ELEMENTS,
    Tensor,
    from_raw,
    from_values,
    numpy_dtype,
    to_raw,
    to_values,
)
from gyre_serving.handlers import InferenceRequest, InferenceResponse

# Which InferTensorContents field holds each datatype's elements. FP16 has none: raw only.
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_FIELDS = tuple(sorted(set(CONTENTS_FIELD.values())))


def parameter_value(parameter: pb.InferParameter) -> Any:
    """The Python value of an ``InferParameter`` (None when unset)."""
    which = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, which) if which else None


def set_parameter(parameter: pb.InferParameter, value: Any) -> None:
    """Fill an ``InferParameter`` from a bool, int, float or str."""
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    elif isinstance(value, float):
        parameter.double_param = value
    else:
        parameter.string_param = str(value)


def decode_request(message: pb.ModelInferRequest, *, max_elements: int = DEFAULT_MAX_ELEMENTS,
                   ) -> tuple[InferenceRequest, bool]:
    """The request, and whether it came with ``raw_input_contents`` (then outputs go back raw too,
    as Triton and MLServer do, which is what ``tritonclient`` reads).

    Every input's shape is checked before anything is allocated for it (negative or too many
    dimensions, more than ``max_elements`` elements, a product numpy cannot hold).

    Raises:
        InvalidRequestError: both raw and typed contents, a raw entry count that differs from the
            inputs, an unknown datatype, values in the wrong contents field, a bad shape, or sizes
            that do not fit.
    """
    raw = message.raw_input_contents
    if raw:
        if any(tensor.HasField("contents") for tensor in message.inputs):
            raise InvalidRequestError("give input values either in raw_input_contents or in each input's "
                                      "contents, not both")
        if len(raw) != len(message.inputs):
            raise InvalidRequestError(f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs; "
                                      "expected one per input, in order")
    inputs = []
    for i, tensor in enumerate(message.inputs):
        if raw:
            inputs.append(from_raw(tensor.name, tensor.datatype, tensor.shape, raw[i], max_elements=max_elements))
        else:
            inputs.append(_from_contents(tensor, max_elements))
    request = InferenceRequest(
        model_name=message.model_name,
        model_version=message.model_version,
        id=message.id,
        inputs=inputs,
        outputs=[output.name for output in message.outputs],
        parameters={key: parameter_value(value) for key, value in message.parameters.items()},
    )
    return request, bool(raw)


def _from_contents(tensor: pb.ModelInferRequest.InferInputTensor, max_elements: int) -> Tensor:
    numpy_dtype(tensor.datatype)  # a clear error for an unknown datatype first
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InvalidRequestError(f"input {tensor.name!r}: {tensor.datatype} values can only be sent in "
                                  "raw_input_contents")
    values = getattr(tensor.contents, field)
    if not values:
        misplaced = [name for name in _ALL_FIELDS if name != field and getattr(tensor.contents, name)]
        if misplaced:
            raise InvalidRequestError(f"input {tensor.name!r} is {tensor.datatype}, whose values go in "
                                      f"contents.{field}; got values in contents.{misplaced[0]}")
    return from_values(tensor.name, tensor.datatype, tensor.shape, values, max_elements=max_elements)


def encode_response(response: InferenceResponse, *, raw: bool) -> pb.ModelInferResponse:
    """The gRPC response; outputs in ``raw_output_contents`` when ``raw`` (or when an output has no
    typed contents field, i.e. FP16: raw is all outputs or none), else in typed contents."""
    raw = raw or any(tensor.datatype not in CONTENTS_FIELD for tensor in response.outputs)
    message = pb.ModelInferResponse(model_name=response.model_name, model_version=response.model_version,
                                    id=response.id)
    for key, value in response.parameters.items():
        set_parameter(message.parameters[key], value)
    for tensor in response.outputs:
        output = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if raw:
            message.raw_output_contents.append(to_raw(tensor))
        else:
            getattr(output.contents, CONTENTS_FIELD[tensor.datatype]).extend(to_values(tensor))
    return message
