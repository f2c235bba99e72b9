"""Transient versus permanent: what a consumer does with a failure, decided in one place.

Every consumer of every service goes through :func:`classify_failure`, so "the database is down"
and "this record is invalid" are told apart the same way everywhere:

* **transient** — a dependency is away (PostgreSQL or the broker unreachable, restarting, out of
  connections; a network error or a timeout; a serialization conflict; a full queue). Nothing is
  wrong with the record: the consumer pauses and retries with back-off (:func:`gyre_common.retry.backoff_s`)
  for as long as it takes and NEVER dead-letters it. Meanwhile its stall clock runs, so readiness
  and the ``gyre_bus_consumer_stalled_seconds`` metric show that it is waiting.
* **permanent** — the content can never succeed (it does not decode, fails validation, breaks a
  constraint, or the handler said so with :class:`~gyre_common.bus.DeadLetter`): dead-lettered at
  once, no retry loop.
* **unknown** — anything else (most likely a bug): bounded retries (:class:`~gyre_common.bus.RetryPolicy`),
  then the dead-letter topic with reason ``handler_failed``.

A handler picks the outcome by what it raises: a domain error subclassing
:class:`gyre_common.errors.InvalidArgument` / ``FailedPrecondition`` / ``AlreadyExists`` /
``TooLarge`` (or ``ValueError``) is permanent, :class:`gyre_common.errors.Unavailable` /
``ResourceExhausted`` transient. A wrapper raised ``from`` a transient error (``raise
StoreError(...) from exc``) counts as transient, because the cause, not the wrapper, says whether
waiting helps.
"""

from __future__ import annotations

import asyncio
import enum
import errno

import asyncpg
import grpc
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from google.protobuf.message import Error as ProtobufError
from pydantic import ValidationError

from gyre_common import errors
from gyre_common.bus.codec import EventDecodeError
from gyre_common.bus.deadletter import DeadLetter
from gyre_common.db.pool import DatabaseUnavailable


class Failure(enum.StrEnum):
    """What a consumer does about an exception (see the module docstring)."""

    TRANSIENT = "transient"
    """Wait with back-off and retry, indefinitely; never dead-letter."""
    PERMANENT = "permanent"
    """Dead-letter at once."""
    UNKNOWN = "unknown"
    """Bounded retries, then dead-letter."""


_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,
    asyncpg.PostgresConnectionError,           # ConnectionDoesNotExistError, ConnectionFailureError, ...
    asyncpg.CannotConnectNowError,             # the server is starting or shutting down
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InsufficientResourcesError,  # TooManyConnectionsError, DiskFullError, OutOfMemoryError
    asyncpg.exceptions.TransactionRollbackError,    # serialization failures and deadlocks: retry the transaction
    KafkaConnectionError,
    KafkaTimeoutError,
    ConnectionError,
    TimeoutError,                              # asyncio.TimeoutError is this class since Python 3.11
    asyncio.TimeoutError,
    errors.Unavailable,
)

# OSErrors about files, not about reaching something: retrying them for ever would hide a bug.
_LOCAL_OS_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError,
)
_TRANSIENT_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH,
    errno.ENETDOWN, errno.ETIMEDOUT, errno.EPIPE, errno.EAGAIN,
})

_PERMANENT_TYPES: tuple[type[BaseException], ...] = (
    DeadLetter,
    EventDecodeError,
    ValidationError,                           # pydantic (also a ValueError, named for clarity)
    ValueError,                                # domain validation, JSON, UnicodeDecodeError
    ProtobufError,                             # DecodeError, EncodeError, json_format.ParseError
    asyncpg.DataError,                         # 22xxx: a value the column cannot take
    asyncpg.IntegrityConstraintViolationError,  # 23xxx: a check, foreign key or unique constraint
    errors.InvalidArgument,
    errors.FailedPrecondition,
    errors.AlreadyExists,
    errors.TooLarge,
)

_TRANSIENT_GRPC = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                             grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED})
_PERMANENT_GRPC = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                             grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.OUT_OF_RANGE})

_MAX_CAUSES = 8
"""How far down ``__cause__`` links a transient cause is looked for (chains are short; cycles exist)."""


def classify_failure(exc: BaseException) -> Failure:
    """Whether ``exc``, raised while handling records, is transient, permanent or unknown.

    Order matters: an explicit :class:`DeadLetter` or decode error is permanent whatever caused it;
    then a transient error anywhere in the ``__cause__`` chain makes the whole failure transient;
    then the top error's own type decides. An :class:`ExceptionGroup` is transient when any member
    is, permanent when all members are, unknown otherwise.
    """
    if isinstance(exc, DeadLetter | EventDecodeError):
        return Failure.PERMANENT
    if isinstance(exc, BaseExceptionGroup):
        kinds = {classify_failure(member) for member in exc.exceptions}
        if Failure.TRANSIENT in kinds:
            return Failure.TRANSIENT
        return Failure.PERMANENT if kinds == {Failure.PERMANENT} else Failure.UNKNOWN
    link: BaseException | None = exc
    for _ in range(_MAX_CAUSES):
        if link is None:
            break
        if _is_transient(link):
            return Failure.TRANSIENT
        link = link.__cause__
    if _is_permanent(exc):
        return Failure.PERMANENT
    return Failure.UNKNOWN


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if isinstance(exc, errors.ResourceExhausted) and not isinstance(exc, errors.TooLarge):
        return True  # a full queue or a quota: room comes back
    if isinstance(exc, asyncpg.InterfaceError):
        # "pool is closing", "connection is closed": the pool went away under us (shutdown, restart).
        # Other InterfaceErrors ("another operation is in progress") are bugs, not outages.
        return "clos" in str(exc).lower()
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False))
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in _TRANSIENT_GRPC
    if isinstance(exc, OSError) and not isinstance(exc, _LOCAL_OS_ERRORS):
        return exc.errno is None or exc.errno in _TRANSIENT_ERRNOS
    return False


def _is_permanent(exc: BaseException) -> bool:
    if isinstance(exc, _PERMANENT_TYPES):
        return True
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in _PERMANENT_GRPC
    return False


GENERIC_REASONS: dict[type[BaseException], str] = {
    ValidationError: "validation_error",
    asyncpg.DataError: "invalid_data",
    asyncpg.IntegrityConstraintViolationError: "constraint_violation",
    ProtobufError: "invalid_message",
    ValueError: "invalid_content",
}
"""``gyre_dlq_reason`` of a permanent failure that names no reason of its own (first match wins)."""


def failure_reason(exc: BaseException, default: str = "handler_failed") -> str:
    """The short ``gyre_dlq_reason`` for ``exc``: its own ``reason`` (DeadLetter, decode errors,
    Gyre domain errors), else a generic one by type, else ``default``."""
    own = getattr(exc, "reason", None)
    if isinstance(own, str) and own and len(own) <= 100:
        return own
    for kind, reason in GENERIC_REASONS.items():
        if isinstance(exc, kind):
            return reason
    return default


def failure_detail(exc: BaseException) -> str:
    """The ``gyre_dlq_error`` text for ``exc``: a :class:`DeadLetter`'s or decode error's detail
    (as the handler gave it, possibly empty), else ``"<ExceptionType>: <message>"``."""
    if isinstance(exc, DeadLetter | EventDecodeError):
        return exc.detail
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
