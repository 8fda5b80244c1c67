"""The bounded queue between ``emit`` (any thread) and the sender thread, and its counters.

Threading model. All state below is guarded by one lock: ``offer`` appends to
the queue; the sender moves a batch from its head to ``inflight``, sends it
without holding the lock, and ``settle`` removes events from ``inflight`` as the
server decides on them (delivered or rejected). Events are therefore settled in
emit order, batch by batch, which lets ``wait_settled`` wait for "everything
emitted before the call" by comparing sequence numbers. Two conditions share
the lock: ``_work_cv`` wakes the sender, ``_done_cv`` wakes flush callers.

Re-entry. The lock is taken only through ``section`` (see ``_reentry``): a
nested ``offer`` (from a signal handler that interrupted a section) hands its
event off, for the interrupted section to admit when it leaves, and a nested
flush or close returns without waiting.

Bounded in events AND bytes: either alone lets memory grow without limit. A
full queue refuses the new event (counted as dropped) rather than evicting an
older one, which a reader is more likely waiting for.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ._options import Limits
from ._reentry import ReentrantSections
from ._warn import RateLimitedWarner


class FlushResult(NamedTuple):
    """Event counters of one Client since it was created (or since fork, in a child)."""

    delivered: int  # stored by the server (including duplicates of a retried send)
    rejected: int  # refused by the server for good; never retried
    dropped: int  # never sent: queue full, client closed, or an invalid emit() call
    pending: int  # queued or being sent right now


@dataclass(frozen=True)
class Item:
    seq: int  # emit order, 1-based; used by flush()
    data: bytes  # the serialized event, resent byte-identical on retries


class EventQueue:
    def __init__(self, limits: Limits, warner: RateLimitedWarner, *, closed: bool = False) -> None:
        self._limits = limits
        self._warner = warner
        # Called inside a section when an event is admitted: starts the sender.
        self.on_admit: Callable[[], None] = lambda: None
        self._sections: ReentrantSections[bytes | None] = ReentrantSections(self._admit_handed_off)
        self._work_cv = threading.Condition(self._sections.lock)
        self._done_cv = threading.Condition(self._sections.lock)
        self._items: deque[Item] = deque()
        self._queued_bytes = 0
        self._inflight: list[Item] = []
        self._last_seq = 0
        self._delivered = 0
        self._rejected = 0
        self._dropped = 0
        self._flush_waiters = 0
        self._sender_idle = False  # the sender waits for the first event of a batch
        self._lingering = False  # the sender waits for a batch to fill up
        self.closed = closed  # later offers are dropped; survives a fork
        self.stopping = False
        self._exiting = False  # the exit flush has begun: send without lingering

    def section(self) -> contextlib.AbstractContextManager[bool]:
        """Hold the queue's lock; yields whether this thread was inside already."""
        return self._sections.section()

    # ---- the emit side -----------------------------------------------------

    def offer(self, data: bytes | None) -> bool:
        """Admit one serialized event; None counts an invalid emit() as dropped."""
        with self.section() as nested:
            if nested:
                # This thread was interrupted inside a section: that section
                # admits the event when it leaves (and counts and warns if the
                # queue is full by then).
                self._sections.hand_off(data)
                return data is not None
            reason = self._admit_locked(data)
        self._warn_dropped(reason)  # outside the lock: logging may be slow
        return reason is None

    def _admit_handed_off(self, data: bytes | None) -> None:
        self._warn_dropped(self._admit_locked(data))

    def _admit_locked(self, data: bytes | None) -> str | None:
        """Queue ``data``, or count it as dropped and return why."""
        if data is None:
            reason = "invalid"
        elif self.closed:
            reason = "closed"
        elif (
            len(self._items) >= self._limits.queue_max_events
            or self._queued_bytes + len(data) > self._limits.queue_max_bytes
        ):
            reason = "full"
        else:
            self._last_seq += 1
            self._items.append(Item(self._last_seq, data))
            self._queued_bytes += len(data)
            self.on_admit()
            if self._sender_idle or (self._lingering and self._batch_ready_locked()):
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
                self._limits.queue_max_events,
                self._limits.queue_max_bytes,
            )

    # ---- counters and flush ------------------------------------------------

    def result(self) -> FlushResult:
        with self.section():
            return self.result_locked()

    def result_locked(self) -> FlushResult:
        # A handed-off event is pending until it is admitted (or dropped).
        pending = len(self._items) + len(self._inflight) + self._sections.handed_off()
        return FlushResult(self._delivered, self._rejected, self._dropped, pending)

    def wait_settled(self, deadline: float) -> FlushResult:
        """Wait until every event offered so far is settled, the monotonic
        ``deadline`` passes or the queue stops; return the counters."""
        with self.section() as nested:
            if nested:
                # E.g. from a signal handler: this thread holds the lock in the
                # section it interrupted, so nothing could settle.
                return self.result_locked()
            target = self._last_seq
            self._flush_waiters += 1
            self._work_cv.notify()  # cut a linger short
            try:
                while self.lowest_unsettled_locked() <= target and not self.stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._sections.wait(self._done_cv, remaining)
            finally:
                self._flush_waiters -= 1
            return self.result_locked()

    def lowest_unsettled_locked(self) -> float:
        if self._inflight:
            return self._inflight[0].seq
        if self._items:
            return self._items[0].seq
        return float("inf")

    # ---- the sender side ---------------------------------------------------

    def take_batch(self) -> list[Item] | None:
        """Block until a batch is ready; None when the queue is stopping."""
        with self.section():
            if self.stopping:
                return None
            if self._inflight:  # left over by an unexpected error: resend it
                return list(self._inflight)
            self._sender_idle = True
            try:
                while not self._items and not self.stopping:
                    self._sections.wait(self._work_cv)
            finally:
                self._sender_idle = False
            if self.stopping:
                return None
            self._linger_locked()
            self._inflight = self._pop_batch_locked()
            return list(self._inflight)

    def _batch_ready_locked(self) -> bool:
        return (
            self.stopping
            or self._exiting
            or self._flush_waiters > 0
            or len(self._items) >= self._limits.batch_max_events
            or self._queued_bytes >= self._limits.batch_max_bytes
        )

    def _linger_locked(self) -> None:
        """Wait up to ``linger`` seconds for more events, so a burst goes out
        as one request instead of many."""
        deadline = time.monotonic() + self._limits.linger
        self._lingering = True
        try:
            while not self._batch_ready_locked():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._sections.wait(self._work_cv, remaining)
        finally:
            self._lingering = False

    def _pop_batch_locked(self) -> list[Item]:
        batch: list[Item] = []
        size = 2  # the enclosing brackets
        while self._items and len(batch) < self._limits.batch_max_events:
            item = self._items[0]
            added = len(item.data) + (1 if batch else 0)  # comma separator
            if batch and size + added > self._limits.batch_max_bytes:
                break  # an oversized single event still goes, alone
            self._items.popleft()
            self._queued_bytes -= len(item.data)
            batch.append(item)
            size += added
        return batch

    def settle(self, delivered: list[Item], rejected: list[Item]) -> None:
        """Count events the server decided on and drop them from ``inflight``."""
        settled = {item.seq for item in delivered} | {item.seq for item in rejected}
        with self.section():
            self._delivered += len(delivered)
            self._rejected += len(rejected)
            self._inflight = [item for item in self._inflight if item.seq not in settled]
            self._done_cv.notify_all()

    # ---- stopping ----------------------------------------------------------

    def stop(self) -> None:
        """Wake the sender and every flush waiter, for good."""
        with self.section():
            self.stopping = True
            self._work_cv.notify_all()
            self._done_cv.notify_all()

    def begin_exit(self) -> None:
        """Send what is queued now, without lingering."""
        with self.section():
            self._exiting = True
            self._work_cv.notify()
