"""Serving's data plane, the use cases every inference transport shares.

:class:`DataPlane` answers the Open Inference Protocol (health, metadata, inference); the gRPC and
REST adapters only decode, call it and encode (like MLServer's ``DataPlane``). What is served is
kept in step with the registry by :mod:`gyre_serving.models`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from gyre_common.ids import random_uuid4
from gyre_serving import metrics
from gyre_serving.batching import AdaptiveBatcher, BatchingPolicy
from gyre_serving.domain.errors import InvalidRequestError, ModelNotFoundError, RequestTooLargeError
from gyre_serving.domain.events import ServedBatch, new_event_id, prediction_ids
from gyre_serving.domain.runtime import Prediction, Runtime
from gyre_serving.domain.signature import FeatureBatch, TensorSpec
from gyre_serving.domain.tensors import DEFAULT_MAX_ELEMENTS, Tensor
from gyre_serving.repository import ModelRepository
from gyre_serving.traffic import TrafficSplit, canary

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 128
"""Longest request id accepted (it becomes the prediction id and a Kafka key)."""
PREDICTION_IDS_PARAMETER = "prediction_ids"
"""Response parameter listing the prediction id of each row, comma-separated."""
_NO_INPUTS: frozenset[str] = frozenset()
REQUEST_KEY_PARAMETER = "request_key"
"""Request parameter carrying a business key (e.g. an entity id), copied into the inference events."""
ENTITY_ID_PARAMETER = "entity_id"
"""Request parameter naming the entity the prediction is about (the key of the model's training
feature view), copied into every row's inference event: feedback sends corrected labels back to
the feature store under it."""
EVENT_TIME_PARAMETER = "event_time"
"""Request parameter: RFC 3339 time (with an offset) of the entity's features the prediction used;
copied into the inference events (UTC) as the time of a corrected label."""
MAX_ENTITY_ID_LENGTH = 256
"""Longest ``entity_id`` parameter accepted, in characters."""


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """A transport-neutral inference request.

    Attributes:
        model_name: model to run.
        model_version: a version number, the served alias, or empty (the alias).
        id: request id; empty lets serving generate one (a UUID4).
        inputs: decoded input tensors.
        outputs: names of the outputs to return; empty returns all.
        parameters: request parameters (scalars); ``request_key`` is copied into the events.
    """

    model_name: str
    model_version: str = ""
    id: str = ""
    inputs: Sequence[Tensor] = ()
    outputs: Sequence[str] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InferenceResponse:
    """The answer to an :class:`InferenceRequest`.

    Attributes:
        id: the request id (generated when the request had none); also the prediction id of a
            one-row request.
        prediction_ids: one per row.
        parameters: response parameters (``prediction_ids``, comma-separated).
    """

    model_name: str
    model_version: str
    id: str
    outputs: tuple[Tensor, ...]
    prediction_ids: tuple[str, ...]
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    """Server name, version and supported protocol extensions."""

    name: str
    version: str
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """A served model's versions, platform, inputs and outputs."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class EventSink(Protocol):
    """Where answered requests go to become inference events (the emitter); never blocks."""

    def emit(self, batch: ServedBatch) -> bool:
        """Queue ``batch``; False when it was dropped."""
        ...


class DataPlane:
    """Open Inference Protocol operations over the served models.

    Args:
        repository: the served models.
        events: where answered requests are recorded for ``inference.events``.
        server_name, server_version: what ServerMetadata reports.
        ready: whether the service is ready (the runner's readiness).
        max_batch_rows: most rows per request.
        max_tensor_elements: most elements one input tensor may hold; the transports check it
            (with the rest of the shape) while decoding, before anything is allocated.
        challengers: the challenger versions (the challenger alias), for traffic splits; a request
            naming a challenger's version number is answered by it.
        traffic: model name (or ``*``) -> its split; none: the challenger gets no traffic.
        batching: model name (or ``*``) -> adaptive batching; none: every request predicts alone.
        event_text: ``text``: inference events carry each text input as sent; ``hash``: only its
            sha256 and length (:attr:`Runtime.text_inputs`).

    Blocking models (:attr:`Runtime.blocking`, torch) predict in one worker thread, one call at a
    time, so the event loop keeps decoding, answering and batching meanwhile; torch's own threads
    (``torch_threads``) parallelise inside the call.
    """

    def __init__(self, repository: ModelRepository, events: EventSink, *, server_name: str,
                 server_version: str, ready: Callable[[], bool], max_batch_rows: int,
                 max_tensor_elements: int = DEFAULT_MAX_ELEMENTS, challengers: ModelRepository | None = None,
                 traffic: Mapping[str, TrafficSplit] | None = None,
                 batching: Mapping[str, BatchingPolicy] | None = None, event_text: str = "text") -> None:
        self.repository = repository
        self.challengers = challengers
        self.events = events
        self._metadata = ServerMetadata(server_name, server_version)
        self._ready = ready
        self.max_batch_rows = max_batch_rows
        self.max_tensor_elements = max_tensor_elements
        self._traffic = dict(traffic or {})
        self._batching = dict(batching or {})
        self._batchers: dict[str, AdaptiveBatcher] = {}
        self._hash_text = event_text == "hash"
        self._background: set[asyncio.Task[None]] = set()
        # One thread: torch parallelises inside a call; two calls at once would only fight over cores.
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gyre-inference")

    def live(self) -> bool:
        """Whether the server is live: it answers at all."""
        return True

    def ready(self) -> bool:
        """Whether the server is ready (broker reachable, registry state known, configured models loaded)."""
        return self._ready()

    def model_ready(self, name: str, version: str = "") -> bool:
        """Whether ``name`` (at ``version``, if given) is loaded and can answer."""
        try:
            self._resolve(name, version)
        except (ModelNotFoundError, InvalidRequestError):
            return False
        return True

    def server_metadata(self) -> ServerMetadata:
        """Name, version and extensions of the server."""
        return self._metadata

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        """Metadata of a served model.

        Raises:
            ModelNotFoundError: the model (or that version) is not served here.
            InvalidRequestError: ``version`` is neither a number nor the served alias.
        """
        model = self._resolve(name, version)
        return ModelMetadata(model.name, (str(model.version),), model.platform, model.signature.inputs,
                             model.signature.outputs)

    async def infer(self, request: InferenceRequest, *, started_at: float | None = None) -> InferenceResponse:
        """Run one inference request.

        The model is resolved once, at the start: if a new version is swapped in meanwhile, this
        request still finishes on the version it started with. The answered request is handed to
        the event sink, which never blocks or fails the call.

        Args:
            started_at: ``time.perf_counter()`` when the transport received the request (for the
                events' ``latency_ms``); now when omitted.

        Raises:
            ModelNotFoundError, InvalidRequestError, RequestTooLargeError, PredictionError.
        """
        started = time.perf_counter() if started_at is None else started_at
        model = self._resolve(request.model_name, request.model_version)
        request_id = request.id or random_uuid4()
        if len(request_id) > MAX_ID_LENGTH:
            raise InvalidRequestError(f"request id has {len(request_id)} characters; at most {MAX_ID_LENGTH}")
        for tensor in request.inputs:
            if tensor.data.ndim and tensor.data.shape[0] > self.max_batch_rows:
                raise RequestTooLargeError(
                    f"input {tensor.name!r} has {tensor.data.shape[0]} rows; at most {self.max_batch_rows} per request"
                )
        parameters = request.parameters
        key = parameters.get(REQUEST_KEY_PARAMETER)
        request_key = key if isinstance(key, str) else ""
        entity_id, event_time = "", None
        if ENTITY_ID_PARAMETER in parameters or EVENT_TIME_PARAMETER in parameters:
            entity_id, event_time = _entity(parameters)
        alias = self.repository.alias if request.model_version in ("", self.repository.alias) else ""
        shadow: Runtime | None = None
        if alias and self._traffic:
            model, alias, shadow = self._split(model, alias, request_key or request_id)
        wanted = _requested_outputs(model, request.outputs)
        batch = model.features(request.inputs)
        prediction = await self._predict(model, batch)
        ids = tuple(prediction_ids(request_id, batch.rows))
        outputs = tuple(tensor for tensor in prediction.outputs if wanted is None or tensor.name in wanted)
        if wanted is not None:
            order = {name: i for i, name in enumerate(request.outputs)}
            outputs = tuple(sorted(outputs, key=lambda tensor: order[tensor.name]))
        metrics.count_predictions(model.name, batch.rows)
        if batch.rows:
            self.events.emit(ServedBatch(
                model_name=model.name,
                model_version=model.version,
                alias=alias,
                request_id=request_id,
                prediction_ids=ids,
                feature_names=batch.names,
                feature_columns=batch.columns,
                output_columns=prediction.event_columns,
                served_at=datetime.now(UTC),
                latency_ms=(time.perf_counter() - started) * 1000.0,
                request_key=request_key,
                event_id=new_event_id(),
                hashed_inputs=model.text_inputs if self._hash_text else _NO_INPUTS,
                entity_id=entity_id,
                event_time=event_time,
            ))
            if shadow is not None:
                # After this request's answer, not before: the shadow never delays the client.
                asyncio.get_running_loop().call_soon(self._shadow, shadow, request.inputs, request_id, ids,
                                                     request_key)
        return InferenceResponse(model.name, str(model.version), request_id, outputs, ids,
                                 {PREDICTION_IDS_PARAMETER: ",".join(ids)})

    def _resolve(self, name: str, version: str) -> Runtime:
        """The served model, or the challenger when ``version`` is the challenger's number or alias."""
        challengers = self.challengers
        if challengers is not None and version:
            challenger = challengers.get(name)
            if challenger is not None and (version == challengers.alias or version == str(challenger.version)):
                primary = self.repository.get(name)
                if primary is None or version != str(primary.version):
                    return challenger
        return self.repository.resolve(name, version)

    def _split(self, model: Runtime, alias: str, key: str) -> tuple[Runtime, str, Runtime | None]:
        """(model that answers, its alias, shadow model or None) under the model's traffic split."""
        split = self._traffic.get(model.name) or self._traffic.get("*")
        challenger = self.challengers.get(model.name) if self.challengers is not None else None
        if split is None or challenger is None:
            return model, alias, None
        if canary(split, model.name, key):
            assert self.challengers is not None
            return challenger, self.challengers.alias, None
        return model, alias, challenger if split.shadow else None

    async def _predict(self, model: Runtime, batch: Any) -> Prediction:
        if not self._batching:
            if model.blocking:
                return await asyncio.get_running_loop().run_in_executor(self._inference, model.predict, batch)
            return model.predict(batch)
        batcher = self._batchers.get(model.name)
        if batcher is None:
            policy = self._batching.get(model.name) or self._batching.get("*")
            if policy is None:
                if model.blocking:
                    return await asyncio.get_running_loop().run_in_executor(self._inference, model.predict, batch)
                return model.predict(batch)
            batcher = self._batchers[model.name] = AdaptiveBatcher(policy, model.name, self._inference)
        return await batcher.predict(model, batch)

    def close(self) -> None:
        """Stop the inference thread once the servers have drained (it finishes a running call)."""
        self._inference.shutdown(wait=False, cancel_futures=True)

    def _shadow(self, model: Runtime, inputs: Sequence[Tensor], request_id: str, ids: tuple[str, ...],
                request_key: str) -> None:
        """Predict with the shadow (challenger) model; its answer only goes to the inference events."""
        if model.blocking:  # not on the event loop: in the inference thread, after the clients' calls
            task = asyncio.get_running_loop().create_task(
                self._shadow_blocking(model, inputs, request_id, ids, request_key))
            self._background.add(task)  # a reference until it ends: the loop keeps only weak ones
            task.add_done_callback(self._background.discard)
            return
        started = time.perf_counter()
        try:
            batch = model.features(inputs)
            prediction = model.predict(batch)
        except Exception as exc:  # the client already has its answer; the shadow's failure is only counted
            metrics.SHADOW_PREDICTIONS.labels(model.name, "failed").inc()
            log.debug("shadow %s v%d failed on request %s: %s", model.name, model.version, request_id, exc)
            return
        self._emit_shadow(model, batch, prediction, request_id, ids, request_key, started)

    async def _shadow_blocking(self, model: Runtime, inputs: Sequence[Tensor], request_id: str,
                               ids: tuple[str, ...], request_key: str) -> None:
        started = time.perf_counter()
        try:
            batch = model.features(inputs)
            prediction = await asyncio.get_running_loop().run_in_executor(self._inference, model.predict, batch)
        except Exception as exc:  # the client already has its answer; the shadow's failure is only counted
            metrics.SHADOW_PREDICTIONS.labels(model.name, "failed").inc()
            log.debug("shadow %s v%d failed on request %s: %s", model.name, model.version, request_id, exc)
            return
        self._emit_shadow(model, batch, prediction, request_id, ids, request_key, started)

    def _emit_shadow(self, model: Runtime, batch: FeatureBatch, prediction: Prediction, request_id: str,
                     ids: tuple[str, ...], request_key: str, started: float) -> None:
        metrics.SHADOW_PREDICTIONS.labels(model.name, "ok").inc()
        assert self.challengers is not None
        self.events.emit(ServedBatch(
            model_name=model.name, model_version=model.version, alias=self.challengers.alias,
            request_id=request_id, prediction_ids=ids, feature_names=batch.names, feature_columns=batch.columns,
            output_columns=prediction.event_columns, served_at=datetime.now(UTC),
            latency_ms=(time.perf_counter() - started) * 1000.0, request_key=request_key, shadow=True,
            event_id=new_event_id(), hashed_inputs=model.text_inputs if self._hash_text else _NO_INPUTS,
        ))


def _entity(parameters: Mapping[str, Any]) -> tuple[str, datetime | None]:
    """The ``entity_id`` and ``event_time`` request parameters, checked.

    Raises:
        InvalidRequestError: a non-string or over-long entity id; an event time that is not an
            RFC 3339 string with an offset (a time without one would be ambiguous).
    """
    entity = parameters.get(ENTITY_ID_PARAMETER, "")
    if not isinstance(entity, str) or len(entity) > MAX_ENTITY_ID_LENGTH:
        raise InvalidRequestError(f"parameter {ENTITY_ID_PARAMETER!r} must be a string of at most "
                                  f"{MAX_ENTITY_ID_LENGTH} characters")
    raw = parameters.get(EVENT_TIME_PARAMETER)
    if raw is None:
        return entity, None
    try:
        if not isinstance(raw, str):
            raise ValueError
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequestError(f"parameter {EVENT_TIME_PARAMETER!r} must be an RFC 3339 time string, "
                                  f"e.g. 2026-05-01T12:00:00Z; got {raw!r}") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidRequestError(f"parameter {EVENT_TIME_PARAMETER!r} needs a UTC offset (Z or +hh:mm); "
                                  f"got {raw!r}")
    return entity, when.astimezone(UTC)


def _requested_outputs(model: Runtime, names: Sequence[str]) -> set[str] | None:
    if not names:
        return None
    known = [spec.name for spec in model.signature.outputs]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidRequestError(f"unknown output(s) {unknown}; model {model.name!r} returns {known}")
    if len(set(names)) != len(names):
        raise InvalidRequestError(f"requested outputs must be unique, got {list(names)}")
    return set(names)
