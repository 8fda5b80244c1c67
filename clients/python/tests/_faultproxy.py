"""A tiny HTTP proxy for fault tests, in front of the real server.

For each request a policy decides: forward it, answer it itself, or forward
it and then hang up without answering (the server stored the events, the
client never hears so).
"""

from __future__ import annotations

import http.client
import http.server
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


FORWARD = "forward"
FORWARD_THEN_HANG_UP = "forward_then_hang_up"


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic()
    path: str
    body: bytes


# policy(index of the request, path) -> FORWARD | FORWARD_THEN_HANG_UP | Answer
Policy = Callable[[int, str], "str | Answer"]


class FaultProxy:
    def __init__(self, upstream: str, policy: Policy) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.policy = policy
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real server

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with proxy._lock:
                    index = len(proxy.seen)
                    proxy.seen.append(Seen(time.monotonic(), self.path, body))
                decision = proxy.policy(index, self.path)
                if isinstance(decision, Answer):
                    self._answer(decision)
                    return
                answer = proxy._forward(self.path, dict(self.headers), body)
                if decision == FORWARD_THEN_HANG_UP:
                    self.close_connection = True  # closes the socket, no answer written
                    return
                self._answer(answer)

            def _answer(self, answer: Answer) -> None:
                self.send_response(answer.status)
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _forward(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        conn = http.client.HTTPConnection(*self.upstream, timeout=10)
        try:
            keep = {k: v for k, v in headers.items() if k.lower() in ("authorization", "content-type")}
            conn.request("POST", path, body=body, headers=keep)
            response = conn.getresponse()
            data = response.read()
            passed = tuple(
                (k, v) for k, v in response.getheaders() if k.lower() in ("content-type", "retry-after")
            )
            return Answer(response.status, data, passed)
        finally:
            conn.close()

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
