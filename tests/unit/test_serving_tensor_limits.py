"""Request tensors are checked before anything is allocated: any shape, datatype and contents either
decode into a tensor that matches its shape and the element limit, or raise InvalidRequestError (so
INVALID_ARGUMENT / 400); never another exception (UNKNOWN / INTERNAL / 500)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as pb
from gyre_serving.api_http import BINARY_DATA_SIZE, decode_body
from gyre_serving.domain.errors import InvalidRequestError
from gyre_serving.domain.tensors import DATATYPES, MAX_DIMENSIONS, check_shape, from_raw, from_values
from gyre_serving.grpc_codec import CONTENTS_FIELD, decode_request

LIMIT = 1000
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)

# Mostly small dimensions (so that some shapes fit the data), some huge or negative ones.
dimension = st.one_of(st.integers(min_value=0, max_value=6), st.integers(min_value=-3, max_value=-1),
                      st.sampled_from([2**31, 2**32 + 1, 2**62, 2**63 - 1]), INT64)
shapes = st.lists(dimension, min_size=0, max_size=MAX_DIMENSIONS + 3)
datatypes = st.one_of(st.sampled_from(DATATYPES), st.text(max_size=8))
scalars = st.one_of(st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4), st.binary(max_size=4),
                    st.none())
values = st.recursive(st.lists(scalars, max_size=12), lambda inner: st.lists(inner, max_size=4), max_leaves=40)


def _assert_fits(tensor: Any, shape: list[int]) -> None:
    assert tensor.shape == tuple(shape)
    assert tensor.data.size == math.prod(shape) <= LIMIT


@pytest.mark.parametrize("shape", [[0, 2**62], [0, 2**40, 2**40], [2**62, 0], [2**33, 2**33], [1] * 40,
                                   [-1], [3, -2], []])
def test_hostile_shapes_are_invalid_requests_not_crashes(shape: list[int]) -> None:
    with pytest.raises(InvalidRequestError, match="'x'"):
        from_raw("x", "FP32", shape, b"")
    with pytest.raises(InvalidRequestError, match="'x'"):
        from_values("x", "FP32", shape, [])


def test_the_element_limit_is_counted_with_zero_dimensions_as_one() -> None:
    assert check_shape("x", [0, 10], max_elements=10) == (0, 10)
    with pytest.raises(InvalidRequestError, match=r"shape \[0, 11\] \(no elements but dimensions that multiply "
                                                  r"to 11\); a tensor may hold at most 10 elements"):
        check_shape("x", [0, 11], max_elements=10)
    with pytest.raises(InvalidRequestError, match=r"\(12 elements\); a tensor may hold at most 10"):
        check_shape("x", [3, 4], max_elements=10)
    with pytest.raises(InvalidRequestError, match="at most 32"):
        check_shape("x", [1] * 33)


def test_grpc_shape_0_by_2_pow_62_is_invalid_argument() -> None:
    """The reported case: it used to reach numpy and fail with "array is too big" (UNKNOWN)."""
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[0, 2**62])
    request.raw_input_contents.append(b"")
    with pytest.raises(InvalidRequestError, match="at most"):
        decode_request(request)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes, datatype=datatypes, raw=st.binary(max_size=64))
def test_raw_contents_decode_or_are_refused(shape: list[int], datatype: str, raw: bytes) -> None:
    try:
        tensor = from_raw("x", datatype, shape, raw, max_elements=LIMIT)
    except InvalidRequestError:
        return
    _assert_fits(tensor, shape)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes, datatype=datatypes, data=values)
def test_json_values_decode_or_are_refused(shape: list[int], datatype: str, data: Any) -> None:
    try:
        tensor = from_values("x", datatype, shape, data, max_elements=LIMIT)
    except InvalidRequestError:
        return
    _assert_fits(tensor, shape)


@st.composite
def grpc_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    raw = draw(st.booleans())
    for i in range(draw(st.integers(min_value=0, max_value=3))):
        datatype = draw(datatypes)
        tensor = request.inputs.add(name=f"in{i}", datatype=datatype, shape=draw(st.lists(INT64 | dimension,
                                                                                          max_size=5)))
        if raw:
            request.raw_input_contents.append(draw(st.binary(max_size=48)))
            continue
        field = draw(st.sampled_from(sorted(set(CONTENTS_FIELD.values()))))
        contents = getattr(tensor.contents, field)
        if field == "bytes_contents":
            contents.extend(draw(st.lists(st.binary(max_size=4), max_size=8)))
        elif field == "bool_contents":
            contents.extend(draw(st.lists(st.booleans(), max_size=8)))
        elif field in ("fp32_contents", "fp64_contents"):
            contents.extend(draw(st.lists(st.floats(width=32), max_size=8)))
        elif field in ("uint_contents", "uint64_contents"):
            contents.extend(draw(st.lists(st.integers(min_value=0, max_value=2**32 - 1), max_size=8)))
        else:
            contents.extend(draw(st.lists(st.integers(min_value=-(2**31), max_value=2**31 - 1), max_size=8)))
    if raw and draw(st.booleans()):
        request.raw_input_contents.append(b"extra")
    return request


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=grpc_requests())
def test_grpc_requests_decode_or_are_refused(request: pb.ModelInferRequest) -> None:
    try:
        decoded, _ = decode_request(request, max_elements=LIMIT)
    except InvalidRequestError:
        return
    for tensor, message in zip(decoded.inputs, request.inputs, strict=True):
        _assert_fits(tensor, list(message.shape))


json_shapes = st.one_of(shapes, st.lists(st.integers(min_value=-(2**80), max_value=2**80), max_size=4))


@st.composite
def rest_bodies(draw: st.DrawFn) -> tuple[bytes, int | None]:
    inputs: list[dict[str, Any]] = []
    binary = b""
    for i in range(draw(st.integers(min_value=0, max_value=3))):
        item: dict[str, Any] = {"name": f"in{i}", "datatype": draw(datatypes), "shape": draw(json_shapes)}
        if draw(st.booleans()):
            blob = draw(st.binary(max_size=48))
            item["parameters"] = {BINARY_DATA_SIZE: draw(st.sampled_from([len(blob), len(blob) + 1, -1]))}
            binary += blob
        else:
            item["data"] = draw(values.filter(lambda v: json.dumps(v, default=str) is not None))
        inputs.append(item)
    header = json.dumps({"inputs": inputs}, default=lambda b: b.hex()).encode()
    return header + binary, (len(header) if binary else None)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=rest_bodies())
def test_rest_bodies_decode_or_are_refused(body: tuple[bytes, int | None]) -> None:
    content, json_length = body
    try:
        decoded, payload = decode_body(content, "m", "", json_length, max_elements=LIMIT)
    except InvalidRequestError:
        return
    for tensor, item in zip(decoded.inputs, payload.inputs, strict=True):
        _assert_fits(tensor, item.shape)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=200), json_length=st.none() | st.integers(min_value=-5, max_value=250))
def test_arbitrary_rest_bytes_are_refused_cleanly(body: bytes, json_length: int | None) -> None:
    try:
        decode_body(body, "m", "", json_length, max_elements=LIMIT)
    except InvalidRequestError:
        pass
