"""Serving's tensor decoding and encoding: raw bytes, typed values, JSON data; the gRPC codec."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as pb
from gyre_serving.domain.errors import InvalidRequestError
from gyre_serving.domain.tensors import Tensor, cast, check_shape, from_raw, from_values, to_raw, to_values
from gyre_serving.grpc_codec import decode_request, encode_response
from gyre_serving.handlers import InferenceResponse


@pytest.mark.parametrize(("datatype", "dtype"), [("FP32", "<f4"), ("FP64", "<f8"), ("INT32", "<i4"), ("INT64", "<i8")])
def test_raw_little_endian_round_trips(datatype: str, dtype: str) -> None:
    values = np.arange(6, dtype=dtype).reshape(2, 3) * 3
    tensor = from_raw("x", datatype, [2, 3], values.tobytes())
    assert tensor.shape == (2, 3) and tensor.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(tensor.data, values)
    assert to_raw(tensor) == values.tobytes()


def test_raw_is_read_little_endian_whatever_the_host() -> None:
    tensor = from_raw("x", "INT32", [1], struct.pack("<i", 258))
    assert tensor.data.tolist() == [258]


def test_raw_size_mismatch_says_what_was_expected() -> None:
    with pytest.raises(InvalidRequestError, match=r"12 bytes; FP32 with shape \[2, 2\] needs 16 \(4 x 4\)"):
        from_raw("x", "FP32", [2, 2], b"\0" * 12)


def test_raw_bytes_elements_are_length_prefixed() -> None:
    raw = struct.pack("<I", 3) + b"abc" + struct.pack("<I", 0)
    tensor = from_raw("s", "BYTES", [2], raw)
    assert tensor.data.tolist() == [b"abc", b""]
    assert to_raw(tensor) == raw
    with pytest.raises(InvalidRequestError, match="runs past the end"):
        from_raw("s", "BYTES", [1], struct.pack("<I", 9) + b"abc")
    with pytest.raises(InvalidRequestError, match="hold 2 BYTES elements"):
        from_raw("s", "BYTES", [3], raw)


def test_values_from_nested_json_lists() -> None:
    tensor = from_values("x", "FP64", [2, 2], [[1, 2.5], [3, 4]])
    assert tensor.data.tolist() == [[1.0, 2.5], [3.0, 4.0]]
    assert to_values(tensor) == [1.0, 2.5, 3.0, 4.0]


@pytest.mark.parametrize(("datatype", "values", "message"), [
    ("INT64", [1.5, 2.0], "values of type float cannot be INT64; send integers"),
    ("FP32", ["a", "b"], "values of type string cannot be FP32; send numbers"),
    ("FP32", [True, False], "values of type bool cannot be FP32"),
    ("INT8", [1, 300], "out of the range of INT8"),
    ("UINT32", [-1, 2], "out of the range of UINT32"),
    ("FP64", [1.0], r"1 values for shape \[2\]; expected 2 FP64 values"),
    ("FP64", [[1.0], [2.0, 3.0]], "ragged"),
    ("FP12", [1.0, 2.0], "unknown datatype 'FP12'"),
])
def test_values_that_do_not_fit_the_datatype_are_refused(datatype: str, values: object, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        from_values("x", datatype, [2], values)


def test_integers_widen_to_floats_and_bytes_accept_strings() -> None:
    assert from_values("x", "FP32", [2], [1, 2]).data.dtype == np.float32
    assert from_values("s", "BYTES", [2], ["é", b"b"]).data.tolist() == ["é".encode(), b"b"]


def test_shapes_must_be_non_negative_and_bounded() -> None:
    with pytest.raises(InvalidRequestError, match="no shape"):
        check_shape("x", [])
    with pytest.raises(InvalidRequestError, match="must be >= 0"):
        check_shape("x", [-1, 3])
    with pytest.raises(InvalidRequestError, match="at most 10 elements"):
        check_shape("x", [4, 4], max_elements=10)


def test_cast_outputs_into_their_declared_datatype() -> None:
    assert cast("p", np.array([0, 1]), "INT64").data.dtype == np.int64
    assert cast("p", np.array(["yes", "no"]), "BYTES").data.tolist() == [b"yes", b"no"]
    with pytest.raises(ValueError):
        cast("p", np.array(["yes"]), "INT64")


# -- gRPC codec -------------------------------------------------------------------------------------


def test_grpc_typed_contents_decode_and_parameters_come_along() -> None:
    message = pb.ModelInferRequest(model_name="m", model_version="2", id="r1")
    tensor = message.inputs.add(name="x", datatype="INT32", shape=[2, 2])
    tensor.contents.int_contents.extend([1, 2, 3, 4])
    message.outputs.add(name="predict")
    message.parameters["request_key"].string_param = "entity-7"
    request, raw = decode_request(message)
    assert not raw
    assert (request.model_name, request.model_version, request.id) == ("m", "2", "r1")
    assert request.inputs[0].data.tolist() == [[1, 2], [3, 4]]
    assert request.outputs == ["predict"] and request.parameters == {"request_key": "entity-7"}


def test_grpc_values_in_the_wrong_contents_field_are_named() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=[2]).contents.fp64_contents.extend([1.0, 2.0])
    with pytest.raises(InvalidRequestError, match=r"in contents\.fp32_contents; got values in contents\.fp64"):
        decode_request(message)


def test_grpc_raw_and_typed_contents_together_are_refused() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.0)
    message.raw_input_contents.append(np.float32(1).tobytes())
    with pytest.raises(InvalidRequestError, match="not both"):
        decode_request(message)
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=[1])
    message.inputs.add(name="y", datatype="FP32", shape=[1])
    message.raw_input_contents.append(np.float32(1).tobytes())
    with pytest.raises(InvalidRequestError, match="1 entries for 2 inputs"):
        decode_request(message)


def test_grpc_fp16_only_travels_raw() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP16", shape=[1])
    with pytest.raises(InvalidRequestError, match="only be sent in raw_input_contents"):
        decode_request(message)
    message.raw_input_contents.append(np.float16(1.5).tobytes())
    request, raw = decode_request(message)
    assert raw and request.inputs[0].data.tolist() == [1.5]


def test_grpc_response_raw_or_typed() -> None:
    response = InferenceResponse(
        "m", "3", "r1",
        (Tensor("predict", "INT64", np.array([1, 0])), Tensor("proba", "FP32", np.array([[0.25, 0.75], [1, 0]],
                                                                                         dtype=np.float32))),
        ("r1:0", "r1:1"), {"prediction_ids": "r1:0,r1:1"},
    )
    typed = encode_response(response, raw=False)
    assert typed.model_version == "3" and typed.id == "r1"
    assert list(typed.outputs[0].contents.int64_contents) == [1, 0]
    assert list(typed.outputs[1].shape) == [2, 2]
    assert list(typed.outputs[1].contents.fp32_contents) == [0.25, 0.75, 1, 0]
    assert typed.parameters["prediction_ids"].string_param == "r1:0,r1:1"
    raw = encode_response(response, raw=True)
    assert not raw.outputs[0].HasField("contents")
    assert np.frombuffer(raw.raw_output_contents[1], dtype="<f4").tolist() == [0.25, 0.75, 1, 0]
