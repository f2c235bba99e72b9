"""gRPC trace context both ways through the interceptors the runner installs (grpc.aio, in-process)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gyre_common.telemetry import Telemetry

pytestmark = pytest.mark.integration

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7


@pytest.fixture
def recorded() -> tuple[Telemetry, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Telemetry("gyre-test", provider, MeterProvider()), exporter


@pytest.fixture
async def server_address(recorded: tuple[Telemetry, InMemorySpanExporter]) -> AsyncIterator[str]:
    telemetry, _ = recorded
    server = grpc.aio.server(interceptors=telemetry.grpc_server_interceptors())
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def test_incoming_traceparent_continues_the_callers_trace(
        recorded: tuple[Telemetry, InMemorySpanExporter], server_address: str) -> None:
    _, exporter = recorded
    traceparent = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"
    async with grpc.aio.insecure_channel(server_address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), metadata=(("traceparent", traceparent),), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    (span,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert span.name == "/grpc.health.v1.Health/Check"
    assert span.context.trace_id == TRACE_ID
    assert span.parent is not None and span.parent.span_id == PARENT_ID


async def test_client_interceptors_send_the_trace_to_the_server(
        recorded: tuple[Telemetry, InMemorySpanExporter], server_address: str) -> None:
    telemetry, exporter = recorded
    async with grpc.aio.insecure_channel(server_address,
                                         interceptors=telemetry.grpc_client_interceptors()) as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    spans = exporter.get_finished_spans()
    (client,) = [s for s in spans if s.kind == SpanKind.CLIENT]
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
