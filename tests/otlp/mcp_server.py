"""A real MCP server (the official `mcp` SDK 2.x) whose own OpenTelemetry spans go to mcplog,
with no mcplog code: the OpenTelemetry SDK's OTLP/HTTP exporter is configured the standard way,
from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and OTEL_EXPORTER_OTLP_HEADERS, which the caller
(tests/it/otlp.rs) points at a running mcplog. The in-process SDK client calls one tool that
completes and one that fails, then the spans are flushed and the script exits 0."""

import asyncio

import mcp
from mcp.server.mcpserver import MCPServer
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

provider = TracerProvider(resource=Resource.create({"service.name": "otel_mcp"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)

server = MCPServer("otel-e2e")


@server.tool()
async def slow_add(a: int, b: int) -> int:
    """Adds, slowly."""
    await asyncio.sleep(0.2)
    return a + b


@server.tool()
def divide(a: int, b: int) -> float:
    """Divides; fails on zero."""
    return a / b


async def main() -> None:
    async with mcp.Client(server) as client:
        ok = await client.call_tool("slow_add", {"a": 2, "b": 3})
        assert not ok.is_error, ok
        failed = await client.call_tool("divide", {"a": 1, "b": 0})
        assert failed.is_error, failed


asyncio.run(main())
# Waits for the export; an export mcplog refused shows as missing records in the caller's checks.
assert provider.force_flush(10_000), "the spans were not exported in time"
provider.shutdown()
