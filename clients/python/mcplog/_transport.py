"""HTTP to the mcplog server: one persistent connection, owned by the worker thread."""

from __future__ import annotations

import contextlib
import http.client
import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ._classify import parse_retry_after

BATCH_PATH = "/api/v2/interactions/batch"
USER_AGENT = "mcplog-python/0.1.0"

# Bound on how much of an answer we read: a batch answer holds one small entry
# per event (at most 1000), so anything larger is not an mcplog answer.
RESPONSE_BYTES_MAX = 4 * 1024 * 1024


class TransportError(Exception):
    """The request may or may not have reached the server (refused, reset,
    timed out, closed without an answer, an answer too large to be the
    server's); the caller retries the same bytes."""


@dataclass(frozen=True)
class Response:
    status: int
    retry_after: float | None  # seconds, from the Retry-After header
    body: Any  # parsed JSON, or None when the body was not JSON


class HttpTransport:
    """Posts batch bodies. Not thread-safe: only the worker thread uses it."""

    def __init__(self, url: str, api_key: str, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"mcplog url must be http(s)://host[:port][/prefix], got {url!r}")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._conn: http.client.HTTPConnection | None = None

    def post_batch(self, body: bytes, *, partial: bool) -> Response:
        path = self._prefix + BATCH_PATH + ("?partial=true" if partial else "")
        reused = self._conn is not None
        try:
            return self._post(path, body)
        except (ConnectionError, http.client.RemoteDisconnected) as exc:
            if not reused:
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            # A kept-alive connection the server had already closed: the usual
            # HTTP client answer is one immediate retry on a new connection
            # (safe here, a resent batch is deduplicated by event_id).
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        try:
            return self._post(path, body)
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc

    def _post(self, path: str, body: bytes) -> Response:
        conn = self._connection()
        try:
            conn.request("POST", path, body=body, headers=self._headers)
            answer = conn.getresponse()
            raw = answer.read(RESPONSE_BYTES_MAX + 1)
        except (OSError, http.client.HTTPException):
            # Refused/reset connections, timeouts (socket.timeout is an
            # OSError), a server that closed without answering: the connection
            # is in an unknown state, never reuse it.
            self.close()
            raise
        if answer.length:
            self.close()
            # The connection ended before the length the answer declared: what it said is
            # unknown (a proxy cut it off), so it decides nothing.
            raise TransportError(f"HTTP {answer.status} answer cut off {answer.length} bytes short")
        if len(raw) > RESPONSE_BYTES_MAX:
            self.close()
            # Not an mcplog answer (a proxy's page, a wrong URL): it decides nothing.
            raise TransportError(f"HTTP {answer.status} answer larger than {RESPONSE_BYTES_MAX} bytes")
        if answer.will_close:
            self.close()
        retry_after = parse_retry_after(answer.getheader("Retry-After"), time.time())
        return Response(answer.status, retry_after, _parse_json(raw))

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
