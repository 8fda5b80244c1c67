"""A lock that a signal handler may re-enter without deadlocking or corrupting state.

A signal handler (or a finalizer, or a logging handler) may call ``emit`` on a
thread that is already inside a section of the queue. Waiting for the lock would
deadlock; touching the state could see it half-way through an update; waiting on
a condition would release the interrupted section's hold too. So a nested call
learns that it is nested, and may only hand an item off: the interrupted section
admits it when it leaves (or pauses to wait).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class ReentrantSections(Generic[T]):
    def __init__(self, admit: Callable[[T], None]) -> None:
        self._admit = admit  # called inside a section for each handed-off item
        self.lock = threading.RLock()  # re-entrant; taken only via section()
        self._holder: int | None = None  # ident of the thread inside a section, not waiting
        self._handoff: deque[T] = deque()  # left by nested calls for the holder to admit

    @contextlib.contextmanager
    def section(self) -> Iterator[bool]:
        """Hold the lock; yield True if this thread was already inside a section
        (re-entered, e.g. by a signal handler)."""
        with self.lock:
            if self._holder == threading.get_ident():
                yield True
                return
            # A handler running before the next line is not nested: nothing has
            # been changed yet, so it may admit its item itself.
            self._holder = threading.get_ident()
            try:
                yield False
            finally:
                self._leave_locked()

    def hand_off(self, item: T) -> None:
        """From a nested section: leave ``item`` for the interrupted one to admit."""
        self._handoff.append(item)

    def handed_off(self) -> int:
        # len(), not iteration: a nested call may append at any point.
        return len(self._handoff)

    def wait(self, cv: threading.Condition, timeout: float | None = None) -> None:
        """``cv.wait`` for an outermost section; callers loop on their condition,
        so returning early is fine. While waiting the lock is free and this
        thread is not "inside": a signal handler then takes the lock normally."""
        try:
            if not self._leave_locked():  # items just admitted may be what we wait for
                cv.wait(timeout)
        finally:
            self._holder = threading.get_ident()

    def is_holder(self) -> bool:
        return self._holder == threading.get_ident()

    def _leave_locked(self) -> bool:
        """End this thread's outermost section (or pause it, for a wait): admit
        what nested calls handed off, then clear ``_holder``. Returns whether
        anything was admitted."""
        holder = self._holder
        admitted = False
        try:
            while True:
                while self._handoff:
                    self._admit(self._handoff.popleft())
                    admitted = True
                self._holder = None
                # A handler that ran just before the line above handed off its
                # item too; one that runs after it admits its own.
                if not self._handoff:
                    return admitted
                self._holder = holder
        finally:
            self._holder = None
