"""The retry rules, row by row from clients/retry-cases.json: the table the
TypeScript package's suite runs too, which keeps the two packages' rules the same."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcplog._classify import (
    PartialUnsupported,
    Retry,
    Settled,
    Split,
    backoff_delay,
    classify,
    classify_failure,
    parse_retry_after,
)
from mcplog._transport import RESPONSE_BYTES_MAX, HttpTransport, TransportError

CASES = json.loads((Path(__file__).resolve().parents[2] / "retry-cases.json").read_text())


def rows(section: str) -> Any:
    return pytest.mark.parametrize("row", CASES[section], ids=[row["case"] for row in CASES[section]])


def ms(seconds: float | None) -> int:
    return round((seconds or 0.0) * 1000)


def described(decision: object) -> dict[str, Any]:
    """A decision in the table's terms."""
    if isinstance(decision, Settled):
        rejected = [
            {"index": r.index, "http_status": r.http_status, "code": r.code} for r in decision.rejected
        ]
        return {
            "decision": "settled",
            "delivered": list(decision.delivered),
            "rejected": rejected,
            "resend": list(decision.resend),
        }
    if isinstance(decision, Retry):
        return {"decision": "retry", "not_before_ms": ms(decision.retry_after)}
    if isinstance(decision, Split):
        return {"decision": "split"}
    assert isinstance(decision, PartialUnsupported), decision
    return {"decision": "partial_unsupported"}


def expected(row: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """The row's expectation; a rejection without a code leaves the code unchecked."""
    want = json.loads(json.dumps(row["expect"]))
    for wanted, actual in zip(want.get("rejected", []), got.get("rejected", []), strict=False):
        wanted.setdefault("code", actual["code"])
    return want


@rows("answers")
def test_answer(row: dict[str, Any]) -> None:
    retry_after = parse_retry_after(row.get("retry_after"), 0.0)
    got = described(classify(row["status"], retry_after, row.get("body"), row["events"], row["partial"]))
    assert got == expected(row, got)


@rows("retry_after")
def test_retry_after(row: dict[str, Any]) -> None:
    assert ms(parse_retry_after(row["header"], row["now_ms"] / 1000)) == row["expect_ms"]


@rows("delays")
def test_delay(row: dict[str, Any]) -> None:
    seconds = backoff_delay(
        row["attempt"],
        row["base_ms"] / 1000,
        row["max_ms"] / 1000,
        row["retry_after_ms"] / 1000 or None,
        row["random"],
    )
    assert abs(seconds * 1000 - row["expect_ms"]) <= 1


@rows("sent")
def test_sent(row: dict[str, Any]) -> None:
    with failing_server(row["failure"]) as url:
        # Short only where the timeout is the failure: elsewhere a slow machine must
        # not turn the failure under test into a timeout.
        transport = HttpTransport(url, "key", timeout=0.5 if row["failure"] == "timeout" else 10)
        try:
            response = transport.post_batch(b"[{}]", partial=True)
        except TransportError as exc:
            decision: object = classify_failure(exc)
        else:
            decision = classify(response.status, response.retry_after, response.body, 1, True)
        finally:
            transport.close()
    assert described(decision) == row["expect"]


@contextlib.contextmanager
def failing_server(kind: str) -> Iterator[str]:
    """A local socket failing the way ``kind`` names; yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    if kind == "refused":
        listener.close()  # nothing listens on the port any more
        yield url
        return
    done = threading.Event()
    thread = threading.Thread(target=_serve, args=(listener, kind, done), daemon=True)
    thread.start()
    try:
        yield url
    finally:
        done.set()
        thread.join(5)
        listener.close()


def _serve(listener: socket.socket, kind: str, done: threading.Event) -> None:
    listener.settimeout(0.1)
    while not done.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        with conn:
            path = _read_request(conn)  # all of it: closing on unread bytes would reset the connection
            _answer(conn, kind, path, done)


def _answer(conn: socket.socket, kind: str, path: str, done: threading.Event) -> None:
    if kind == "answer_too_large":
        size = RESPONSE_BYTES_MAX + 1
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        with contextlib.suppress(OSError):  # the client stops reading
            conn.sendall(b" " * size)
    elif kind == "closed_mid_answer":
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"st')
    elif kind == "timeout":
        done.wait(15)  # answers nothing until the client gave up
    elif kind == "redirect":
        status = "200 OK" if path == "/elsewhere" else "307 Temporary Redirect\r\nLocation: /elsewhere"
        body = b'{"status":"accepted"}'
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        conn.sendall(head.encode() + body)
    else:
        assert kind == "closed_without_answer", kind


def _read_request(conn: socket.socket) -> str:
    """Reads one request; its path."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:")), 0)
    while len(body) < length:
        body += conn.recv(65536)
    return lines[0].split()[1].decode()
