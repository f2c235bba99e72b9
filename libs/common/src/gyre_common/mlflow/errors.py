"""The one map between Gyre's errors and MLflow's error codes, for every MLflow-compatible path.

MLflow answers an error as ``{"error_code": "<ErrorCode name>", "message": "..."}`` with an HTTP
status its client maps back (``mlflow/exceptions.py``, ``ERROR_CODE_TO_HTTP_STATUS``; the client
reads ``error_code`` from the body and retries 429 and 5xx answers). The statuses below are
MLflow's for each code:

| Gyre error | ``error_code`` | HTTP |
|---|---|---|
| :class:`MlflowNotImplemented` (deliberately unsupported calls) | NOT_IMPLEMENTED | 501 |
| NotFound | RESOURCE_DOES_NOT_EXIST | 404 |
| AlreadyExists | RESOURCE_ALREADY_EXISTS | 400 |
| TooLarge (a body above the app's limit) | INVALID_PARAMETER_VALUE | 413 |
| ResourceExhausted (a quota; retrying may succeed) | REQUEST_LIMIT_EXCEEDED | 429 |
| InvalidArgument | INVALID_PARAMETER_VALUE | 400 |
| FailedPrecondition | INVALID_PARAMETER_VALUE | 400 |
| Unauthenticated | UNAUTHENTICATED | 401 |
| Unavailable, a transient failure (database or broker away), ``unavailable`` | TEMPORARILY_UNAVAILABLE | 503 |
| ``asyncpg.DataError`` from ``ValueError``/``OverflowError`` (unencodable value) | INVALID_PARAMETER_VALUE | 400 |
| any other GyreError | INTERNAL_ERROR | 500 |

Decisions, written down:

* **FailedPrecondition is INVALID_PARAMETER_VALUE, 400** in both services (the registry used to
  answer RESOURCE_CONFLICT 409, tracking 400). MLflow's own server answers INVALID_PARAMETER_VALUE
  when the state forbids a change (``must be in the 'active' lifecycle_stage``, a deleted run);
  INVALID_STATE would be HTTP 500 in MLflow's table, which its client retries, and RESOURCE_CONFLICT
  is what MLflow uses for concurrent-write conflicts, not for "archived" or "deleted".
* **TooLarge keeps HTTP 413** with INVALID_PARAMETER_VALUE: MLflow has no code for it, and its
  REQUEST_LIMIT_EXCEEDED (429) would make the client retry a request that can never succeed.
* **A dependency away is TEMPORARILY_UNAVAILABLE, 503**, decided by the same
  :func:`~gyre_common.bus.failures.classify_failure` as the app's outage middleware
  (:class:`gyre_common.http.DependencyOutageMiddleware`), which MLflow's paths never reach: the
  gateway answers them first. MLflow's client retries 503.
* A service may override a subclass (tracking: a param logged again with another value,
  ``ParamConflict``, is INVALID_PARAMETER_VALUE as in MLflow, not RESOURCE_ALREADY_EXISTS).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import asyncpg
from starlette.responses import JSONResponse

from gyre_common import errors
from gyre_common.bus.failures import Failure, classify_failure
from gyre_common.http import OUTAGE_MESSAGE

log = logging.getLogger(__name__)

INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
ENDPOINT_NOT_FOUND = "ENDPOINT_NOT_FOUND"
NOT_IMPLEMENTED = "NOT_IMPLEMENTED"
REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"
UNAUTHENTICATED = "UNAUTHENTICATED"
TEMPORARILY_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"
INTERNAL_ERROR = "INTERNAL_ERROR"

HTTP_STATUS = {
    INVALID_PARAMETER_VALUE: 400, RESOURCE_ALREADY_EXISTS: 400, RESOURCE_DOES_NOT_EXIST: 404,
    ENDPOINT_NOT_FOUND: 404, UNAUTHENTICATED: 401, REQUEST_LIMIT_EXCEEDED: 429, INTERNAL_ERROR: 500,
    NOT_IMPLEMENTED: 501, TEMPORARILY_UNAVAILABLE: 503,
}
"""MLflow's HTTP status of each code used here (``mlflow.exceptions.ERROR_CODE_TO_HTTP_STATUS``)."""


class MlflowNotImplemented(errors.GyreError):
    """An MLflow call Gyre deliberately does not support (MLflow's NOT_IMPLEMENTED, HTTP 501)."""

    reason = "not_implemented"
    grpc_code = "UNIMPLEMENTED"
    http_status = 501


Rule = tuple[type[BaseException], str, int]

_RULES: tuple[Rule, ...] = (
    (MlflowNotImplemented, NOT_IMPLEMENTED, 501),
    (errors.NotFound, RESOURCE_DOES_NOT_EXIST, 404),
    (errors.AlreadyExists, RESOURCE_ALREADY_EXISTS, 400),
    (errors.TooLarge, INVALID_PARAMETER_VALUE, 413),
    (errors.ResourceExhausted, REQUEST_LIMIT_EXCEEDED, 429),
    (errors.InvalidArgument, INVALID_PARAMETER_VALUE, 400),
    (errors.FailedPrecondition, INVALID_PARAMETER_VALUE, 400),
    (errors.Unauthenticated, UNAUTHENTICATED, 401),
    (errors.Unavailable, TEMPORARILY_UNAVAILABLE, 503),
)


def error_response(error_code: str, message: str, status: int | None = None) -> JSONResponse:
    """An error answer in MLflow's shape (``status``: MLflow's for the code unless given)."""
    return JSONResponse({"error_code": error_code, "message": message},
                        status_code=HTTP_STATUS.get(error_code, 500) if status is None else status)


class ErrorMap:
    """Gyre errors to MLflow's ``(error_code, HTTP status)`` (the table in the module docstring).

    Args:
        overrides: ``(error class, error_code)`` checked before the shared rules (most specific first).
        unavailable: exceptions that mean a dependency is away beyond those
            :func:`~gyre_common.bus.failures.classify_failure` calls transient (which always are):
            TEMPORARILY_UNAVAILABLE 503 with ``unavailable_message``.
        unavailable_message: what the caller reads then (the exception's text may hold addresses).
    """

    def __init__(self, overrides: Iterable[tuple[type[BaseException], str]] = (),
                 unavailable: tuple[type[BaseException], ...] = (),
                 unavailable_message: str = OUTAGE_MESSAGE) -> None:
        self.rules: tuple[Rule, ...] = (*((cls, code, HTTP_STATUS[code]) for cls, code in overrides), *_RULES)
        self.unavailable = unavailable
        self.unavailable_message = unavailable_message

    def code_of(self, exc: errors.GyreError) -> tuple[str, int]:
        """MLflow's ``(error_code, HTTP status)`` of a Gyre error (INTERNAL_ERROR, 500 when unknown)."""
        for cls, code, status in self.rules:
            if isinstance(exc, cls):
                return code, status
        return INTERNAL_ERROR, 500

    def answer(self, exc: BaseException) -> JSONResponse | None:
        """MLflow's error answer for ``exc``, or None when it is not an expected failure (the
        caller re-raises it: a 500 with its traceback logged)."""
        if isinstance(exc, errors.GyreError):
            code, status = self.code_of(exc)
            return error_response(code, str(exc), status)
        if (self.unavailable and isinstance(exc, self.unavailable)) or classify_failure(exc) is Failure.TRANSIENT:
            log.warning("dependency unavailable on an MLflow path: %s", type(exc).__name__)
            return error_response(TEMPORARILY_UNAVAILABLE, self.unavailable_message, 503)
        if isinstance(exc, asyncpg.DataError) and isinstance(exc.__cause__, ValueError | OverflowError):
            # asyncpg could not encode a request value as a query argument (text with a lone
            # surrogate, an integer beyond bigint): the input is wrong, not the service.
            problem = "text that is not valid Unicode" if isinstance(exc.__cause__, UnicodeError) \
                else "a value out of range"
            return error_response(INVALID_PARAMETER_VALUE, f"the request carries {problem}", 400)
        return None


DEFAULT_ERRORS = ErrorMap()
"""The shared rules without service overrides."""


def mlflow_error(exc: errors.GyreError, error_map: ErrorMap = DEFAULT_ERRORS) -> tuple[str, int]:
    """MLflow's ``(error_code, HTTP status)`` of a Gyre error."""
    return error_map.code_of(exc)
