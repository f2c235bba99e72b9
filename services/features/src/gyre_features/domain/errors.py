"""The errors of the features service's domain and handlers.

Every class subclasses a shared :mod:`gyre_common.errors` class, which names its status code in
each transport: NotFound -> NOT_FOUND / 404, InvalidArgument -> INVALID_ARGUMENT / 422 (like
FastAPI's own validation), Conflict -> FAILED_PRECONDITION / 409, TooLarge -> RESOURCE_EXHAUSTED /
413. The transports attach the codes; nothing here knows gRPC or HTTP.
"""

from __future__ import annotations

from gyre_common import errors


class FeatureStoreError(errors.GyreError):
    """Base of the errors handlers raise; each subclass is also a shared class, which sets its codes."""


class InvalidArgument(errors.InvalidArgument, FeatureStoreError):
    """The request is malformed (gRPC INVALID_ARGUMENT, HTTP 422 like FastAPI's own validation)."""

    http_status = 422


class NotFound(errors.NotFound, FeatureStoreError):
    """A named feature view or feature does not exist (gRPC NOT_FOUND, HTTP 404)."""


class TooLarge(errors.TooLarge, FeatureStoreError):
    """The request exceeds a size limit (gRPC RESOURCE_EXHAUSTED, HTTP 413)."""


class Conflict(errors.FailedPrecondition, FeatureStoreError):
    """The request contradicts stored state, e.g. changing a feature's type (FAILED_PRECONDITION, 409)."""


class InvalidFeatureEvent(InvalidArgument):
    """A feature event that can never be stored; it goes to the dead-letter topic (invalid input).

    Attributes:
        reason: machine-readable cause: ``unknown_view``, ``unknown_feature``, ``wrong_type``,
            ``missing_entity_id``, ``missing_event_time``, ``missing_feature_view``, ``no_values``,
            ``bad_value``.
        detail: human-readable explanation naming the view, feature and value.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
