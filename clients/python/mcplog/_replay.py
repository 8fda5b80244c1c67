"""Reading the log back: ``GET /api/v2/events``, the replay stream, as typed items.

The stream is NDJSON. Each line is one of:
- an event: ``{"seq", "received_at", "key_id", "event"}`` -> :class:`ReplayEvent`;
- a gap: ``{"gap": {"after_seq", "next_seq", "reason"}}`` -> :class:`Gap`: no event holds a seq
  after ``after_seq`` and before ``next_seq``, and none ever will (``reason`` is ``"retention"``,
  ``"repair"`` or ``"cut"``, see the server's README, "Replay");
- a heartbeat (follow streams): ``{"heartbeat", "durable_seq"}`` -> :class:`Heartbeat`, yielded
  only when asked for;
- an error: ``{"error": {...}}``, which ends the stream -> :class:`ReplayError` is raised.
A stream the server cut short (no closing chunk: a damaged event, a shutdown) raises
:class:`ReplayError` too, so a partial export never looks whole.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Union

from ._transport import USER_AGENT

EVENTS_PATH = "/api/v2/events"
# The longest line the client accepts: an event is at most the server's event_bytes_max (1 MiB
# by default, at most 64 MiB) plus its envelope.
LINE_BYTES_MAX = 65 * 1024 * 1024

GapReason = Literal["retention", "repair", "cut"]


@dataclass(frozen=True)
class ReplayEvent:
    """One stored event: its seq, the server's receive time (Unix seconds), the key id that sent
    it, and the client's event as it was stored."""

    seq: int
    received_at: float
    key_id: str
    event: dict[str, Any]


@dataclass(frozen=True)
class Gap:
    """Seqs after ``after_seq`` and before ``next_seq`` that no event holds, and why."""

    after_seq: int
    next_seq: int
    reason: GapReason


@dataclass(frozen=True)
class Heartbeat:
    """A quiet follow stream is alive; ``durable_seq`` is the newest durable seq."""

    at: float
    durable_seq: int


ReplayItem = Union[ReplayEvent, Gap, Heartbeat]


class ReplayError(Exception):
    """The stream ended before its end: an error line (``code``, e.g. ``unreadable_event`` or
    ``shutting_down``), an HTTP error answer, or a cut connection. ``after_seq`` is where to
    resume, when known."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 after_seq: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.after_seq = after_seq


def replay(
    url: str,
    api_key: str,
    *,
    after_seq: int = 0,
    limit: int | None = None,
    mcp_id: str | None = None,
    follow: bool = False,
    heartbeats: bool = False,
    timeout: float | None = 60.0,
) -> Iterator[ReplayEvent | Gap | Heartbeat]:
    """Yields the log's events after ``after_seq`` in seq order, with a :class:`Gap` wherever seqs
    are missing, until the end (or ``limit`` events); with ``follow=True``, then each new event
    as it becomes durable, until the caller stops iterating or the server shuts down.

    ``timeout`` bounds each read, in seconds; a follow stream sends a heartbeat every 15 s by
    default, so keep it above the server's ``replay_heartbeat`` (``None``: no bound)."""
    if not isinstance(after_seq, int) or after_seq < 0:
        raise ValueError("after_seq must be a whole number >= 0")
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise ValueError("limit must be a whole number above 0")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"mcplog url must be http(s)://host[:port][/prefix], got {url!r}")
    path = _events_path(parts.path, after_seq=after_seq, limit=limit, mcp_id=mcp_id, follow=follow)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(
            "GET",
            path,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/x-ndjson",
                "User-Agent": USER_AGENT,
            },
        )
        answer = conn.getresponse()
        if answer.status != 200:
            raise _refused(answer)
        yield from _items(answer, after_seq, heartbeats)
    except (OSError, http.client.HTTPException) as exc:
        raise ReplayError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()


def _events_path(prefix: str, *, after_seq: int, limit: int | None, mcp_id: str | None, follow: bool) -> str:
    query: dict[str, str] = {"after_seq": str(after_seq)}
    if limit is not None:
        query["limit"] = str(limit)
    if mcp_id is not None:
        query["mcp_id"] = mcp_id
    if follow:
        query["follow"] = "true"
    return prefix.rstrip("/") + EVENTS_PATH + "?" + urllib.parse.urlencode(query)


def _refused(answer: http.client.HTTPResponse) -> ReplayError:
    body = answer.read(64 * 1024)
    error = _json(body)
    details = error.get("error") if isinstance(error, dict) else None
    code = details.get("code") if isinstance(details, dict) else None
    message = details.get("message") if isinstance(details, dict) else body[:200].decode(errors="replace")
    return ReplayError(f"replay answered {answer.status}: {message}", code=code, status=answer.status)


def _items(
    answer: http.client.HTTPResponse, after_seq: int, heartbeats: bool
) -> Iterator[ReplayEvent | Gap | Heartbeat]:
    """The stream's items, line by line; ReplayError when it is cut inside one."""
    reached = after_seq
    while True:
        try:
            raw = answer.readline(LINE_BYTES_MAX)
        except http.client.IncompleteRead as exc:
            raise ReplayError("the replay stream was cut before its end", after_seq=reached) from exc
        if not raw:
            return
        if not raw.endswith(b"\n"):
            raise ReplayError("the replay stream ended inside a line", after_seq=reached)
        item = parse_line(raw)
        if item is None:
            continue
        if isinstance(item, ReplayEvent):
            reached = item.seq
        elif isinstance(item, Gap):
            reached = max(reached, item.next_seq - 1)
        elif not heartbeats:
            continue
        yield item


def parse_line(raw: bytes | str) -> ReplayEvent | Gap | Heartbeat | None:
    """One line of the stream as a typed item; ``None`` for a blank line or one of a kind this
    client does not know (a newer server's). Raises :class:`ReplayError` for an error line."""
    line = _json(raw)
    if not isinstance(line, dict):
        return None
    if "seq" in line:
        return ReplayEvent(
            seq=int(line["seq"]),
            received_at=float(line["received_at"]),
            key_id=str(line["key_id"]),
            event=line["event"],
        )
    gap = line.get("gap")
    if isinstance(gap, dict):
        return Gap(after_seq=int(gap["after_seq"]), next_seq=int(gap["next_seq"]), reason=gap["reason"])
    if "heartbeat" in line:
        return Heartbeat(at=float(line["heartbeat"]), durable_seq=int(line["durable_seq"]))
    error = line.get("error")
    if isinstance(error, dict):
        after = error.get("after_seq")
        raise ReplayError(
            str(error.get("message", "the replay stream ended with an error")),
            code=error.get("code"),
            after_seq=after if isinstance(after, int) else None,
        )
    return None


def _json(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
