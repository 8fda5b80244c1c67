"""End to end: real fastmcp / mcp servers with the mcplog middleware, driven by
each SDK's own in-process client, checked through the mcplog server's API."""

import anyio
import fastmcp
import mcp
import pytest
from fastmcp.exceptions import ToolError as FastMCPToolError
from mcp.server.mcpserver import Context as MCPContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError as MCPToolError

import mcplog
import mcplog.mcp
from mcplog.fastmcp import McpLogMiddleware

# No `from __future__ import annotations` here: both SDKs read the tools'
# annotations at registration, and `ctx: Context` must resolve.

TOOLS = {"add", "boom", "work", "slow"}


class Gate:
    """Lets the test cancel the slow tool exactly while it runs, and wait
    until the server side has seen the cancellation."""

    def __init__(self) -> None:
        self.running = anyio.Event()
        self.cancelled = anyio.Event()

    async def park(self) -> str:
        self.running.set()
        try:
            await anyio.sleep(30)
        except BaseException:
            self.cancelled.set()
            raise
        return "not cancelled"


async def cancel_while_running(gate: Gate, call) -> None:
    """Start ``call()``, cancel its task once the tool runs (the SDK client
    then abandons the request: notifications/cancelled, or a structural
    cancel on mcp's direct in-process connection), and wait for the tool to
    see it."""
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await gate.running.wait()
            tg.cancel_scope.cancel()
        await gate.cancelled.wait()


def check_records(server, mcp_id: str, error_message: str, error_type: str) -> None:
    records = server.interactions(mcp_id)
    assert len(records) == 4, [r["request_data"] for r in records]
    by_tool = {r["request_data"]["tool"]: r for r in records}
    assert set(by_tool) == TOOLS

    add = by_tool["add"]
    assert add["status"] == "completed"
    assert add["request_data"] == {"tool": "add", "arguments": {"a": 2, "b": 3}}
    assert add["result_data"] == {"result": 5}

    boom = by_tool["boom"]
    assert boom["status"] == "failed"
    assert boom["request_data"]["arguments"] == {"x": "y"}
    assert error_message in boom["error_data"]["message"]
    assert boom["error_data"]["type"] == error_type

    work = by_tool["work"]
    assert work["status"] == "completed"
    assert work["result_data"] == {"result": "done"}
    updates = [p["data"] for p in work["progress_updates"]]
    assert updates == [
        {"progress": 1, "total": 2, "message": "step 1"},
        {"step": 1},
        {"progress": 2, "total": 2, "message": "step 2"},
        {"step": 2},
    ]

    slow = by_tool["slow"]
    assert slow["status"] == "cancelled"
    assert slow["cancel_data"] == {"reason": "cancelled"}
    for record in records:
        assert record["metadata"]["event_count"] == 2 + len(record["progress_updates"])


def test_fastmcp_tool_calls_are_logged(server, make_client):
    log = make_client(server.url, mcp_id="fastmcp_mcp")
    app = fastmcp.FastMCP("e2e-fastmcp", middleware=[McpLogMiddleware(log)])
    gate: list[Gate] = []

    @app.tool
    def add(a: int, b: int) -> int:
        return a + b

    @app.tool
    def boom(x: str) -> str:
        raise ValueError("kaboom " + x)

    @app.tool
    async def work(n: int, ctx: fastmcp.Context) -> str:
        for i in range(1, n + 1):
            await ctx.report_progress(i, n, f"step {i}")  # the SDK's progress
            mcplog.progress({"step": i})  # mcplog's own
        return "done"

    @app.tool
    async def slow() -> str:
        return await gate[0].park()

    async def scenario() -> None:
        gate.append(Gate())
        seen: list[tuple] = []

        async def on_progress(progress, total, message) -> None:
            seen.append((progress, total, message))

        async with fastmcp.Client(app) as mcp_client:
            assert (await mcp_client.call_tool("add", {"a": 2, "b": 3})).data == 5
            with pytest.raises(FastMCPToolError, match="kaboom y"):
                await mcp_client.call_tool("boom", {"x": "y"})
            await mcp_client.call_tool("work", {"n": 2}, progress_handler=on_progress)
            assert len(seen) == 2  # the client still gets the SDK's notifications
            await cancel_while_running(gate[0], lambda: mcp_client.call_tool("slow", {}))

    anyio.run(scenario)
    assert log.flush(10).pending == 0
    check_records(server, "fastmcp_mcp", "kaboom y", "ToolError")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_mcp_sdk_tool_calls_are_logged(server, make_client, mode):
    """mode "auto": the in-process direct dispatcher; "legacy": JSON-RPC over
    memory streams, where cancelling sends notifications/cancelled."""
    mcp_id = f"sdk_{mode}_mcp"
    log = make_client(server.url, mcp_id=mcp_id)
    app = MCPServer("e2e-mcp", middleware=[mcplog.mcp.middleware(log)])
    gate: list[Gate] = []

    @app.tool()
    def add(a: int, b: int) -> int:
        return a + b

    @app.tool()
    def boom(x: str) -> str:
        raise MCPToolError("kaboom " + x)

    @app.tool()
    async def work(n: int, ctx: MCPContext) -> str:
        for i in range(1, n + 1):
            await ctx.report_progress(i, n, f"step {i}")
            mcplog.progress({"step": i})
        return "done"

    @app.tool()
    async def slow() -> str:
        return await gate[0].park()

    async def scenario() -> None:
        gate.append(Gate())
        seen: list[tuple] = []

        async def on_progress(progress, total, message) -> None:
            seen.append((progress, total, message))

        async with mcp.Client(app, mode=mode) as mcp_client:
            assert (await mcp_client.call_tool("add", {"a": 2, "b": 3})).structured_content == {"result": 5}
            failed = await mcp_client.call_tool("boom", {"x": "y"})
            assert failed.is_error  # this SDK returns tool errors as results
            await mcp_client.call_tool("work", {"n": 2}, progress_callback=on_progress)
            assert len(seen) == 2
            await cancel_while_running(gate[0], lambda: mcp_client.call_tool("slow", {}))

    anyio.run(scenario)
    assert log.flush(10).pending == 0
    check_records(server, mcp_id, "kaboom y", "tool_error")


def test_capture_options_leave_out_arguments_and_results(server, make_client):
    log = make_client(server.url)
    app = MCPServer(
        "e2e-private", middleware=[mcplog.mcp.middleware(log, capture_arguments=False, capture_results=False)]
    )

    @app.tool()
    def private_lookup(ssn: str) -> str:
        return "secret for " + ssn

    async def scenario() -> None:
        async with mcp.Client(app) as mcp_client:
            await mcp_client.call_tool("private_lookup", {"ssn": "123-45"})

    anyio.run(scenario)
    assert log.flush(10).pending == 0
    records = [
        r for r in server.interactions("demo_mcp") if r["request_data"].get("tool") == "private_lookup"
    ]
    assert len(records) == 1
    assert records[0]["status"] == "completed"
    assert records[0]["request_data"] == {"tool": "private_lookup"}
    assert records[0]["result_data"] == {}
