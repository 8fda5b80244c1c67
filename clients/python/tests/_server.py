"""The REAL mcplog server as a subprocess, and HTTP helpers to read back what it stored."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ADMIN_KEY = "test-admin-key-0123456789abcdef"
WRITER_KEY = "test-writer-key-0123456789abcdef"  # mcp_id demo_mcp

# One writer key per mcp_id, so each test that counts records owns its mcp_id.
MCP_IDS = ["demo_mcp", "fastmcp_mcp", "sdk_auto_mcp", "sdk_legacy_mcp", "exit_mcp", "fork_mcp"]


def writer_key(mcp_id: str) -> str:
    return WRITER_KEY if mcp_id == "demo_mcp" else f"test-writer-{mcp_id}-0123456789abcdef"


CONFIG = (
    "[static_api_keys]\n"
    + "".join(f'"{writer_key(m)}" = {{ mcp_id = "{m}", role = "writer" }}\n' for m in MCP_IDS)
    + f'"{ADMIN_KEY}" = {{ role = "admin" }}\n'
    # The server's own redaction would rewrite the client's markers; these tests check what the
    # client sends, so the server stores it as sent.
    + "[redaction]\nenabled = false\n"
)

LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
START_TIMEOUT = 15.0


def unique(prefix: str) -> str:
    """A fresh interaction id, so tests sharing a server never collide."""
    import mcplog

    return f"{prefix}-{mcplog.uuid7()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class McplogServer:
    """One mcplog process on 127.0.0.1, with a private data dir."""

    def __init__(self, binary: str, workdir: Path, port: int = 0) -> None:
        self.binary = binary
        self.workdir = workdir
        self.requested_port = port
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "mcplog.toml").write_text(CONFIG)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> McplogServer:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "serve",
                "--data-dir",
                str(self.workdir / "data"),
                "--bind",
                f"127.0.0.1:{self.requested_port}",
                "--config",
                str(self.workdir / "mcplog.toml"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        port_seen = threading.Event()
        threading.Thread(target=self._drain_log, args=(port_seen,), daemon=True).start()
        if not port_seen.wait(START_TIMEOUT):
            self.stop()
            raise RuntimeError(f"mcplog did not log its port; see {self.workdir / 'server.log'}")
        self._wait_ready()
        return self

    def _drain_log(self, port_seen: threading.Event) -> None:
        # Keep reading stderr for the process' whole life, so it never blocks
        # on a full pipe; the log stays in a file for post-mortems.
        assert self.proc is not None and self.proc.stderr is not None
        with open(self.workdir / "server.log", "ab") as log:
            for line in self.proc.stderr:
                log.write(line)
                log.flush()
                match = LISTENING.search(line.decode(errors="replace"))
                if match and not port_seen.is_set():
                    self.port = int(match.group(1))
                    port_seen.set()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("mcplog never became ready")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    # ---- reading back -------------------------------------------------------

    def request(
        self, method: str, path: str, body: bytes | None = None, key: str = ADMIN_KEY
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(
            self.url + path,
            data=body,
            method=method,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def record(self, interaction_id: str) -> dict[str, Any]:
        return self.get_json(f"/api/v2/interactions/{urllib.request.quote(interaction_id, safe='')}")

    def events_raw(self, interaction_id: str) -> bytes:
        status, body = self.request(
            "GET", f"/api/v2/interactions/{urllib.request.quote(interaction_id, safe='')}/events"
        )
        assert status == 200, body
        return body

    def events(self, interaction_id: str) -> list[dict[str, Any]]:
        return [e["event"] for e in json.loads(self.events_raw(interaction_id))["events"]]

    def interactions(self, mcp_id: str) -> list[dict[str, Any]]:
        return self.get_json(f"/api/v2/interactions?mcp_id={mcp_id}&limit=100")["interactions"]

    def replay(self) -> list[dict[str, Any]]:
        """Every stored event, in order (admin NDJSON replay)."""
        status, body = self.request("GET", "/api/v2/events")
        assert status == 200, body
        lines = (json.loads(line) for line in body.splitlines() if line.strip())
        return [line["event"] for line in lines if isinstance(line, dict) and "event" in line]
