"""mcplog middleware for servers built on the official ``mcp`` 2.x SDK.

    from mcp.server.mcpserver import MCPServer
    import mcplog.mcp

    server = MCPServer("my-server", middleware=[mcplog.mcp.middleware(client)])

It is context-tier ``ServerMiddleware``: it sees every inbound message and
instruments ``tools/call`` requests only. In this SDK a tool that raises does
not raise through middleware: ``MCPServer`` turns it into a result with
``isError: true``, which is recorded as ``interaction_error``. Protocol errors
(``MCPError``, e.g. invalid params) and cancellation do arrive as exceptions;
they are recorded and re-raised unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ._client import Client
from ._instrument import ToolCall, run_tool_call

__all__ = ["middleware"]

Middleware = Callable[[Any, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]


def middleware(client: Client, *, capture_arguments: bool = True, capture_results: bool = True) -> Middleware:
    """Return a ``ServerMiddleware`` recording every tool call as one interaction."""

    async def mcplog_middleware(ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        # ctx is a mcp.server.context.ServerRequestContext; params are the raw
        # wire params (not validated yet). Notifications have no request_id.
        if ctx.method != "tools/call" or ctx.request_id is None:
            return await call_next(ctx)
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        call = ToolCall(
            client,
            str(params.get("name", "")),
            params.get("arguments"),
            capture_arguments=capture_arguments,
            capture_results=capture_results,
        )
        return await run_tool_call(call, getattr(ctx, "session", None), lambda: call_next(ctx), _finish)

    return mcplog_middleware


def _finish(call: ToolCall, result: Any) -> None:
    """``result`` is the handler's result already shaped for the wire (a dict
    with camelCase keys), or a pydantic model if another middleware returned one."""
    dump = getattr(result, "model_dump", None)
    if callable(dump):
        result = dump(by_alias=True, mode="json", exclude_none=True)
    if not isinstance(result, Mapping):
        call.complete({})
        return
    content = result.get("content")
    if result.get("isError") is True:
        texts = [b.get("text") for b in content or [] if isinstance(b, Mapping) and b.get("type") == "text"]
        call.fail(
            " ".join(t for t in texts if isinstance(t, str)) or "tool returned an error result", "tool_error"
        )
        return
    structured = result.get("structuredContent")
    if isinstance(structured, Mapping):
        call.complete(structured)
    elif content is not None:
        call.complete({"content": content})
    else:  # not a CallToolResult, e.g. an input-required round (SEP-2322)
        call.complete(dict(result))
