"""The one transient/permanent/unknown rule every consumer follows, and the shared back-off."""

from __future__ import annotations

import errno

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError, NodeNotReadyError
from google.protobuf.message import DecodeError
from pydantic import BaseModel, ValidationError

from gyre_common import errors
from gyre_common.bus import DeadLetter, EventDecodeError, Failure, classify_failure
from gyre_common.bus.failures import failure_detail, failure_reason
from gyre_common.db.pool import DatabaseUnavailable
from gyre_common.retry import backoff_s


def _validation_error() -> ValidationError:
    class Model(BaseModel):
        x: int

    try:
        Model.model_validate({"x": "nope"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


class _NotFound(errors.InvalidArgument):
    reason = "unknown_feature"


TRANSIENT = [
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.SerializationError("could not serialize access"),
    asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
    asyncpg.InterfaceError("pool is closing"),
    DatabaseUnavailable("cannot reach PostgreSQL"),
    ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    ConnectionResetError("reset by peer"),
    OSError(errno.EHOSTUNREACH, "No route to host"),
    TimeoutError("statement took too long to reach"),
    KafkaConnectionError("broker gone"),
    KafkaTimeoutError(),
    NodeNotReadyError(),
    errors.Unavailable("registry is restarting"),
    errors.ResourceExhausted("job queue is full"),
]

PERMANENT = [
    DeadLetter("unknown_feature", "no feature x"),
    EventDecodeError("decode_error", "invalid protobuf"),
    ValueError("x must be positive"),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    DecodeError("truncated message"),
    asyncpg.exceptions.InvalidTextRepresentationError("invalid input syntax for type uuid"),
    asyncpg.exceptions.NumericValueOutOfRangeError("numeric field overflow"),
    asyncpg.exceptions.UniqueViolationError("duplicate key"),
    asyncpg.exceptions.CheckViolationError("violates check constraint"),
    errors.InvalidArgument("bad name"),
    errors.FailedPrecondition("run is deleted"),
    errors.AlreadyExists("param differs"),
    errors.TooLarge("too big"),
    _validation_error(),
]

UNKNOWN = [
    RuntimeError("surprise"),
    TypeError("'NoneType' object is not subscriptable"),
    KeyError("x"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
    FileNotFoundError(errno.ENOENT, "no such file"),
    PermissionError(errno.EACCES, "denied"),
    MessageSizeTooLargeError(),
    errors.NotFound("no such prediction (yet)"),
    errors.GyreError("internal"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_outages_are_transient(exc: BaseException) -> None:
    assert classify_failure(exc) is Failure.TRANSIENT


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: type(e).__name__)
def test_invalid_content_is_permanent(exc: BaseException) -> None:
    assert classify_failure(exc) is Failure.PERMANENT


@pytest.mark.parametrize("exc", UNKNOWN, ids=lambda e: type(e).__name__)
def test_anything_else_is_unknown(exc: BaseException) -> None:
    assert classify_failure(exc) is Failure.UNKNOWN


def test_a_wrapper_raised_from_an_outage_is_transient_but_an_explicit_dead_letter_wins() -> None:
    try:
        try:
            raise asyncpg.CannotConnectNowError("starting up")
        except asyncpg.PostgresError as inner:
            raise RuntimeError("store failed") from inner
    except RuntimeError as wrapped:
        assert classify_failure(wrapped) is Failure.TRANSIENT
    refusal = DeadLetter("bad", "no")
    refusal.__cause__ = ConnectionError("irrelevant")
    assert classify_failure(refusal) is Failure.PERMANENT


def test_exception_groups_are_transient_if_any_member_is() -> None:
    assert classify_failure(ExceptionGroup("g", [ValueError("a"), ConnectionError("b")])) is Failure.TRANSIENT
    assert classify_failure(ExceptionGroup("g", [ValueError("a"), DeadLetter("r")])) is Failure.PERMANENT
    assert classify_failure(ExceptionGroup("g", [ValueError("a"), RuntimeError("b")])) is Failure.UNKNOWN


def test_reasons_and_details_for_the_dead_letter_headers() -> None:
    assert failure_reason(DeadLetter("param_conflict", "x")) == "param_conflict"
    assert failure_reason(EventDecodeError("bad_header", "ce_time")) == "bad_header"
    assert failure_reason(_NotFound("no feature x")) == "unknown_feature"
    assert failure_reason(_validation_error()) == "validation_error"
    assert failure_reason(asyncpg.exceptions.CheckViolationError("c")) == "constraint_violation"
    assert failure_reason(asyncpg.exceptions.InvalidTextRepresentationError("c")) == "invalid_data"
    assert failure_reason(ValueError("v")) == "invalid_content"
    assert failure_reason(RuntimeError("r")) == "handler_failed"
    assert failure_detail(DeadLetter("r", "why")) == "why"
    assert failure_detail(ValueError("x must be positive")) == "ValueError: x must be positive"
    assert failure_detail(KeyError()) == "KeyError"


def test_the_shared_backoff_doubles_from_first_to_max() -> None:
    assert [backoff_s(n, first_s=0.2, max_s=5.0) for n in range(1, 8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert backoff_s(0, first_s=0.2, max_s=5.0) == 0.2
    assert backoff_s(10_000, first_s=0.1, max_s=10.0) == 10.0
    with pytest.raises(ValueError):
        backoff_s(1, first_s=-1, max_s=1)
