"""mcplog middleware for fastmcp 4.x servers.

    from fastmcp import FastMCP
    from mcplog.fastmcp import McpLogMiddleware

    mcp = FastMCP("my-server", middleware=[McpLogMiddleware(client)])

In fastmcp a failing tool reaches middleware as an exception (``ToolError``
wrapping what the tool raised) and a cancelled call as the async library's
cancellation exception; both are recorded and re-raised unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext

from ._client import Client
from ._instrument import ToolCall, run_tool_call

__all__ = ["McpLogMiddleware"]

logger = logging.getLogger("mcplog")


class McpLogMiddleware(Middleware):
    """Records every ``tools/call`` as one mcplog interaction."""

    def __init__(
        self, client: Client, *, capture_arguments: bool = True, capture_results: bool = True
    ) -> None:
        self.client = client
        self.capture_arguments = capture_arguments
        self.capture_results = capture_results

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: CallNext[Any, Any]) -> Any:
        params = context.message
        call = ToolCall(
            self.client,
            str(getattr(params, "name", "")),
            getattr(params, "arguments", None),
            capture_arguments=self.capture_arguments,
            capture_results=self.capture_results,
        )
        return await run_tool_call(call, _session_of(context), lambda: call_next(context), _finish)


def _session_of(context: MiddlewareContext[Any]) -> Any:
    """The SDK's per-request ServerSession, through which fastmcp's
    ``Context.report_progress`` sends progress notifications; None outside a
    wire request (e.g. ``server.call_tool`` called directly)."""
    try:
        request_context = context.fastmcp_context.request_context if context.fastmcp_context else None
        return request_context.session if request_context is not None else None
    except Exception:  # a fastmcp change must not break tool calls; only SDK progress is lost
        logger.debug("mcplog: cannot find the request's session; SDK progress not recorded", exc_info=True)
        return None


def _finish(call: ToolCall, result: Any) -> None:
    """``result`` is a ``fastmcp.tools.ToolResult``."""
    content = [_dump(block) for block in (getattr(result, "content", None) or [])]
    if getattr(result, "is_error", False):
        # A tool may return ToolResult(is_error=True) instead of raising.
        texts = [
            block.get("text") for block in content if isinstance(block, dict) and block.get("type") == "text"
        ]
        call.fail(
            " ".join(t for t in texts if isinstance(t, str)) or "tool returned an error result", "tool_error"
        )
        return
    structured = getattr(result, "structured_content", None)
    call.complete(structured if isinstance(structured, dict) else {"content": content})


def _dump(block: Any) -> Any:
    dump = getattr(block, "model_dump", None)
    return dump(mode="json", by_alias=True, exclude_none=True) if callable(dump) else block
