"""Python client for mcplog, the append-only interaction log for MCP servers.

    import mcplog

    client = mcplog.Client("http://127.0.0.1:8080", api_key, "my_mcp")
    client.emit("start", "call-1", request_data={"tool": "search"})

Server integrations live in ``mcplog.fastmcp`` (fastmcp 4.x) and ``mcplog.mcp``
(the official mcp 2.x SDK); importing this package imports neither.
"""

from ._client import Client, FlushResult, Rejection
from ._context import progress
from ._events import uuid7
from ._replay import Gap, Heartbeat, ReplayError, ReplayEvent, ReplayItem, replay

__all__ = [
    "Client",
    "FlushResult",
    "Gap",
    "Heartbeat",
    "Rejection",
    "ReplayError",
    "ReplayEvent",
    "ReplayItem",
    "progress",
    "replay",
    "uuid7",
]
__version__ = "0.1.0"
