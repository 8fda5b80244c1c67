"""Process exit and fork: every live client flushes at interpreter exit, and a
forked child starts each client afresh (the parent's sender thread does not
exist there, and its locks may have been held by threads that are gone)."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger("mcplog")


class Managed(Protocol):
    def _begin_exit(self) -> None: ...
    def _flush_at_exit(self, exit_started: float) -> None: ...
    def _reset_state(self) -> None: ...


# Every live client. Weak, so a client that was never used (no sender thread
# holds it) can be collected.
_clients: weakref.WeakSet[Managed] = weakref.WeakSet()
_clients_lock = threading.Lock()


def register(client: Managed) -> None:
    with _clients_lock:
        _clients.add(client)


def unregister(client: Managed) -> None:
    with _clients_lock:
        _clients.discard(client)


def _flush_all_at_exit() -> None:
    # One clock for all: each client waits until its own exit_flush_timeout
    # after exit began, so exit takes the largest of them, not their sum. The
    # senders deliver concurrently meanwhile (none lingers: _begin_exit).
    exit_started = time.monotonic()
    with _clients_lock:
        clients = list(_clients)
    _each_client(clients, lambda client: client._begin_exit())
    _each_client(clients, lambda client: client._flush_at_exit(exit_started))


def _each_client(clients: list[Managed], action: Callable[[Managed], object]) -> None:
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
