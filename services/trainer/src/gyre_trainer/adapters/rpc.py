"""What the gRPC clients share: channels, call metadata, and the mapping of status codes to the
trainer's two kinds of dependency failure."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from gyre_trainer.ports import DependencyRejected, DependencyUnavailable

# Codes after which the same call may well succeed later; everything else is the request's fault.
_TRANSIENT = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
})


def dependency_error(service: str, call: str, exc: grpc.aio.AioRpcError) -> Exception:
    """The port-level error for a failed call: :class:`DependencyUnavailable` for transient codes,
    :class:`DependencyRejected` otherwise. The message names the service, the call and the code."""
    message = f"{service} {call}: {exc.code().name}: {exc.details()}"
    if exc.code() in _TRANSIENT:
        return DependencyUnavailable(message)
    return DependencyRejected(message)


def call_metadata(token: str | None) -> Sequence[tuple[str, str]]:
    """gRPC metadata carrying the bearer token, or none."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def open_channel(address: str, interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> grpc.aio.Channel:
    """An insecure grpc.aio channel to ``address`` (host:port) with the given client interceptors."""
    return grpc.aio.insecure_channel(address, interceptors=list(interceptors) or None)
