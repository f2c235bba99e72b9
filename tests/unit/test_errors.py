"""gyre_common.errors is plain Python; the transports map its names to status codes."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from gyre_common import errors
from gyre_common.grpc_errors import grpc_status

SHARED = [errors.GyreError, errors.InvalidArgument, errors.NotFound, errors.AlreadyExists,
          errors.FailedPrecondition, errors.ResourceExhausted, errors.TooLarge, errors.Unavailable,
          errors.Unauthenticated]


def test_importing_errors_loads_no_transport() -> None:
    code = ("import sys, gyre_common.errors; "
            "print(sorted(m for m in ('grpc', 'fastapi', 'starlette', 'asyncpg') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


@pytest.mark.parametrize("cls", SHARED, ids=lambda cls: cls.__name__)
def test_every_grpc_code_names_a_status(cls: type[errors.GyreError]) -> None:
    assert grpc_status(cls("x")) is getattr(grpc.StatusCode, cls.grpc_code)


def test_codes_of_the_table() -> None:
    assert grpc_status(errors.TooLarge("x")) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert errors.TooLarge.http_status == 413
    assert grpc_status(errors.Unavailable("x")) is grpc.StatusCode.UNAVAILABLE
    assert errors.error_body(errors.NotFound("no model m")) == {"detail": "no model m", "reason": "not_found"}
