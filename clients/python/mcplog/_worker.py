"""The sender thread: takes batches off the queue, sends them, retries what the
server did not decide on, and settles everything else (delivered or rejected).
One batch is in flight at a time, in queue order. What each answer means is
``_classify``'s business; this module acts on its decisions."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._classify import (
    Decision,
    PartialUnsupported,
    Refusal,
    Retry,
    Settled,
    Split,
    backoff_delay,
    classify,
    classify_failure,
)
from ._options import Limits
from ._queue import EventQueue, Item
from ._transport import HttpTransport, TransportError
from ._warn import RateLimitedWarner

logger = logging.getLogger("mcplog")


@dataclass(frozen=True)
class Rejection:
    """What ``on_rejected`` receives when the server refuses an event."""

    event: dict[str, Any]  # the event exactly as it was sent
    http_status: int | None  # 422 invalid, 403 forbidden mcp_id, 409 event_id conflict, 413 too large...
    code: str | None  # the server's error code, e.g. "blank_id"
    message: str | None
    field: str | None


def batch_body(items: list[Item]) -> bytes:
    return b"[" + b",".join(item.data for item in items) + b"]"


class Sender:
    """Drains one EventQueue over HTTP on a daemon thread, started at the first event."""

    def __init__(
        self,
        queue: EventQueue,
        connect: Callable[[], HttpTransport],
        limits: Limits,
        warner: RateLimitedWarner,
        on_rejected: Callable[[Rejection], object] | None,
        *,
        partial: bool = True,
    ) -> None:
        self._queue = queue
        self._connect = connect
        self._limits = limits
        self._warner = warner
        self._on_rejected = on_rejected
        # Partial mode is tried first; a server that predates it answers 400
        # naming the "partial" parameter, and we fall back for good.
        self.partial = partial
        self._stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def ensure_running(self) -> None:
        """Start the thread unless it runs or the queue stops (inside a queue section)."""
        if self.thread is not None or self._queue.stopping:
            return
        thread = threading.Thread(target=self._run, name="mcplog-worker", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # e.g. "can't create new thread at interpreter shutdown"
            self._warner.warn("thread", "mcplog: cannot start the sender thread: %s", exc)
            return
        self.thread = thread

    def stop(self) -> threading.Thread | None:
        """Stop for good, cutting a retry backoff short; the thread, to join."""
        self._queue.stop()
        self._stop_event.set()
        return self.thread

    def _run(self) -> None:
        transport = self._connect()
        failures = 0
        try:
            while True:
                try:
                    batch = self._queue.take_batch()
                    if batch is None:
                        return
                    self._deliver(transport, batch)
                    failures = 0
                except Exception:
                    # A bug must not silently end delivery for the whole
                    # process: log it, back off, and resume. The unsettled
                    # events stay in flight and are sent again.
                    failures += 1
                    logger.exception("mcplog: unexpected error in the sender thread; continuing")
                    self._stop_event.wait(self._backoff(failures, None))
        finally:
            transport.close()

    def _deliver(self, transport: HttpTransport, batch: list[Item]) -> None:
        """Send ``batch`` until all its events are settled or the sender stops."""
        parts: deque[list[Item]] = deque([batch])
        attempt = 0
        while parts and not self._stop_event.is_set():
            part = parts[0]
            decision = self._send(transport, part)
            if isinstance(decision, Retry):
                attempt += 1
                self._wait_to_retry(attempt, decision, len(part))
                continue
            attempt = 0
            parts.popleft()
            parts.extendleft(reversed(self._apply(part, decision)))

    def _send(self, transport: HttpTransport, part: list[Item]) -> Decision:
        try:
            response = transport.post_batch(batch_body(part), partial=self.partial)
        except TransportError as exc:
            return classify_failure(exc)
        return classify(response.status, response.retry_after, response.body, len(part), self.partial)

    def _apply(self, part: list[Item], decision: Settled | Split | PartialUnsupported) -> list[list[Item]]:
        """Act on a decision; the parts to send next."""
        if isinstance(decision, PartialUnsupported):
            logger.info("mcplog: the server has no partial batch mode; using all-or-nothing batches")
            self.partial = False
            return [part]
        if isinstance(decision, Split):
            half = len(part) // 2
            return [part[:half], part[half:]]
        self._settle(part, decision)
        rest = [part[i] for i in decision.resend]
        return [rest] if rest else []

    def _wait_to_retry(self, attempt: int, decision: Retry, events: int) -> None:
        delay = self._backoff(attempt, decision.retry_after)
        self._warner.warn(
            "retry",
            "mcplog: sending %d events failed (%s); retrying in %.2fs",
            events,
            decision.reason,
            delay,
        )
        self._stop_event.wait(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        limits = self._limits
        return backoff_delay(attempt, limits.backoff_base, limits.backoff_max, retry_after, random.random())

    def _settle(self, part: list[Item], decision: Settled) -> None:
        # Report first, so that when flush() returns, on_rejected has run for
        # every rejection it counts.
        for refusal in decision.rejected:
            self._report(_rejection(part[refusal.index], refusal))
        delivered = [part[i] for i in decision.delivered]
        self._queue.settle(delivered, [part[refusal.index] for refusal in decision.rejected])

    def _report(self, rejection: Rejection) -> None:
        self._warner.warn(
            "rejected",
            "mcplog: the server rejected an event of interaction %r: HTTP %s %s: %s",
            rejection.event.get("interaction_id"),
            rejection.http_status,
            rejection.code,
            rejection.message,
        )
        if self._on_rejected is None:
            return
        try:
            self._on_rejected(rejection)
        except Exception:
            logger.exception("mcplog: the on_rejected callback raised")


def _rejection(item: Item, refusal: Refusal) -> Rejection:
    return Rejection(
        event=json.loads(item.data),
        http_status=refusal.http_status,
        code=refusal.code,
        message=refusal.message,
        field=refusal.field,
    )
