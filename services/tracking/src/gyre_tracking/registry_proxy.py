"""Tracking's pass-through of MLflow's model-registry REST API to the registry service.

An MLflow client talks to one address, ``MLFLOW_TRACKING_URI`` (tracking, 7100), also for the model
registry unless ``MLFLOW_REGISTRY_URI`` says otherwise. The registry is owned by the registry
service, so tracking forwards every ``/api/2.0/mlflow/registered-models/*`` and
``/api/2.0/mlflow/model-versions/*`` call (and the ``/ajax-api/`` equivalents of MLflow's web UI)
to the registry's MLflow-compatible endpoints, unchanged: method, path, query string (as sent),
body, ``authorization`` / ``x-gyre-actor`` / ``content-type`` / ``accept`` and trace headers. The
answer comes back as the registry gave it (status, body bytes, ``content-type``, errors included),
streamed through.

The proxy is a plain ASGI app (:meth:`RegistryProxy.__call__`) that
:class:`gyre_tracking.mlflow_api.MlflowGateway` hands registry paths to before FastAPI routes
anything, and its client is one ``aiohttp.ClientSession`` with keep-alive connections: the hop
used to cost ~2.3 ms per call through a FastAPI route and httpx, of which httpx alone was about
two thirds on this hardware.

When the registry cannot be reached, the caller gets MLflow's ``TEMPORARILY_UNAVAILABLE`` (HTTP
503), which the MLflow client retries.

Wiring (tracking's bootstrap)::

    proxy = RegistryProxy(settings.registry_url)
    mlflow_api.install(ctx.app, handlers, registry=proxy)
    ctx.add_task(proxy)                   # closes the connections at shutdown
"""

from __future__ import annotations

import json
import logging

import aiohttp
from starlette.types import Receive, Scope, Send
from yarl import URL

log = logging.getLogger(__name__)

PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
RESOURCES = ("registered-models", "model-versions")

_FORWARDED_REQUEST_HEADERS = frozenset({b"authorization", b"x-gyre-actor", b"content-type", b"accept",
                                        b"traceparent", b"tracestate"})
_FORWARDED_RESPONSE_HEADERS = ("content-type", "content-length", "content-encoding")
# Below uvicorn's default keep-alive (5 s), so that the registry never closes a connection the
# proxy is about to reuse (the request would fail instead of being answered).
_KEEPALIVE_S = 4.0


def is_registry_path(path: str) -> bool:
    """Whether ``path`` is one of the registry calls the proxy forwards."""
    for prefix in PREFIXES:
        if path.startswith(prefix):
            rest = path[len(prefix):]
            return any(rest.startswith(f"/{resource}/") for resource in RESOURCES)
    return False


class RegistryProxy:
    """The proxy: an ASGI app for registry paths and a lifecycle (``start``/``stop``) for its client.

    Args:
        registry_url: HTTP address of the registry (``GYRE_TRACKING_REGISTRY_URL``).
        timeout_s: seconds to wait for the registry's whole answer before answering 503.
        max_connections: keep-alive connections to the registry kept open at most.
    """

    def __init__(self, registry_url: str, *, timeout_s: float = 30.0, max_connections: int = 32) -> None:
        self.registry_url = registry_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared client, created on first use (inside the serving event loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=_KEEPALIVE_S),
                timeout=self._timeout,
                # Bytes pass through as the registry sent them; no cookies kept between callers.
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def start(self) -> None:
        """Nothing to open ahead of time (the client connects on first use)."""

    async def stop(self) -> None:
        """Close the keep-alive connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the request to the registry and stream its answer back unchanged."""
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
                   if name in _FORWARDED_REQUEST_HEADERS}
        body = bytearray()
        if scope["method"] != "GET":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        query = scope["query_string"]
        target = URL(self.registry_url + scope["path"] + ("?" + query.decode("latin-1") if query else ""),
                     encoded=True)
        started = False
        try:
            async with self.session.request(scope["method"], target, data=bytes(body) if body else None,
                                            headers=headers) as answer:
                await send({"type": "http.response.start", "status": answer.status, "headers": [
                    (name.encode("latin-1"), value.encode("latin-1"))
                    for name in _FORWARDED_RESPONSE_HEADERS if (value := answer.headers.get(name)) is not None]})
                started = True
                async for chunk in answer.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if started:
                raise  # half an answer is out: the connection has to break
            log.warning("registry unreachable at %s: %s", self.registry_url, type(exc).__name__)
            await _unavailable(send, self.registry_url)


async def _unavailable(send: Send, registry_url: str) -> None:
    body = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE",
                       "message": f"the model registry at {registry_url} cannot be reached; retry later"}).encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
