"""The Client: a bounded in-memory queue drained by one background worker thread.

Threading model. All mutable state below is guarded by ``self._lock``:
``emit`` (any thread) appends to ``_queue``; the worker moves a batch from the
head of ``_queue`` to ``_inflight``, sends it without holding the lock, and
removes events from ``_inflight`` as the server settles them (delivered or
rejected). Events are therefore settled in emit order, batch by batch, which
lets ``flush`` wait for "everything emitted before the call" by comparing
sequence numbers. Two conditions share the lock: ``_work_cv`` wakes the worker,
``_done_cv`` wakes ``flush`` callers.

Re-entry. The lock is taken only through ``_section``, and is re-entrant: a
signal handler (or a finalizer, or a logging handler) that calls ``emit`` on a
thread already inside a section must not deadlock. Such a nested call must
not touch the state either, which the interrupted section may be half-way
through updating, nor wait (waiting releases the interrupted section's hold
too). So a nested ``emit`` hands its event to ``_handoff``, which the
interrupted section admits when it leaves, and a nested ``flush`` or
``close`` returns without waiting.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._events import DEFAULT_PAYLOAD_BYTES_MAX, InvalidEvent, build_event
from ._replay import Gap, Heartbeat, ReplayEvent, replay
from ._transport import HttpTransport, Response, TransportError
from ._warn import RateLimitedWarner

logger = logging.getLogger("mcplog")

_MIB = 1024 * 1024
DEFAULT_QUEUE_MAX_BYTES = 16 * _MIB
# backoff_base and backoff_max below this would retry an unreachable server in
# a tight loop (a zero ceiling makes every backoff delay zero).
MIN_BACKOFF_SECONDS = 0.001

# emit()'s "argument not passed", told apart from an explicit None. Any-typed so
# it can default the str parameters.
_MISSING: Any = object()


class FlushResult(NamedTuple):
    """Event counters of one Client since it was created (or since fork, in a child)."""

    delivered: int  # stored by the server (including duplicates of a retried send)
    rejected: int  # refused by the server for good; never retried
    dropped: int  # never sent: queue full, client closed, or an invalid emit() call
    pending: int  # queued or being sent right now


@dataclass(frozen=True)
class Rejection:
    """What ``on_rejected`` receives when the server refuses an event."""

    event: dict[str, Any]  # the event exactly as it was sent
    http_status: int | None  # 422 invalid, 403 forbidden mcp_id, 409 event_id conflict, 413 too large...
    code: str | None  # the server's error code, e.g. "blank_id"
    message: str | None
    field: str | None


@dataclass(frozen=True)
class _Item:
    seq: int  # emit order, 1-based; used by flush()
    data: bytes  # the serialized event, resent byte-identical on retries


@dataclass
class _Outcome:
    """What to do after one answer: retry the same part later, or move on
    (sending ``resend`` parts next, e.g. the halves of a batch that was too large)."""

    retry: bool = False
    retry_after: float | None = None
    reason: str = ""
    resend: tuple[list[_Item], ...] = ()


def _batch_body(items: list[_Item]) -> bytes:
    return b"[" + b",".join(item.data for item in items) + b"]"


def _retryable(status: int) -> bool:
    # 429/503 are the server's "come back later" (with Retry-After); 408 is a
    # timeout; other 5xx (507 disk full, a proxy's 502/504) are not about the
    # events themselves, so sending them again later is right.
    return status in (408, 429) or status >= 500


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
        batch_max_bytes: int = 1 * _MIB,
        linger: float = 0.05,
        request_timeout: float = 10.0,
        backoff_base: float = 0.1,
        backoff_max: float = 10.0,
        exit_flush_timeout: float = 5.0,
        payload_bytes_max: int = DEFAULT_PAYLOAD_BYTES_MAX,
        redact: Iterable[str] = (),
        on_rejected: Callable[[Rejection], object] | None = None,
    ) -> None:
        _require(isinstance(mcp_id, str) and mcp_id, "mcp_id must be a non-empty str")
        _require(isinstance(api_key, str) and api_key, "api_key must be a non-empty str")
        _require(
            isinstance(redact, Iterable) and not isinstance(redact, str), "redact must be a list of names"
        )
        _check_sizes(
            queue_max_events=queue_max_events,
            queue_max_bytes=queue_max_bytes,
            batch_max_events=batch_max_events,
            batch_max_bytes=batch_max_bytes,
            payload_bytes_max=payload_bytes_max,
        )
        _check_seconds(
            linger=linger,
            request_timeout=request_timeout,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            exit_flush_timeout=exit_flush_timeout,
        )
        _check_backoff(backoff_base=backoff_base, backoff_max=backoff_max)

        self.url = url
        self.mcp_id = mcp_id
        self._api_key = api_key
        HttpTransport(url, api_key, request_timeout)  # validates the URL now, not in the worker
        self._queue_max_events = queue_max_events
        self._queue_max_bytes = queue_max_bytes
        self._batch_max_events = batch_max_events
        self._batch_max_bytes = batch_max_bytes
        self._linger = float(linger)
        self._request_timeout = float(request_timeout)
        self._backoff_base = float(backoff_base)
        self._backoff_max = float(backoff_max)
        self._exit_flush_timeout = float(exit_flush_timeout)
        self._payload_bytes_max = payload_bytes_max
        self._redact = frozenset(str(name).casefold() for name in redact)
        self._on_rejected = on_rejected
        # Partial mode is tried first; a server that predates it answers 400
        # naming the "partial" parameter, and we fall back for good.
        self._partial = True
        self._closed = False
        self._reset_state()
        _register(self)

    def replay(self, **options: Any) -> Iterator[ReplayEvent | Gap | Heartbeat]:
        """:func:`mcplog.replay` with this client's url and key (a writer key reads its own
        mcp_id only): events in seq order, a :class:`mcplog.Gap` wherever seqs are missing."""
        return replay(self.url, self._api_key, **options)

    # ---- state ---------------------------------------------------------

    def _reset_state(self) -> None:
        """Fresh queue, counters, locks and no worker: at creation, and in a
        forked child, where the parent's worker thread does not exist and its
        locks may have been held by threads that are gone."""
        self._lock = threading.RLock()  # re-entrant, see "Re-entry" above; only via _section
        self._work_cv = threading.Condition(self._lock)
        self._done_cv = threading.Condition(self._lock)
        self._holder: int | None = None  # ident of the thread inside a section, not waiting
        self._handoff: deque[bytes | None] = deque()  # left by nested emits for the holder to admit
        self._stop_event = threading.Event()
        self._warner = RateLimitedWarner()
        self._queue: deque[_Item] = deque()
        self._queued_bytes = 0
        self._inflight: list[_Item] = []
        self._last_seq = 0
        self._delivered = 0
        self._rejected = 0
        self._dropped = 0
        self._flush_waiters = 0
        self._worker_idle = False  # worker waits for the first event of a batch
        self._lingering = False  # worker waits for a batch to fill up
        self._stopping = False
        self._exiting = False  # the exit flush has begun: send without lingering
        self._worker: threading.Thread | None = None

    def _result_locked(self) -> FlushResult:
        # len(), not iteration: a nested emit may append to _handoff at any
        # point. A handed-off event is pending until it is admitted (or dropped).
        return FlushResult(
            self._delivered,
            self._rejected,
            self._dropped,
            len(self._queue) + len(self._inflight) + len(self._handoff),
        )

    @contextlib.contextmanager
    def _section(self) -> Iterator[bool]:
        """Hold the lock; yield True if this thread was already inside a section
        (re-entered, e.g. by a signal handler: see "Re-entry" above)."""
        with self._lock:
            if self._holder == threading.get_ident():
                yield True
                return
            # A handler running before the next line is not nested: nothing has
            # been changed yet, so it may admit its event itself.
            self._holder = threading.get_ident()
            try:
                yield False
            finally:
                self._leave_locked()

    def _leave_locked(self) -> bool:
        """End this thread's outermost section (or pause it, for a wait): admit
        what nested emits handed off, then clear ``_holder``. Returns whether
        anything was admitted."""
        holder = self._holder
        admitted = False
        try:
            while True:
                while self._handoff:
                    self._warn_dropped(self._admit_locked(self._handoff.popleft()))
                    admitted = True
                self._holder = None
                # A handler that ran just before the line above handed off its
                # event too; one that runs after it admits its own.
                if not self._handoff:
                    return admitted
                self._holder = holder
        finally:
            self._holder = None

    def _wait_locked(self, cv: threading.Condition, timeout: float | None = None) -> None:
        """``cv.wait`` for an outermost section; callers loop on their condition,
        so returning early is fine. While waiting the lock is free and this
        thread is not "inside": a signal handler then takes the lock normally."""
        try:
            if not self._leave_locked():  # events just admitted may be what we wait for
                cv.wait(timeout)
        finally:
            self._holder = threading.get_ident()

    # ---- public API ----------------------------------------------------

    def emit(
        self, action: str = _MISSING, interaction_id: str = _MISSING, /, *extra: Any, **fields: Any
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
            return self._enqueue(data)
        except Exception as exc:  # a bug in mcplog itself
            self._warner.warn("internal", "mcplog: emit() failed unexpectedly: %r", exc)
            return False

    def flush(self, timeout: float = 10.0) -> FlushResult:
        """Wait until every event emitted before this call is delivered or
        rejected, or ``timeout`` seconds pass; return the counters."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._section() as nested:
            if nested or self._worker is threading.current_thread():
                # Nested (e.g. from a signal handler): this thread holds the lock
                # in the section it interrupted, so nothing could settle. On the
                # worker (from on_rejected): waiting for ourselves would only time out.
                return self._result_locked()
            target = self._last_seq
            self._flush_waiters += 1
            self._work_cv.notify()  # cut a linger short
            try:
                while self._lowest_unsettled_locked() <= target and not self._stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wait_locked(self._done_cv, remaining)
            finally:
                self._flush_waiters -= 1
            return self._result_locked()

    def close(self, timeout: float = 5.0) -> FlushResult:
        """Flush for up to ``timeout`` seconds, then stop the worker. Later
        emits are dropped (and counted). Returns the final counters."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._section() as nested:
            self._closed = True
            if nested:
                # E.g. a SIGTERM handler that interrupted this thread inside the
                # client: nothing is sent until that section resumes, so do not
                # wait or stop the worker; the exit flush still delivers the rest.
                return self._result_locked()
        self.flush(timeout)
        worker = self._stop_worker()
        _unregister(self)
        if worker is not None and worker is not threading.current_thread():
            # The worker may be inside an HTTP request (up to request_timeout);
            # it is a daemon thread, so do not wait past the caller's timeout.
            worker.join(max(0.0, deadline - time.monotonic()))
        with self._section():
            return self._result_locked()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- emit side -------------------------------------------------------

    def _serialize(
        self, action: object, interaction_id: object, extra: tuple[Any, ...], fields: dict[str, Any]
    ) -> bytes:
        action, interaction_id = _call_arguments(action, interaction_id, extra, fields)
        return build_event(
            action,
            interaction_id,
            self.mcp_id,
            fields,
            redact_names=self._redact,
            payload_bytes_max=self._payload_bytes_max,
        )

    def _enqueue(self, data: bytes | None) -> bool:
        """Admit one serialized event; None counts an invalid emit() as dropped."""
        with self._section() as nested:
            if nested:
                # This thread was interrupted inside the client: the section it
                # was in admits the event when it leaves (and counts and warns
                # if the queue is full by then).
                self._handoff.append(data)
                return data is not None
            reason = self._admit_locked(data)
        self._warn_dropped(reason)  # outside the lock: logging may be slow
        return reason is None

    def _admit_locked(self, data: bytes | None) -> str | None:
        """Queue ``data``, or count it as dropped and return why."""
        if data is None:
            reason = "invalid"
        elif self._closed:
            reason = "closed"
        elif (
            len(self._queue) >= self._queue_max_events
            or self._queued_bytes + len(data) > self._queue_max_bytes
        ):
            reason = "full"
        else:
            self._last_seq += 1
            self._queue.append(_Item(self._last_seq, data))
            self._queued_bytes += len(data)
            self._ensure_worker_locked()
            if self._worker_idle or (self._lingering and self._batch_ready_locked()):
                self._work_cv.notify()
            return None
        self._dropped += 1
        return reason

    def _warn_dropped(self, reason: str | None) -> None:
        # "invalid" was already warned about, with the reason, by emit().
        if reason == "closed":
            self._warner.warn("closed", "mcplog: emit() after close(); event dropped")
        elif reason == "full":
            self._warner.warn(
                "full",
                "mcplog: queue full (%d events / %d bytes max); event dropped",
                self._queue_max_events,
                self._queue_max_bytes,
            )

    def _ensure_worker_locked(self) -> None:
        if self._worker is not None or self._stopping:
            return
        worker = threading.Thread(target=self._run, name="mcplog-worker", daemon=True)
        try:
            worker.start()
        except RuntimeError as exc:  # e.g. "can't create new thread at interpreter shutdown"
            self._warner.warn("thread", "mcplog: cannot start the sender thread: %s", exc)
            return
        self._worker = worker

    # ---- worker side -------------------------------------------------------

    def _run(self) -> None:
        transport = HttpTransport(self.url, self._api_key, self._request_timeout)
        failures = 0
        try:
            while True:
                try:
                    batch = self._take_batch()
                    if batch is None:
                        return
                    self._deliver(transport, batch)
                    failures = 0
                except Exception:
                    # A bug must not silently end delivery for the whole
                    # process: log it, back off, and resume. The unsettled
                    # events stay in _inflight and are sent again.
                    failures += 1
                    logger.exception("mcplog: unexpected error in the sender thread; continuing")
                    self._stop_event.wait(self._backoff_delay(failures, None))
        finally:
            transport.close()

    def _take_batch(self) -> list[_Item] | None:
        """Block until a batch is ready; None when the client is stopping."""
        with self._section():
            if self._stopping:
                return None
            if self._inflight:  # left over by an unexpected error: resend it
                return list(self._inflight)
            self._worker_idle = True
            try:
                while not self._queue and not self._stopping:
                    self._wait_locked(self._work_cv)
            finally:
                self._worker_idle = False
            if self._stopping:
                return None
            self._linger_locked()
            self._inflight = self._pop_batch_locked()
            return list(self._inflight)

    def _batch_ready_locked(self) -> bool:
        return (
            self._stopping
            or self._exiting
            or self._flush_waiters > 0
            or len(self._queue) >= self._batch_max_events
            or self._queued_bytes >= self._batch_max_bytes
        )

    def _linger_locked(self) -> None:
        """Wait up to ``linger`` seconds for more events, so a burst goes out
        as one request instead of many."""
        deadline = time.monotonic() + self._linger
        self._lingering = True
        try:
            while not self._batch_ready_locked():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._wait_locked(self._work_cv, remaining)
        finally:
            self._lingering = False

    def _pop_batch_locked(self) -> list[_Item]:
        batch: list[_Item] = []
        size = 2  # the enclosing brackets
        while self._queue and len(batch) < self._batch_max_events:
            item = self._queue[0]
            added = len(item.data) + (1 if batch else 0)  # comma separator
            if batch and size + added > self._batch_max_bytes:
                break  # an oversized single event still goes, alone
            self._queue.popleft()
            self._queued_bytes -= len(item.data)
            batch.append(item)
            size += added
        return batch

    def _lowest_unsettled_locked(self) -> float:
        if self._inflight:
            return self._inflight[0].seq
        if self._queue:
            return self._queue[0].seq
        return float("inf")

    def _deliver(self, transport: HttpTransport, batch: list[_Item]) -> None:
        """Send ``batch`` until all its events are settled or the client stops."""
        parts: deque[list[_Item]] = deque([batch])
        attempt = 0
        while parts and not self._stop_event.is_set():
            part = parts[0]
            try:
                response = transport.post_batch(_batch_body(part), partial=self._partial)
            except TransportError as exc:
                outcome = _Outcome(retry=True, reason=str(exc))
            else:
                outcome = self._apply_response(part, response)
            if outcome.retry:
                attempt += 1
                delay = self._backoff_delay(attempt, outcome.retry_after)
                self._warner.warn(
                    "retry",
                    "mcplog: sending %d events failed (%s); retrying in %.2fs",
                    len(part),
                    outcome.reason,
                    delay,
                )
                self._stop_event.wait(delay)
                continue
            attempt = 0
            parts.popleft()
            parts.extendleft(reversed(outcome.resend))

    def _backoff_delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter, never sooner than Retry-After."""
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** min(attempt - 1, 32))
        return max(random.uniform(0, ceiling), retry_after or 0.0)

    def _apply_response(self, part: list[_Item], response: Response) -> _Outcome:
        status = response.status
        if status == 207:
            return self._apply_partial(part, response)
        if 200 <= status < 300:
            self._settle(part, [])
            return _Outcome()
        if _retryable(status):
            code = response.error_field("code") or "no error code"
            return _Outcome(retry=True, retry_after=response.retry_after, reason=f"HTTP {status} {code}")
        if status == 400 and self._partial and response.error_field("field") == "partial":
            logger.info("mcplog: the server has no partial batch mode; using all-or-nothing batches")
            self._partial = False
            return _Outcome(resend=(part,))
        if status == 422 and not self._partial and isinstance(response.body, dict):
            return self._apply_invalid_batch(part, response)
        if status == 413 and len(part) > 1:
            # The server's batch limit is lower than ours: halve and resend.
            half = len(part) // 2
            return _Outcome(resend=(part[:half], part[half:]))
        self._settle([], [(item, self._rejection(item, status, response.body)) for item in part])
        return _Outcome()

    def _apply_partial(self, part: list[_Item], response: Response) -> _Outcome:
        """A 207: one result per event, in order."""
        results = response.body.get("results") if isinstance(response.body, dict) else None
        if not isinstance(results, list) or len(results) != len(part):
            # Unreadable answer. Resending is safe: stored events come back as
            # duplicates thanks to their event_id.
            return _Outcome(retry=True, reason="malformed 207 answer")
        delivered, rejected = [], []
        for item, result in zip(part, results, strict=True):
            if isinstance(result, dict) and result.get("status") in ("stored", "duplicate"):
                delivered.append(item)
            else:
                entry = result if isinstance(result, dict) else {}
                rejected.append((item, self._rejection(item, entry.get("http_status"), entry)))
        self._settle(delivered, rejected)
        return _Outcome()

    def _apply_invalid_batch(self, part: list[_Item], response: Response) -> _Outcome:
        """All-or-nothing mode (older server): a 422 lists the bad events and
        stored nothing; reject those and send the others again."""
        errors = response.body.get("errors")
        if errors is None:  # the server nests the list inside the error object
            errors = response.error_field("errors")
        bad: dict[int, dict[str, Any]] = {}
        if isinstance(errors, list):
            for entry in errors:
                if isinstance(entry, dict) and isinstance(entry.get("index"), int):
                    bad[entry["index"]] = {"error": entry}
        if not bad:
            self._settle([], [(item, self._rejection(item, 422, response.body)) for item in part])
            return _Outcome()
        self._settle(
            [], [(part[i], self._rejection(part[i], 422, body)) for i, body in bad.items() if i < len(part)]
        )
        rest = [item for i, item in enumerate(part) if i not in bad]
        return _Outcome(resend=(rest,) if rest else ())

    @staticmethod
    def _rejection(item: _Item, http_status: Any, body: Any) -> Rejection:
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        return Rejection(
            event=json.loads(item.data),
            http_status=http_status if isinstance(http_status, int) else None,
            code=error.get("code"),
            message=error.get("message"),
            field=error.get("field"),
        )

    def _settle(self, delivered: list[_Item], rejected: list[tuple[_Item, Rejection]]) -> None:
        # Report first, so that when flush() returns, on_rejected has run for
        # every rejection it counts.
        for _, rejection in rejected:
            self._report_rejection(rejection)
        settled = {item.seq for item in delivered} | {item.seq for item, _ in rejected}
        with self._section():
            self._delivered += len(delivered)
            self._rejected += len(rejected)
            self._inflight = [item for item in self._inflight if item.seq not in settled]
            self._done_cv.notify_all()

    def _report_rejection(self, rejection: Rejection) -> None:
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

    # ---- stopping, exit and fork ------------------------------------------

    def _stop_worker(self) -> threading.Thread | None:
        with self._section():
            self._stopping = True
            self._work_cv.notify_all()
            self._done_cv.notify_all()
            worker = self._worker
        self._stop_event.set()  # interrupts a retry backoff
        return worker

    def _begin_exit(self) -> None:
        """Send what is queued now, without lingering, so that every client's
        worker delivers while _flush_all_at_exit waits for another client."""
        with self._section():
            self._exiting = True
            self._work_cv.notify()

    def _flush_at_exit(self, exit_started: float) -> None:
        """Wait until ``exit_flush_timeout`` seconds after ``exit_started``."""
        with self._section():
            # Not "closed": a close() from a signal handler could not wait (see
            # close), so what it left queued is delivered here.
            if self._stopping or self._lowest_unsettled_locked() == math.inf:
                return
        result = self.flush(max(0.0, exit_started + self._exit_flush_timeout - time.monotonic()))
        self._stop_worker()
        if result.pending:
            logger.warning(
                "mcplog: exiting with %d events not delivered to %s after waiting %.1fs "
                "(delivered=%d rejected=%d dropped=%d)",
                result.pending,
                self.url,
                self._exit_flush_timeout,
                result.delivered,
                result.rejected,
                result.dropped,
            )


def _require(condition: object, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        _require(
            isinstance(value, int) and not isinstance(value, bool) and value > 0,
            f"{name} must be a positive int, got {value!r}",
        )


def _check_seconds(**durations: float) -> None:
    for name, value in durations.items():
        _require(
            isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf,
            f"{name} must be a finite number of seconds >= 0, got {value!r}",
        )


def _check_backoff(**durations: float) -> None:
    # After _check_seconds: these are finite numbers already.
    for name, value in durations.items():
        _require(
            value >= MIN_BACKOFF_SECONDS,
            f"{name} must be at least {MIN_BACKOFF_SECONDS} seconds, got {value!r}",
        )


def _call_arguments(
    action: object, interaction_id: object, extra: tuple[Any, ...], fields: dict[str, Any]
) -> tuple[object, object]:
    """``emit``'s action and interaction_id, whether passed by position or by
    name; InvalidEvent for a call of any other shape."""
    if extra:
        # A positional dict is most likely the payload; which field it was
        # meant for is a guess, so it is refused with a hint rather than stored.
        hint = " (pass the payload by name, e.g. request_data={...})" if isinstance(extra[0], Mapping) else ""
        raise InvalidEvent(f"emit() takes 2 positional arguments but {2 + len(extra)} were given{hint}")
    return _by_position_or_name("action", action, fields), _by_position_or_name(
        "interaction_id", interaction_id, fields
    )


def _by_position_or_name(name: str, positional: object, fields: dict[str, Any]) -> object:
    named = fields.pop(name, _MISSING)
    if positional is _MISSING and named is _MISSING:
        raise InvalidEvent(f"emit() is missing {name}")
    if positional is not _MISSING and named is not _MISSING:
        raise InvalidEvent(f"emit() got {name} twice, by position and by name")
    return positional if named is _MISSING else named


# Every live client, for the exit flush and the fork handler. Weak, so a
# client that was never used (no worker thread holds it) can be collected.
_clients: weakref.WeakSet[Client] = weakref.WeakSet()
_clients_lock = threading.Lock()


def _register(client: Client) -> None:
    with _clients_lock:
        _clients.add(client)


def _unregister(client: Client) -> None:
    with _clients_lock:
        _clients.discard(client)


def _flush_all_at_exit() -> None:
    # One clock for all: each client waits until its own exit_flush_timeout
    # after exit began, so exit takes the largest of them, not their sum. The
    # workers deliver concurrently meanwhile (none lingers: _begin_exit).
    exit_started = time.monotonic()
    with _clients_lock:
        clients = list(_clients)
    _each_client(clients, Client._begin_exit)
    _each_client(clients, lambda client: client._flush_at_exit(exit_started))


def _each_client(clients: list[Client], action: Callable[[Client], object]) -> None:
    for client in clients:
        try:
            action(client)
        except Exception:
            logger.exception("mcplog: flushing at exit failed")


def _reset_all_in_child() -> None:
    global _clients_lock
    _clients_lock = threading.Lock()
    for client in list(_clients):
        client._reset_state()


# Registered after `logging` was imported, so (atexit being LIFO) this runs
# before logging shuts down and the pending-events warning is still printed.
atexit.register(_flush_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_all_in_child)
