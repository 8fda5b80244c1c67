"""Fixtures: the REAL mcplog server (binary from $MCPLOG_BIN), private servers, clients."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from _server import McplogServer, writer_key


@pytest.fixture(scope="session")
def mcplog_bin() -> str:
    binary = os.environ.get("MCPLOG_BIN")
    if not binary:
        pytest.fail(
            "MCPLOG_BIN is not set: point it at the mcplog server binary,"
            " e.g. MCPLOG_BIN=/tmp/mcplog-bin/mcplog"
        )
    if not os.access(binary, os.X_OK):
        pytest.fail(f"MCPLOG_BIN={binary!r} is not an executable file")
    return binary


@pytest.fixture(scope="session")
def server(mcplog_bin: str, tmp_path_factory: pytest.TempPathFactory):
    """One server shared by the tests; each test uses its own interaction ids
    (and its own mcp_id when it counts records)."""
    srv = McplogServer(mcplog_bin, tmp_path_factory.mktemp("mcplog")).start()
    yield srv
    srv.stop()


@pytest.fixture
def make_server(mcplog_bin: str, tmp_path: Path):
    """Factory for a private server (e.g. one started late on a fixed port)."""
    started: list[McplogServer] = []

    def make(port: int = 0) -> McplogServer:
        srv = McplogServer(mcplog_bin, tmp_path / f"srv{len(started)}", port)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def make_client():
    """mcplog.Client factory whose clients are closed after the test."""
    import mcplog

    clients: list[mcplog.Client] = []

    def make(url: str, mcp_id: str = "demo_mcp", **options: Any) -> mcplog.Client:
        client = mcplog.Client(url, writer_key(mcp_id), mcp_id, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close(timeout=0)
