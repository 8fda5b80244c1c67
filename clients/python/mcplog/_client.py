"""The Client: the application-facing API.

``emit`` validates, redacts and serializes on the caller's thread (cheap, never
raises, never waits) and offers the bytes to the bounded queue (``_queue``); a
sender thread (``_worker``) drains it over HTTP, acting on what each answer means
(``_classify``); exit and fork are handled in ``_lifecycle``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import _lifecycle
from ._events import DEFAULT_PAYLOAD_BYTES_MAX, MISSING, build_event, call_arguments
from ._options import DEFAULT_BATCH_MAX_BYTES, DEFAULT_QUEUE_MAX_BYTES, Limits, require
from ._queue import EventQueue, FlushResult
from ._replay import Gap, Heartbeat, ReplayEvent, replay
from ._transport import HttpTransport
from ._warn import RateLimitedWarner
from ._worker import Rejection, Sender

__all__ = ["Client", "FlushResult", "Rejection"]

logger = logging.getLogger("mcplog")


class Client:
    """Sends interaction events to an mcplog server without ever blocking the caller.

    See the package README for every option and its unit.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        mcp_id: str,
        *,
        queue_max_events: int = 10_000,
        queue_max_bytes: int = DEFAULT_QUEUE_MAX_BYTES,
        batch_max_events: int = 100,
        batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES,
        linger: float = 0.05,
        request_timeout: float = 10.0,
        backoff_base: float = 0.1,
        backoff_max: float = 10.0,
        exit_flush_timeout: float = 5.0,
        payload_bytes_max: int = DEFAULT_PAYLOAD_BYTES_MAX,
        redact: Iterable[str] = (),
        on_rejected: Callable[[Rejection], object] | None = None,
    ) -> None:
        require(isinstance(mcp_id, str) and mcp_id, "mcp_id must be a non-empty str")
        require(isinstance(api_key, str) and api_key, "api_key must be a non-empty str")
        require(
            isinstance(redact, Iterable) and not isinstance(redact, str), "redact must be a list of names"
        )
        self._limits = Limits(
            queue_max_events=queue_max_events,
            queue_max_bytes=queue_max_bytes,
            batch_max_events=batch_max_events,
            batch_max_bytes=batch_max_bytes,
            linger=linger,
            request_timeout=request_timeout,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            exit_flush_timeout=exit_flush_timeout,
            payload_bytes_max=payload_bytes_max,
        )
        self.url = url
        self.mcp_id = mcp_id
        self._api_key = api_key
        HttpTransport(url, api_key, request_timeout)  # validates the URL now, not in the sender
        self._redact = frozenset(str(name).casefold() for name in redact)
        self._on_rejected = on_rejected
        self._fresh_state(closed=False, partial=True)
        _lifecycle.register(self)

    def _reset_state(self) -> None:
        """In a forked child (see ``_lifecycle``): being closed, and whether the
        server takes partial batches, carry over; the rest starts afresh."""
        self._fresh_state(closed=self._queue.closed, partial=self._sender.partial)

    def _fresh_state(self, *, closed: bool, partial: bool) -> None:
        """A new queue, counters, locks and no sender thread."""
        self._warner = RateLimitedWarner()
        self._queue = EventQueue(self._limits, self._warner, closed=closed)
        self._sender = Sender(
            self._queue, self._connect, self._limits, self._warner, self._on_rejected, partial=partial
        )
        self._queue.on_admit = self._sender.ensure_running

    def _connect(self) -> HttpTransport:
        return HttpTransport(self.url, self._api_key, self._limits.request_timeout)

    def replay(self, **options: Any) -> Iterator[ReplayEvent | Gap | Heartbeat]:
        """:func:`mcplog.replay` with this client's url and key (a writer key reads its own
        mcp_id only): events in seq order, a :class:`mcplog.Gap` wherever seqs are missing."""
        return replay(self.url, self._api_key, **options)

    def emit(
        self, action: str = MISSING, interaction_id: str = MISSING, /, *extra: Any, **fields: Any
    ) -> bool:
        """``emit(action, interaction_id, **fields)``: queue one event; never
        blocks on I/O and never raises.

        ``fields``: the payload field for the action (``request_data``,
        ``progress_data``, ``result_data``, ``error_data`` or ``cancel_data``),
        and optionally ``timestamp`` (float seconds since the epoch) and
        ``event_id``. Returns True if queued, False if dropped (and counted).

        The parameters are positional-only and ``*extra`` exists so that a call
        of any other shape (a positional payload dict, a missing id, an
        argument given twice) reaches the body, where it is dropped, counted
        and warned about, instead of raising TypeError at the call.
        """
        try:  # never raise into the instrumented application
            try:
                data: bytes | None = self._serialize(action, interaction_id, extra, fields)
            except Exception as exc:
                self._warner.warn("invalid", "mcplog: emit() dropped an invalid event: %s", exc)
                data = None  # counted as dropped
            return self._queue.offer(data)
        except Exception as exc:  # a bug in mcplog itself
            self._warner.warn("internal", "mcplog: emit() failed unexpectedly: %r", exc)
            return False

    def _serialize(
        self, action: object, interaction_id: object, extra: tuple[Any, ...], fields: dict[str, Any]
    ) -> bytes:
        action, interaction_id = call_arguments(action, interaction_id, extra, fields)
        return build_event(
            action,
            interaction_id,
            self.mcp_id,
            fields,
            redact_names=self._redact,
            payload_bytes_max=self._limits.payload_bytes_max,
        )

    def flush(self, timeout: float = 10.0) -> FlushResult:
        """Wait until every event emitted before this call is delivered or
        rejected, or ``timeout`` seconds pass; return the counters."""
        deadline = time.monotonic() + max(0.0, timeout)
        if self._sender.thread is threading.current_thread():
            # From on_rejected, on the sender thread: waiting for ourselves would only time out.
            return self._queue.result()
        return self._queue.wait_settled(deadline)

    def close(self, timeout: float = 5.0) -> FlushResult:
        """Flush for up to ``timeout`` seconds, then stop the sender. Later
        emits are dropped (and counted). Returns the final counters."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._queue.section() as nested:
            self._queue.closed = True
            if nested:
                # E.g. a SIGTERM handler that interrupted this thread inside the
                # client: nothing is sent until that section resumes, so do not
                # wait or stop the sender; the exit flush still delivers the rest.
                return self._queue.result_locked()
        self.flush(timeout)
        thread = self._sender.stop()
        _lifecycle.unregister(self)
        if thread is not None and thread is not threading.current_thread():
            # The sender may be inside an HTTP request (up to request_timeout);
            # it is a daemon thread, so do not wait past the caller's timeout.
            thread.join(max(0.0, deadline - time.monotonic()))
        return self._queue.result()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- called by _lifecycle at interpreter exit ------------------------------

    def _begin_exit(self) -> None:
        """Send what is queued now, without lingering, so that every client's
        sender delivers while the exit flush waits for another client."""
        self._queue.begin_exit()

    def _flush_at_exit(self, exit_started: float) -> None:
        """Wait until ``exit_flush_timeout`` seconds after ``exit_started``."""
        with self._queue.section():
            # Not "closed": a close() from a signal handler could not wait (see
            # close), so what it left queued is delivered here.
            if self._queue.stopping or self._queue.lowest_unsettled_locked() == math.inf:
                return
        timeout = self._limits.exit_flush_timeout
        result = self.flush(max(0.0, exit_started + timeout - time.monotonic()))
        self._sender.stop()
        if result.pending:
            logger.warning(
                "mcplog: exiting with %d events not delivered to %s after waiting %.1fs "
                "(delivered=%d rejected=%d dropped=%d)",
                result.pending,
                self.url,
                timeout,
                result.delivered,
                result.rejected,
                result.dropped,
            )
